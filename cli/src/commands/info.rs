//! `qwenmk info`: the GPU (or why there is none), the driver and the embedded kernels.

use std::io::Write;

use anyhow::Result;
use serde_json::json;

use qwenmk_kernels::kernel_names::DECODE_STEP;
use qwenmk_weights::ModelConfig;

use crate::cli::InfoArgs;
use crate::engine::gpu::{self, GpuInfo};
use crate::engine::plan::StepPlan;
use crate::ptx::{KERNELS_PTX, ptx_version_and_target};
use crate::ptxas;

/// The published config of the default model, `Qwen/Qwen3-0.6B`: the dims `info` reports the
/// kernel's shared memory for.
const DEFAULT_MODEL_CONFIG: &str = include_str!("../../../fixtures/qwen3-0.6b/config.json");

/// What is known about the decode-step kernel without a model loaded.
#[derive(Debug, Default, serde::Serialize)]
struct KernelFacts {
    /// Registers per thread, and who said so ("GPU driver" or "ptxas").
    registers: Option<u32>,
    registers_source: Option<&'static str>,
    stack_frame_bytes: Option<u32>,
    spill_bytes: Option<u32>,
    threads_per_block: u32,
    /// Dynamic shared memory per block for Qwen3-0.6B with its full 40,960-position context.
    shared_bytes_per_block: usize,
    blocks_per_sm: Option<u32>,
    note: Option<String>,
}

fn kernel_facts(gpu: Option<&GpuInfo>) -> KernelFacts {
    let block = gpu::engine::BLOCK;
    let shared = ModelConfig::from_json_str(DEFAULT_MODEL_CONFIG)
        .ok()
        .and_then(|c| {
            let sms = gpu.map_or(132, |g| g.sm_count);
            StepPlan::new(
                &c,
                c.max_position_embeddings,
                sms,
                block,
                gpu::engine::launch_shape(),
            )
            .ok()
        })
        .map_or(0, |plan| plan.shared_bytes);
    let mut facts = KernelFacts {
        threads_per_block: block,
        shared_bytes_per_block: shared,
        ..KernelFacts::default()
    };
    if let Some(info) = gpu.filter(|g| g.can_run_kernels()) {
        match gpu::inspect_decode_step(info.ordinal, block, shared) {
            Ok((attributes, per_sm)) => {
                facts.registers = Some(attributes.registers);
                facts.registers_source = Some("GPU driver");
                facts.stack_frame_bytes = Some(attributes.local_bytes_per_thread);
                facts.blocks_per_sm = Some(per_sm);
                return facts;
            }
            Err(e) => facts.note = Some(format!("the GPU could not load the kernel: {e:#}")),
        }
    }
    match ptxas::find_ptxas() {
        Some(path) => match ptxas::assemble(&path, KERNELS_PTX, qwenmk_kernels::PTX_TARGET) {
            Ok(reports) => {
                if let Some(r) = reports.iter().find(|r| r.name == DECODE_STEP) {
                    facts.registers = Some(r.registers);
                    facts.registers_source = Some("ptxas");
                    facts.stack_frame_bytes = Some(r.stack_frame_bytes);
                    facts.spill_bytes = Some(r.spill_store_bytes + r.spill_load_bytes);
                }
            }
            Err(e) => facts.note = Some(format!("{e:#}")),
        },
        None if facts.note.is_none() => {
            facts.note = Some(
                "register count unknown: no GPU, and no ptxas found (set PTXAS to report it)"
                    .into(),
            )
        }
        None => {}
    }
    facts
}

pub fn run(args: &InfoArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if args.ptx {
        out.write_all(KERNELS_PTX.as_bytes())?;
        return Ok(());
    }
    let (ptx_version, ptx_target) = ptx_version_and_target();
    let gpu = gpu::probe(0);
    let facts = kernel_facts(gpu.as_ref().ok());
    if args.json {
        let gpu_json = match &gpu {
            Ok(info) => json!(info),
            Err(why) => json!({ "unavailable": why.to_string() }),
        };
        let report = json!({
            "qwenmk": env!("CARGO_PKG_VERSION"),
            "gpu": gpu_json,
            "ptx": { "target": ptx_target, "isa": ptx_version,
                     "kernels": qwenmk_kernels::kernel_names::ALL, "bytes": KERNELS_PTX.len() },
            "decode_step": facts,
        });
        writeln!(out, "{report}")?;
        return Ok(());
    }
    writeln!(out, "qwenmk {}", env!("CARGO_PKG_VERSION"))?;
    match &gpu {
        Ok(info) => {
            let (major, minor) = info.compute_capability;
            writeln!(out, "GPU 0:       {}", info.name)?;
            writeln!(out, "  compute:   {major}.{minor} ({} SMs)", info.sm_count)?;
            writeln!(
                out,
                "  memory:    {:.1} GiB ({:.1} GiB free), {}-bit bus, peak {:.0} GB/s",
                info.total_memory_bytes as f64 / (1u64 << 30) as f64,
                info.free_memory_bytes as f64 / (1u64 << 30) as f64,
                info.memory_bus_width_bits,
                info.peak_bandwidth_bytes_per_s() / 1e9
            )?;
            writeln!(
                out,
                "  driver:    {} (CUDA {})",
                info.kernel_driver_version
                    .as_deref()
                    .unwrap_or("version unknown"),
                info.cuda_driver_version
            )?;
            if !info.can_run_kernels() {
                let (need_major, need_minor) = qwenmk_kernels::MIN_COMPUTE_CAPABILITY;
                writeln!(
                    out,
                    "  note:      the kernels need compute capability {need_major}.{need_minor} \
                     or newer (Hopper); this GPU cannot run them"
                )?;
            }
        }
        Err(why) => writeln!(out, "GPU:         none: {why}")?,
    }
    writeln!(
        out,
        "kernels:     PTX ISA {} for {}, {} kernel(s): {}",
        ptx_version.unwrap_or("?"),
        ptx_target.unwrap_or("?"),
        qwenmk_kernels::kernel_names::ALL.len(),
        qwenmk_kernels::kernel_names::ALL.join(", ")
    )?;
    let registers = match (facts.registers, facts.registers_source) {
        (Some(n), Some(source)) => format!("{n} registers/thread ({source})"),
        _ => "registers unknown".to_string(),
    };
    let stack = facts
        .stack_frame_bytes
        .map(|b| format!(", {b} bytes stack"))
        .unwrap_or_default();
    let spills = facts
        .spill_bytes
        .map(|b| format!(", {b} bytes spilled"))
        .unwrap_or_default();
    writeln!(out, "decode step: {registers}{stack}{spills}")?;
    writeln!(
        out,
        "  per block: {} threads, {:.1} KiB shared memory (Qwen3-0.6B, 40,960-position context){}",
        facts.threads_per_block,
        facts.shared_bytes_per_block as f64 / 1024.0,
        facts
            .blocks_per_sm
            .map(|n| format!(", {n} block(s) per SM"))
            .unwrap_or_default()
    )?;
    if let Some(note) = &facts.note {
        writeln!(out, "  note:      {note}")?;
    }
    Ok(())
}
