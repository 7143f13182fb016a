//! Every embedded PTX module (sm_90 and sm_80) names its own target, holds every kernel,
//! assembles for its architecture with ptxas, and no kernel spills registers or keeps a stack
//! frame.
//!
//! Under CI (`CI=true`) a missing ptxas fails the test; elsewhere the test says it was skipped.

use qwenmk::ptx::{MODULES, PtxModule};
use qwenmk::ptxas::{assemble, find_ptxas};

#[test]
fn both_architectures_are_embedded() {
    let archs: Vec<&str> = MODULES.iter().map(|m| m.arch).collect();
    assert_eq!(archs, ["sm_90", "sm_80"]);
}

#[test]
fn each_module_names_its_target_and_holds_every_kernel() {
    for module in MODULES {
        let arch = module.arch;
        assert_eq!(module.target(), Some(arch));
        assert!(module.isa_version().is_some(), "{arch}: no .version line");
        for name in qwenmk_kernels::kernel_names::ALL {
            assert!(
                module.ptx.contains(&format!(".entry {name}(")),
                "kernel {name} is missing from the {arch} PTX"
            );
        }
    }
}

#[test]
fn every_module_assembles_for_its_architecture_without_spills() {
    let Some(ptxas) = find_ptxas() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "ptxas was not found under CI: .ci/run must install nvidia-cuda-nvcc and set PTXAS"
            );
        }
        eprintln!("skipped: ptxas not found (set PTXAS or install PyPI's nvidia-cuda-nvcc)");
        return;
    };
    for module in MODULES {
        check_module(&ptxas, module);
    }
}

fn check_module(ptxas: &std::path::Path, module: &PtxModule) {
    let arch = module.arch;
    let reports = assemble(ptxas, module.ptx, arch).unwrap_or_else(|e| panic!("{e:#}"));
    for name in qwenmk_kernels::kernel_names::ALL {
        let report = reports
            .iter()
            .find(|r| r.name == *name)
            .unwrap_or_else(|| panic!("ptxas reported nothing for kernel {name} ({arch})"));
        eprintln!("{arch}: {report:?}");
        assert!(
            report.is_clean(),
            "kernel {name} spills or uses a stack frame on {arch}: {report:?}"
        );
        assert!(
            report.registers > 0,
            "kernel {name} ({arch}): no register count parsed"
        );
    }
}
