//! `qwenmk info` on a machine without a GPU: it says so plainly, names both PTX modules (sm_90
//! and sm_80), reports the decode step's registers for each (through ptxas where there is one)
//! and its shared memory, and `--ptx` writes the embedded modules.

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
fn info_names_the_gpu_or_its_absence_and_the_ptx_modules() {
    let out = qwenmk(&["info"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("PTX ISA 8.0 for sm_90"), "{text}");
    assert!(text.contains("PTX ISA 7.4 for sm_80"), "{text}");
    assert!(text.contains("qwenmk_decode_step"), "{text}");
    assert!(text.contains("KiB shared memory"), "{text}");
    if std::env::var_os("PTXAS").is_some() {
        for arch in ["sm_90", "sm_80"] {
            let line = text
                .lines()
                .find(|l| {
                    l.trim_start().starts_with(&format!("{arch}:")) && l.contains("registers")
                })
                .unwrap_or_else(|| panic!("no register line for {arch}: {text}"));
            assert!(line.contains("0 bytes stack, 0 bytes spilled"), "{line}");
        }
    }
    if !has_gpu() {
        assert!(
            text.contains("no CUDA driver was found") || text.contains("no usable GPU"),
            "{text}"
        );
    }
}

#[test]
fn info_json_reports_both_modules_and_the_decode_step() {
    let out = qwenmk(&["info", "--json"]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let modules = report["ptx"]["modules"]
        .as_array()
        .expect("a list of modules");
    let archs: Vec<&str> = modules
        .iter()
        .map(|m| m["arch"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["sm_90", "sm_80"]);
    assert_eq!(modules[0]["isa"], "8.0");
    assert_eq!(modules[0]["min_compute_capability"], "9.0");
    assert_eq!(modules[1]["target"], "sm_80");
    assert_eq!(modules[1]["min_cuda"], "11.4");
    if !has_gpu() {
        assert!(report["ptx"]["loads"].is_null(), "{report}");
    }
    let step = &report["decode_step"];
    assert!(step["shared_bytes_per_block"].as_u64().unwrap() > 0);
    assert_eq!(step["threads_per_block"], 256);
    if std::env::var_os("PTXAS").is_some() || has_gpu() {
        for arch in ["sm_90", "sm_80"] {
            let facts = &step["by_arch"][arch];
            assert!(facts["registers"].as_u64().unwrap() > 0, "{arch}: {step}");
            assert_eq!(facts["stack_frame_bytes"], 0, "{arch}: {step}");
        }
    }
}

#[test]
fn info_ptx_writes_every_module_each_from_its_version_line() {
    let out = qwenmk(&["info", "--ptx"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(".version"),
        "{}",
        &text[..80.min(text.len())]
    );
    // Split where each `.version` line starts: one piece per module, in order.
    let mut pieces = Vec::new();
    let mut start = 0;
    for (at, _) in text.match_indices(".version") {
        if at > 0 && text[..at].ends_with('\n') {
            pieces.push(&text[start..at]);
            start = at;
        }
    }
    pieces.push(&text[start..]);
    assert_eq!(pieces.len(), qwenmk::ptx::MODULES.len());
    for (piece, module) in pieces.iter().zip(qwenmk::ptx::MODULES) {
        assert_eq!(
            piece.trim_end(),
            module.from_version_line().trim_end(),
            "{}",
            module.arch
        );
        assert!(piece.contains(&format!(".target {}", module.arch)));
    }
}

#[test]
fn info_ptx_arch_writes_one_module_as_embedded() {
    for module in qwenmk::ptx::MODULES {
        let out = qwenmk(&["info", "--ptx", "--arch", module.arch]);
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), module.ptx);
    }
    let out = qwenmk(&["info", "--ptx", "--arch", "sm_70"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no PTX module for `sm_70`") && stderr.contains("sm_90, sm_80"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
