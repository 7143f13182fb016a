//! `cargo xtask ptx`: the embedded PTX through ptxas, kernel by kernel.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use qwenmk::ptx::KERNELS_PTX;
use qwenmk::ptxas::{assemble, find_ptxas};

pub const SUMMARY: &str =
    "assemble the embedded PTX with ptxas: registers, stack, spills per kernel";

pub fn run(args: &[String]) -> Result<()> {
    let mut out: Option<PathBuf> = None;
    let mut arch = qwenmk_kernels_target();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--out" => out = Some(rest.next().context("--out needs a file")?.into()),
            "--arch" => arch = rest.next().context("--arch needs e.g. sm_90")?.clone(),
            "-h" | "--help" => {
                println!("usage: cargo xtask ptx [--out FILE] [--arch sm_90]\n\n{SUMMARY}.");
                println!("--out FILE  also write the PTX to FILE");
                return Ok(());
            }
            other => bail!("unknown option `{other}` (see --help)"),
        }
    }
    if let Some(path) = &out {
        std::fs::write(path, KERNELS_PTX).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {} ({} bytes)", path.display(), KERNELS_PTX.len());
    }
    let ptxas = find_ptxas().context(
        "ptxas not found: set PTXAS, or `pip install nvidia-cuda-nvcc` and point PTXAS at its \
         nvidia/cu13/bin/ptxas",
    )?;
    let reports = assemble(&ptxas, KERNELS_PTX, &arch)?;
    println!(
        "{:<24} {:>9} {:>7} {:>8} {:>8} {:>6}",
        "kernel", "registers", "stack", "spill st", "spill ld", "smem"
    );
    for r in &reports {
        println!(
            "{:<24} {:>9} {:>7} {:>8} {:>8} {:>6}",
            r.name,
            r.registers,
            r.stack_frame_bytes,
            r.spill_store_bytes,
            r.spill_load_bytes,
            r.static_shared_bytes
        );
    }
    if let Some(bad) = reports.iter().find(|r| !r.is_clean()) {
        bail!("kernel {} spills or uses a stack frame", bad.name);
    }
    Ok(())
}

fn qwenmk_kernels_target() -> String {
    qwenmk::ptx::ptx_version_and_target()
        .1
        .unwrap_or("sm_90")
        .to_string()
}
