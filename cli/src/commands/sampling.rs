//! The sampling settings of a run: the flags over the model's generation_config.json.

use anyhow::{Result, bail};

use crate::cli::SamplingArgs;
use crate::engine::Sampling;
use crate::engine::sampling::MAX_TOP_K;
use crate::prompt::GenerationDefaults;

/// `args` over `defaults`, for a KV cache of `context` positions. Says on `notice` what the
/// fused sampler changes: a checkpoint's top-k above 64, and top-p/min-p without top-k.
pub fn resolve(
    args: &SamplingArgs,
    defaults: &GenerationDefaults,
    context: usize,
    notice: &mut dyn FnMut(&str),
) -> Result<Sampling> {
    let sampling_by_default = defaults.samples();
    let mut top_k = match args.top_k {
        Some(k) => k,
        None if sampling_by_default => defaults.top_k(),
        None => 0,
    };
    if args.top_k.is_none() && top_k > MAX_TOP_K {
        notice(&format!(
            "generation_config.json asks for top-k {top_k}; the fused sampler keeps at most \
             {MAX_TOP_K} candidates, so top-k is {MAX_TOP_K}"
        ));
        top_k = MAX_TOP_K;
    }
    let repeat_last_n = match args.repeat_last_n {
        -1 => context,
        n if n < 0 => bail!("--repeat-last-n must be -1 (the whole context), 0 or more, not {n}"),
        n => (n as usize).min(context),
    };
    let sampling = Sampling {
        temperature: args.temp.unwrap_or_else(|| defaults.temperature()),
        top_k,
        top_p: args.top_p.unwrap_or_else(|| {
            if sampling_by_default {
                defaults.top_p()
            } else {
                1.0
            }
        }),
        min_p: args.min_p.unwrap_or_else(|| {
            if sampling_by_default {
                defaults.min_p()
            } else {
                0.0
            }
        }),
        repeat_penalty: args
            .repeat_penalty
            .unwrap_or_else(|| defaults.repetition_penalty()),
        repeat_last_n,
        seed: args.seed.unwrap_or_else(random_seed),
    };
    sampling.validate()?;
    if !sampling.is_greedy() && sampling.top_k == 0 && sampling.truncates() {
        notice(&format!(
            "top-p and min-p choose among the {MAX_TOP_K} most likely tokens (the fused \
             sampler's candidates)"
        ));
    }
    Ok(sampling)
}

/// A seed for a run that was given none: the clock and the process id, mixed.
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = nanos ^ (u64::from(std::process::id()) << 32);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    // Seeds that fit in 32 bits are easier to read back and retype.
    (z ^ (z >> 31)) & 0xFFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> SamplingArgs {
        SamplingArgs {
            repeat_last_n: 64,
            seed: Some(1),
            ..SamplingArgs::default()
        }
    }

    #[test]
    fn defaults_come_from_the_generation_config() {
        let mut quiet = |_: &str| {};
        let qwen = GenerationDefaults {
            do_sample: Some(true),
            temperature: Some(0.6),
            top_k: Some(20),
            top_p: Some(0.95),
            ..Default::default()
        };
        let s = resolve(&args(), &qwen, 100, &mut quiet).unwrap();
        assert_eq!(
            (s.temperature, s.top_k, s.top_p, s.min_p),
            (0.6, 20, 0.95, 0.0)
        );
        let greedy = resolve(&args(), &GenerationDefaults::default(), 100, &mut quiet).unwrap();
        assert!(greedy.is_greedy());
        // `do_sample: false` is greedy even where the file also names a temperature.
        let no_sampling = GenerationDefaults {
            do_sample: Some(false),
            ..qwen.clone()
        };
        assert!(
            resolve(&args(), &no_sampling, 100, &mut quiet)
                .unwrap()
                .is_greedy()
        );
        let mut flags = args();
        flags.temp = Some(0.0);
        assert!(resolve(&flags, &qwen, 100, &mut quiet).unwrap().is_greedy());
        flags.repeat_last_n = -1;
        flags.repeat_penalty = Some(1.1);
        assert_eq!(
            resolve(&flags, &qwen, 100, &mut quiet)
                .unwrap()
                .repeat_last_n,
            100
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let mut quiet = |_: &str| {};
        let d = GenerationDefaults::default();
        for (edit, flag) in [
            (
                SamplingArgs {
                    temp: Some(-1.0),
                    ..args()
                },
                "--temp",
            ),
            (
                SamplingArgs {
                    top_k: Some(100),
                    ..args()
                },
                "--top-k",
            ),
            (
                SamplingArgs {
                    top_p: Some(0.0),
                    ..args()
                },
                "--top-p",
            ),
            (
                SamplingArgs {
                    min_p: Some(2.0),
                    ..args()
                },
                "--min-p",
            ),
            (
                SamplingArgs {
                    repeat_penalty: Some(0.0),
                    ..args()
                },
                "--repeat-penalty",
            ),
            (
                SamplingArgs {
                    repeat_last_n: -2,
                    ..args()
                },
                "--repeat-last-n",
            ),
        ] {
            let e = resolve(&edit, &d, 100, &mut quiet).unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
    }
}
