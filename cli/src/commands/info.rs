//! `qwenmk info`: the GPU (or why there is none), the driver and the embedded kernels.

use std::io::Write;

use anyhow::Result;
use serde_json::json;

use crate::cli::InfoArgs;
use crate::gpu;
use crate::ptx::{KERNELS_PTX, ptx_version_and_target};

pub fn run(args: &InfoArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if args.ptx {
        out.write_all(KERNELS_PTX.as_bytes())?;
        return Ok(());
    }
    let (ptx_version, ptx_target) = ptx_version_and_target();
    let gpu = gpu::probe(0);
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
    Ok(())
}
