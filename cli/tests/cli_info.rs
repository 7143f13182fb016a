//! `qwenmk info` on a machine without a GPU: it says so plainly, names the PTX target, reports
//! the decode step's registers (through ptxas where there is one) and shared memory, and
//! `--ptx` writes the embedded module.

use std::process::Command;

fn qwenmk(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qwenmk"))
        .args(args)
        .output()
        .expect("qwenmk runs")
}

fn has_gpu() -> bool {
    qwenmk::engine::gpu::probe(0).is_ok()
}

#[test]
fn info_names_the_gpu_or_its_absence_and_the_ptx_target() {
    let out = qwenmk(&["info"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("for sm_90"), "{text}");
    assert!(text.contains("qwenmk_decode_step"), "{text}");
    assert!(text.contains("KiB shared memory"), "{text}");
    if !has_gpu() {
        assert!(
            text.contains("no CUDA driver was found") || text.contains("no usable GPU"),
            "{text}"
        );
    }
}

#[test]
fn info_json_reports_the_decode_step() {
    let out = qwenmk(&["info", "--json"]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["ptx"]["target"], "sm_90");
    let step = &report["decode_step"];
    assert!(step["shared_bytes_per_block"].as_u64().unwrap() > 0);
    assert_eq!(step["threads_per_block"], 256);
    if std::env::var_os("PTXAS").is_some() || has_gpu() {
        assert!(step["registers"].as_u64().unwrap() > 0, "{step}");
        assert_eq!(step["stack_frame_bytes"], 0, "{step}");
    }
}

#[test]
fn info_ptx_writes_the_embedded_module() {
    let out = qwenmk(&["info", "--ptx"]);
    assert!(out.status.success());
    let ptx = String::from_utf8(out.stdout).unwrap();
    assert_eq!(ptx, qwenmk::ptx::KERNELS_PTX);
    assert!(ptx.contains(".target sm_90"));
}
