//! How much GPU memory a run needs, and the longest KV cache that fits.

use anyhow::{Result, bail};
use qwenmk_weights::ModelConfig;

use crate::engine::plan::StepPlan;

/// Memory left free for the driver, the module and other allocations.
pub const HEADROOM_BYTES: u64 = 512 << 20;

/// Bytes on the GPU for the weights and the kernel's buffers under `plan`.
pub fn bytes_needed(payload_bytes: u64, plan: &StepPlan) -> u64 {
    let layer_table =
        plan.dims.layers as u64 * std::mem::size_of::<qwenmk_kernels::step::LayerPointers>() as u64;
    payload_bytes + plan.buffers().total_bytes() + layer_table + 64
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// The KV cache length to allocate: `requested` if it fits in `free_bytes`, else an error that
/// says how much is needed; with no request, the model's maximum or, when that does not fit,
/// the longest cache that does (with a notice). `plan_for(n)` builds the plan for `n`
/// positions.
pub fn choose_max_context(
    requested: Option<usize>,
    config: &ModelConfig,
    payload_bytes: u64,
    free_bytes: u64,
    plan_for: impl Fn(usize) -> Result<StepPlan>,
) -> Result<(usize, Option<String>)> {
    let budget = free_bytes.saturating_sub(HEADROOM_BYTES);
    let need = |n: usize| -> Result<u64> { Ok(bytes_needed(payload_bytes, &plan_for(n)?)) };
    let model_max = config.max_position_embeddings;
    if let Some(n) = requested {
        let bytes = need(n)?;
        if bytes > budget {
            let per_position = need(n.max(2))?.saturating_sub(need(n.max(2) - 1)?);
            bail!(
                "not enough GPU memory: the weights and a {n}-position KV cache need {:.2} GiB, \
                 and {:.2} GiB is free (keeping {} MiB spare); lower --max-context (each \
                 position costs {} KiB)",
                gib(bytes),
                gib(free_bytes),
                HEADROOM_BYTES >> 20,
                per_position.div_ceil(1024)
            );
        }
        return Ok((n, None));
    }
    if need(model_max)? <= budget {
        return Ok((model_max, None));
    }
    if need(1)? > budget {
        bail!(
            "not enough GPU memory: the weights alone need {:.2} GiB and {:.2} GiB is free",
            gib(need(1)?),
            gib(free_bytes)
        );
    }
    // The need grows with the length: the longest that fits, by bisection.
    let (mut fits, mut too_long) = (1usize, model_max);
    while too_long - fits > 1 {
        let mid = fits + (too_long - fits) / 2;
        if need(mid)? <= budget {
            fits = mid;
        } else {
            too_long = mid;
        }
    }
    let notice = format!(
        "the KV cache holds {fits} positions, what fits in the GPU's {:.1} GiB of free memory \
         (the model allows {model_max})",
        gib(free_bytes)
    );
    Ok((fits, Some(notice)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gpu::engine::{H100_SHARED_OPTIN_BYTES, launch_shape};
    use crate::engine::plan::model_dims;
    use qwenmk_weights::synthetic::tiny_config;

    fn plan_for(config: &ModelConfig) -> impl Fn(usize) -> Result<StepPlan> + '_ {
        move |n| {
            StepPlan::new(
                config,
                n,
                132,
                256,
                launch_shape(&model_dims(config, 1), H100_SHARED_OPTIN_BYTES),
                qwenmk_kernels::step::KvDtype::Bf16,
            )
        }
    }

    #[test]
    fn the_model_maximum_when_it_fits() {
        let c = tiny_config(true);
        let (n, notice) = choose_max_context(None, &c, 1 << 20, 8 << 30, plan_for(&c)).unwrap();
        assert_eq!(n, c.max_position_embeddings);
        assert!(notice.is_none());
    }

    #[test]
    fn the_longest_cache_that_fits_with_a_notice() {
        let c = tiny_config(true);
        let plan = plan_for(&c);
        let payload = 1 << 20;
        let free = HEADROOM_BYTES + bytes_needed(payload, &plan(100).unwrap());
        let (n, notice) = choose_max_context(None, &c, payload, free, &plan).unwrap();
        assert!(bytes_needed(payload, &plan(n).unwrap()) + HEADROOM_BYTES <= free);
        assert!(bytes_needed(payload, &plan(n + 1).unwrap()) + HEADROOM_BYTES > free);
        assert!((100..c.max_position_embeddings).contains(&n), "{n}");
        assert!(notice.unwrap().contains(&format!("holds {n} positions")));
    }

    /// Qwen3-0.6B's whole 40,960-position cache: 112 KiB a position in BF16, 224 KiB in f32.
    #[test]
    fn a_position_costs_what_its_element_type_says() {
        use qwenmk_kernels::step::KvDtype;
        let c =
            ModelConfig::from_json_str(include_str!("../../../../fixtures/qwen3-0.6b/config.json"))
                .unwrap();
        for (kv, kib) in [(KvDtype::Bf16, 112), (KvDtype::F32, 224)] {
            let shape = launch_shape(&model_dims(&c, 1), H100_SHARED_OPTIN_BYTES);
            let plan = |n| StepPlan::new(&c, n, 132, 256, shape, kv).unwrap();
            let per_position = bytes_needed(0, &plan(1001)) - bytes_needed(0, &plan(1000));
            // The RoPE table adds `head_dim` f32s per position beside the cache.
            assert_eq!(per_position, kib * 1024 + 128 * 4, "{kv:?}");
        }
    }

    #[test]
    fn a_request_that_does_not_fit_says_how_much_is_needed() {
        let c = tiny_config(true);
        let e = choose_max_context(Some(256), &c, 1 << 30, 1 << 30, plan_for(&c)).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("not enough GPU memory") && text.contains("lower --max-context"),
            "{text}"
        );
        let e = choose_max_context(None, &c, 4 << 30, 1 << 30, plan_for(&c)).unwrap_err();
        assert!(e.to_string().contains("weights alone"), "{e}");
    }
}
