//! `qwenmk info`: the GPU (or why there is none), the driver, the embedded PTX modules (and the
//! one the GPU loads) and the decode step's registers for each.

use std::io::Write;

use anyhow::{Result, anyhow};
use serde_json::json;

use qwenmk_kernels::kernel_names::DECODE_STEP;
use qwenmk_weights::ModelConfig;

use crate::cli::InfoArgs;
use crate::engine::gpu::{self, GpuInfo};
use crate::engine::plan::StepPlan;
use crate::ptx::{self, PtxModule};
use crate::ptxas;

/// The published config of the default model, `Qwen/Qwen3-0.6B`: the dims `info` reports the
/// kernel's shared memory for.
const DEFAULT_MODEL_CONFIG: &str = include_str!("../../../fixtures/qwen3-0.6b/config.json");

/// What is known about one module's decode-step kernel without a model loaded.
#[derive(Debug, Default, serde::Serialize)]
struct ModuleFacts {
    /// Registers per thread, and who said so ("GPU driver" or "ptxas").
    registers: Option<u32>,
    registers_source: Option<&'static str>,
    stack_frame_bytes: Option<u32>,
    spill_bytes: Option<u32>,
    /// Blocks per SM on the GPU present (only for the module it loads).
    blocks_per_sm: Option<u32>,
    note: Option<String>,
}

/// What is known about the decode-step kernel: the launch shape, and each module's figures.
#[derive(Debug)]
struct KernelFacts {
    threads_per_block: u32,
    /// Dynamic shared memory per block for Qwen3-0.6B with its full 40,960-position context.
    shared_bytes_per_block: usize,
    /// The figures of each module, in [`ptx::MODULES`] order.
    modules: Vec<(&'static PtxModule, ModuleFacts)>,
    note: Option<String>,
}

impl KernelFacts {
    fn to_json(&self) -> serde_json::Value {
        let by_arch: serde_json::Map<String, serde_json::Value> = self
            .modules
            .iter()
            .map(|(m, f)| (m.arch.to_string(), json!(f)))
            .collect();
        json!({
            "threads_per_block": self.threads_per_block,
            "shared_bytes_per_block": self.shared_bytes_per_block,
            "by_arch": by_arch,
            "note": self.note,
        })
    }
}

/// The decode step's figures: the GPU driver's for the module the GPU present loads, ptxas's
/// for the others (and for all of them without a GPU).
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
                gpu::engine::launch_shape(
                    &crate::engine::plan::model_dims(&c, 1),
                    gpu.map_or(gpu::engine::H100_SHARED_OPTIN_BYTES, |g| {
                        g.shared_optin_per_block
                    }),
                ),
                crate::engine::kv::default_for(crate::engine::Device::Gpu),
            )
            .ok()
        })
        .map_or(0, |plan| plan.shared_bytes);
    let loaded = gpu.and_then(|g| g.ptx_module().map(|m| (g, m)));
    let ptxas = ptxas::find_ptxas();
    let mut modules = Vec::new();
    for module in ptx::MODULES {
        let mut facts = ModuleFacts::default();
        if let Some((info, _)) = loaded.filter(|(_, m)| m.arch == module.arch) {
            match gpu::inspect_decode_step(info.ordinal, module, block, shared) {
                Ok((attributes, per_sm)) => {
                    facts.registers = Some(attributes.registers);
                    facts.registers_source = Some("GPU driver");
                    facts.stack_frame_bytes = Some(attributes.local_bytes_per_thread);
                    facts.blocks_per_sm = Some(per_sm);
                    modules.push((module, facts));
                    continue;
                }
                Err(e) => facts.note = Some(format!("the GPU could not load the kernel: {e:#}")),
            }
        }
        if let Some(path) = &ptxas {
            match ptxas::assemble(path, module.ptx, module.arch) {
                Ok(reports) => {
                    if let Some(r) = reports.iter().find(|r| r.name == DECODE_STEP) {
                        facts.registers = Some(r.registers);
                        facts.registers_source = Some("ptxas");
                        facts.stack_frame_bytes = Some(r.stack_frame_bytes);
                        facts.spill_bytes = Some(r.spill_store_bytes + r.spill_load_bytes);
                    }
                }
                Err(e) => facts.note = Some(format!("{e:#}")),
            }
        }
        modules.push((module, facts));
    }
    let note = (ptxas.is_none() && modules.iter().any(|(_, f)| f.registers.is_none())).then(|| {
        "register count unknown where no GPU reported it: no ptxas found (set PTXAS to report it)"
            .to_string()
    });
    KernelFacts {
        threads_per_block: block,
        shared_bytes_per_block: shared,
        modules,
        note,
    }
}

/// `info --ptx`: every module from its `.version` line, a blank line between them; with
/// `--arch`, that one module whole.
fn write_ptx(out: &mut dyn Write, arch: Option<&str>) -> Result<()> {
    if let Some(arch) = arch {
        let module = ptx::module_named(arch).ok_or_else(|| {
            anyhow!(
                "no PTX module for `{arch}` is embedded; the modules are {}",
                ptx::arch_names()
            )
        })?;
        out.write_all(module.ptx.as_bytes())?;
        return Ok(());
    }
    for (i, module) in ptx::MODULES.iter().enumerate() {
        if i > 0 {
            out.write_all(b"\n")?;
        }
        let text = module.from_version_line();
        out.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

pub fn run(args: &InfoArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if args.ptx {
        return write_ptx(&mut out, args.arch.as_deref());
    }
    let gpu = gpu::probe(0);
    let loads = gpu.as_ref().ok().and_then(GpuInfo::ptx_module);
    let facts = kernel_facts(gpu.as_ref().ok());
    if args.json {
        let gpu_json = match &gpu {
            Ok(info) => json!(info),
            Err(why) => json!({ "unavailable": why.to_string() }),
        };
        let modules: Vec<_> = ptx::MODULES
            .iter()
            .map(|m| {
                let (major, minor) = m.min_compute_capability;
                json!({ "arch": m.arch, "isa": m.isa_version(), "target": m.target(),
                        "min_compute_capability": format!("{major}.{minor}"),
                        "min_cuda": m.min_cuda_release(), "bytes": m.ptx.len() })
            })
            .collect();
        let report = json!({
            "qwenmk": env!("CARGO_PKG_VERSION"),
            "gpu": gpu_json,
            "ptx": { "modules": modules, "loads": loads.map(|m| m.arch),
                     "kernels": qwenmk_kernels::kernel_names::ALL },
            "decode_step": facts.to_json(),
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
            match loads {
                Some(module) => writeln!(
                    out,
                    "  loads:     the {} PTX (ISA {})",
                    module.arch,
                    module.isa_version().unwrap_or("?")
                )?,
                None => writeln!(
                    out,
                    "  note:      the kernels need {}; this GPU cannot run them",
                    ptx::requirement()
                )?,
            }
        }
        Err(why) => writeln!(out, "GPU:         none: {why}")?,
    }
    writeln!(
        out,
        "kernels:     {} kernel(s) in {} PTX module(s): {}",
        qwenmk_kernels::kernel_names::ALL.len(),
        ptx::MODULES.len(),
        qwenmk_kernels::kernel_names::ALL.join(", ")
    )?;
    for module in ptx::MODULES {
        writeln!(
            out,
            "  {:<10} PTX ISA {} for {}, compute capability {} ({}){}",
            format!("{}:", module.arch),
            module.isa_version().unwrap_or("?"),
            module.target().unwrap_or("?"),
            module.compute_capabilities(),
            module.example_gpu,
            module
                .min_cuda_release()
                .map(|r| format!(", drivers for CUDA {r}+"))
                .unwrap_or_default()
        )?;
    }
    writeln!(
        out,
        "decode step: {} threads, {:.1} KiB shared memory per block (Qwen3-0.6B, 40,960-position \
         context)",
        facts.threads_per_block,
        facts.shared_bytes_per_block as f64 / 1024.0,
    )?;
    for (module, f) in &facts.modules {
        let registers = match (f.registers, f.registers_source) {
            (Some(n), Some(source)) => format!("{n} registers/thread ({source})"),
            _ => "registers unknown".to_string(),
        };
        let stack = f
            .stack_frame_bytes
            .map(|b| format!(", {b} bytes stack"))
            .unwrap_or_default();
        let spills = f
            .spill_bytes
            .map(|b| format!(", {b} bytes spilled"))
            .unwrap_or_default();
        let blocks = f
            .blocks_per_sm
            .map(|n| format!(", {n} block(s) per SM"))
            .unwrap_or_default();
        writeln!(
            out,
            "  {:<10} {registers}{stack}{spills}{blocks}",
            format!("{}:", module.arch)
        )?;
        if let Some(note) = &f.note {
            writeln!(out, "  note:      {}: {note}", module.arch)?;
        }
    }
    if let Some(note) = &facts.note {
        writeln!(out, "  note:      {note}")?;
    }
    Ok(())
}
