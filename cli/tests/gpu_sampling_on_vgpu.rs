//! The gpu engine on the virtual GPU (the embedded PTX, interpreted behind a stand-in
//! libcuda.so) draws the same seeded tokens as the cpu engine: Gumbel-max over the whole
//! vocabulary with a repeat penalty, and the top-k / top-p / min-p path whose per-block
//! candidate lists the last block to finish merges — also under weak memory visibility, which
//! checks that merge's fences.

mod common;

use common::{Sandbox, assert_success, fixture, ids, split_json};

fn draws(
    sandbox: &Sandbox,
    device: &str,
    sampling: &[&str],
    settings: &[(&str, &str)],
) -> Vec<u32> {
    let model = fixture("tiny-gqa2");
    let mut args = vec![
        "generate",
        "-m",
        model.to_str().unwrap(),
        "--device",
        device,
        "-c",
        "64",
        "--kv-cache",
        "f32",
        "--json",
        "--ignore-eos",
        "-n",
        "4",
        "--seed",
        "11",
    ];
    args.extend_from_slice(sampling);
    args.push("Hi");
    let output = if device == "gpu" {
        sandbox.qwenmk_vgpu(&args, settings)
    } else {
        sandbox.qwenmk(&args)
    };
    assert_success(&output);
    let (_, json) = split_json(&output);
    assert_eq!(json["stats"]["engine"], device);
    ids(&json["tokens"])
}

#[test]
fn seeded_sampling_on_the_gpu_engine_equals_the_cpu_engine() {
    let sandbox = Sandbox::new();
    for sampling in [
        &["--temp", "0.9", "--repeat-penalty", "1.3"][..],
        &[
            "--temp", "0.7", "--top-k", "20", "--top-p", "0.95", "--min-p", "0.05",
        ][..],
    ] {
        let cpu = draws(&sandbox, "cpu", sampling, &[]);
        assert_eq!(draws(&sandbox, "gpu", sampling, &[]), cpu, "{sampling:?}");
    }
    let top_k = ["--temp", "0.7", "--top-k", "20"];
    let cpu = draws(&sandbox, "cpu", &top_k, &[]);
    let weak = draws(&sandbox, "gpu", &top_k, &[("QWENMK_VGPU_WEAK", "1")]);
    assert_eq!(weak, cpu, "under weak visibility");
}
