//! `cargo xtask ptx`: every embedded PTX module through ptxas, kernel by kernel.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::in_flight;
use qwenmk::ptx::{MODULES, PtxModule, arch_names, module_named};
use qwenmk::ptxas::{assemble, find_ptxas};

pub const SUMMARY: &str =
    "assemble the embedded PTX modules (sm_90, sm_80) with ptxas: registers, stack, spills";

pub fn run(args: &[String]) -> Result<()> {
    let mut out: Option<PathBuf> = None;
    let mut arch: Option<String> = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--out" => out = Some(rest.next().context("--out needs a file")?.into()),
            "--arch" => arch = Some(rest.next().context("--arch needs e.g. sm_80")?.clone()),
            "-h" | "--help" => {
                println!("usage: cargo xtask ptx [--arch sm_90|sm_80] [--out FILE]\n\n{SUMMARY}.");
                println!("--arch ARCH  only the module for ARCH (default: every module)");
                println!("--out FILE   also write that module's PTX to FILE (needs --arch)");
                return Ok(());
            }
            other => bail!("unknown option `{other}` (see --help)"),
        }
    }
    let modules: Vec<&PtxModule> = match &arch {
        Some(name) => vec![module_named(name).with_context(|| {
            format!(
                "no PTX module for `{name}` is embedded; the modules are {}",
                arch_names()
            )
        })?],
        None => MODULES.iter().collect(),
    };
    if let Some(path) = &out {
        let [module] = modules[..] else {
            bail!(
                "--out writes one module: name it with --arch ({})",
                arch_names()
            );
        };
        std::fs::write(path, module.ptx).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "wrote the {} PTX to {} ({} bytes)",
            module.arch,
            path.display(),
            module.ptx.len()
        );
    }
    let ptxas = find_ptxas().context(
        "ptxas not found: set PTXAS, or `pip install nvidia-cuda-nvcc` and point PTXAS at its \
         nvidia/cu13/bin/ptxas",
    )?;
    println!(
        "{:<6} {:<24} {:>9} {:>7} {:>8} {:>8} {:>6}",
        "arch", "kernel", "registers", "stack", "spill st", "spill ld", "smem"
    );
    let mut unclean = Vec::new();
    let mut step_registers = None;
    for module in modules {
        let reports = assemble(&ptxas, module.ptx, module.arch)?;
        if let Some(step) = reports.iter().find(|r| r.name == "qwenmk_decode_step") {
            step_registers = Some(step_registers.unwrap_or(0).max(step.registers));
        }
        for r in &reports {
            println!(
                "{:<6} {:<24} {:>9} {:>7} {:>8} {:>8} {:>6}",
                module.arch,
                r.name,
                r.registers,
                r.stack_frame_bytes,
                r.spill_store_bytes,
                r.spill_load_bytes,
                r.static_shared_bytes
            );
        }
        unclean.extend(
            reports
                .iter()
                .filter(|r| !r.is_clean())
                .map(|r| format!("{} ({})", r.name, module.arch)),
        );
    }
    if let Some(registers) = step_registers {
        print!("{}", in_flight::table(&in_flight::qwen3_dims(), registers));
    }
    if !unclean.is_empty() {
        bail!(
            "these kernels spill or use a stack frame: {}",
            unclean.join(", ")
        );
    }
    Ok(())
}
