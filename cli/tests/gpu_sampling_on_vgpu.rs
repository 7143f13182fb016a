//! The gpu engine under the virtual GPU (the embedded PTX, interpreted behind a stand-in
//! libcuda.so) draws the same seeded tokens as the cpu engine.
//!
//! It uses `cargo xtask vgpu`'s mechanism: the release `qwenmk-vgpu-driver` copied as
//! `libcuda.so` into a directory put first on `LD_LIBRARY_PATH`. Building the release driver
//! takes minutes on a small machine, so the test is opt-in:
//! `cargo test -p qwenmk --test gpu_sampling_on_vgpu -- --ignored`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Sandbox, assert_success, fixture, ids, split_json};

/// Builds the release driver and returns the directory that holds it as `libcuda.so`.
fn vgpu_library_dir(scratch: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--release", "--quiet", "-p", "qwenmk-vgpu-driver"])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building the virtual GPU driver failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let lib = scratch.join("vgpu-lib");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::copy(
        target.join("release").join("libqwenmk_vgpu_driver.so"),
        lib.join("libcuda.so"),
    )
    .expect("copy the driver");
    lib
}

#[test]
#[ignore = "builds the release virtual GPU driver (minutes); run with --ignored"]
fn seeded_sampling_on_the_gpu_engine_equals_the_cpu_engine() {
    let sandbox = Sandbox::new();
    let lib = vgpu_library_dir(sandbox.hf_home());
    let model = fixture("tiny-gqa2");
    let args = |device: &'static str| {
        vec![
            "generate".to_owned(),
            "-m".into(),
            model.to_str().unwrap().into(),
            "--device".into(),
            device.into(),
            "-c".into(),
            "64".into(),
            "--json".into(),
            "--ignore-eos".into(),
            "-n".into(),
            "3".into(),
            "--seed".into(),
            "11".into(),
            "--temp".into(),
            "0.9".into(),
            "--repeat-penalty".into(),
            "1.3".into(),
            "Hi".into(),
        ]
    };
    let cpu = sandbox.qwenmk(&args("cpu").iter().map(String::as_str).collect::<Vec<_>>());
    assert_success(&cpu);
    let gpu = Command::new(env!("CARGO_BIN_EXE_qwenmk"))
        .env("HF_HOME", sandbox.hf_home())
        .env("HF_HUB_OFFLINE", "1")
        .env("LD_LIBRARY_PATH", &lib)
        .args(args("gpu"))
        .output()
        .expect("run qwenmk on the virtual GPU");
    assert_success(&gpu);
    let (_, cpu_json) = split_json(&cpu);
    let (_, gpu_json) = split_json(&gpu);
    assert_eq!(gpu_json["stats"]["engine"], "gpu");
    assert_eq!(ids(&gpu_json["tokens"]), ids(&cpu_json["tokens"]));
}
