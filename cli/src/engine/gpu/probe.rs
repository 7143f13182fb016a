//! Finds the GPU and describes it: name, compute capability, SMs, memory, driver.

use std::fmt;

use cudarc::driver::CudaContext;
use cudarc::driver::sys::CUdevice_attribute as Attribute;

use crate::ptx::{self, PtxModule};

/// How the virtual GPU's stand-in driver names its device.
pub const VIRTUAL_GPU_NAME_PREFIX: &str = "qwenmk virtual GPU";

/// What `qwenmk info` prints about a GPU and what the engine checks before a launch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (u32, u32),
    pub sm_count: u32,
    pub total_memory_bytes: u64,
    pub free_memory_bytes: u64,
    /// The CUDA version the driver implements, e.g. "13.0".
    pub cuda_driver_version: String,
    /// The NVIDIA kernel driver's version (e.g. "580.95.05") where the OS tells it.
    pub kernel_driver_version: Option<String>,
    /// Memory bus width in bits and peak memory clock in kHz, for the bandwidth roofline.
    pub memory_bus_width_bits: u32,
    pub memory_clock_khz: u32,
    /// Shared memory one block may have once it opts in (H100: 227 KiB).
    pub shared_optin_per_block: u32,
}

impl GpuInfo {
    /// Peak DRAM bandwidth from the memory clock and bus width (double data rate), in bytes/s.
    pub fn peak_bandwidth_bytes_per_s(&self) -> f64 {
        2.0 * self.memory_clock_khz as f64 * 1e3 * (self.memory_bus_width_bits as f64 / 8.0)
    }

    /// True for the qwenmk virtual GPU (the PTX interpreter behind a stand-in driver, a test
    /// tool): its times are its own clock's, not measurements.
    pub fn is_virtual(&self) -> bool {
        self.name.starts_with(VIRTUAL_GPU_NAME_PREFIX)
    }

    /// True for the virtual GPU with a timing model (`QWENMK_VGPU_TIMING=h100`): its clock is
    /// a simulation of a real GPU's, and it keeps a profile of its launches.
    pub fn is_simulated(&self) -> bool {
        self.is_virtual() && self.name.contains("simulated")
    }

    /// The embedded PTX module this GPU loads: the newest architecture it has, or `None` when
    /// it is older than every module.
    pub fn ptx_module(&self) -> Option<&'static PtxModule> {
        ptx::module_for(self.compute_capability)
    }

    /// True when one of the embedded PTX modules can run on this GPU.
    pub fn can_run_kernels(&self) -> bool {
        self.ptx_module().is_some()
    }

    /// Why this GPU cannot run the kernels: `NAME has compute capability 7.5; the kernels need
    /// compute capability 8.0 (A100) or newer`.
    pub fn too_old(&self) -> String {
        let (major, minor) = self.compute_capability;
        format!(
            "{} has compute capability {major}.{minor}; the kernels need {}",
            self.name,
            ptx::requirement()
        )
    }
}

/// Why no GPU can be used, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuUnavailable {
    /// `libcuda.so` could not be loaded.
    NoDriver,
    /// The driver loaded but reports no device, or failed to start.
    NoDevice(String),
}

impl fmt::Display for GpuUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuUnavailable::NoDriver => write!(
                f,
                "no CUDA driver was found (libcuda.so could not be loaded); install the NVIDIA \
                 driver, or use --device cpu"
            ),
            GpuUnavailable::NoDevice(why) => {
                write!(
                    f,
                    "the CUDA driver found no usable GPU ({why}); use --device cpu"
                )
            }
        }
    }
}

impl std::error::Error for GpuUnavailable {}

/// Describes GPU `ordinal`, or says why there is none.
pub fn probe(ordinal: usize) -> Result<GpuInfo, GpuUnavailable> {
    // SAFETY: only tries to dlopen the driver library; no CUDA call is made.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(GpuUnavailable::NoDriver);
    }
    let no_device = |e: cudarc::driver::DriverError| GpuUnavailable::NoDevice(e.to_string());
    let count = CudaContext::device_count().map_err(no_device)?;
    if count <= ordinal as i32 {
        return Err(GpuUnavailable::NoDevice(format!(
            "{count} device(s), none with ordinal {ordinal}"
        )));
    }
    let ctx = CudaContext::new(ordinal).map_err(no_device)?;
    let attribute = |a: Attribute| ctx.attribute(a).map(|v| v.max(0) as u32).map_err(no_device);
    let (major, minor) = ctx.compute_capability().map_err(no_device)?;
    let (free, total) = ctx.mem_get_info().map_err(no_device)?;
    let mut version = 0i32;
    // SAFETY: the driver is loaded and initialised (the context exists); the pointer is valid.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(no_device)?;
    Ok(GpuInfo {
        ordinal,
        name: ctx.name().map_err(no_device)?,
        compute_capability: (major.max(0) as u32, minor.max(0) as u32),
        sm_count: attribute(Attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
        total_memory_bytes: total as u64,
        free_memory_bytes: free as u64,
        cuda_driver_version: format!("{}.{}", version / 1000, (version % 1000) / 10),
        kernel_driver_version: kernel_driver_version(),
        memory_bus_width_bits: attribute(Attribute::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH)?,
        memory_clock_khz: attribute(Attribute::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE)?,
        shared_optin_per_block: attribute(
            Attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
        )?,
    })
}

/// The kernel module's version from `/proc/driver/nvidia/version` (Linux), e.g. "580.95.05".
fn kernel_driver_version() -> Option<String> {
    let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
    parse_kernel_driver_version(&text)
}

fn parse_kernel_driver_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.contains("Kernel Module"))?;
    line.split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()) && w.contains('.'))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernel_module_version() {
        let text = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  \
                    Release Build  (dvs-builder@U16-I3-B03-4-3)  Tue Sep 23 09:59:51 UTC 2025\n\
                    GCC version:  gcc version 12.3.0";
        assert_eq!(
            parse_kernel_driver_version(text).as_deref(),
            Some("580.95.05")
        );
        assert_eq!(parse_kernel_driver_version("nothing here"), None);
    }

    #[test]
    fn h100_peak_bandwidth_from_clock_and_bus() {
        let info = GpuInfo {
            ordinal: 0,
            name: "NVIDIA H100 80GB HBM3".into(),
            compute_capability: (9, 0),
            sm_count: 132,
            total_memory_bytes: 80 << 30,
            free_memory_bytes: 79 << 30,
            cuda_driver_version: "13.0".into(),
            kernel_driver_version: None,
            memory_bus_width_bits: 5120,
            memory_clock_khz: 2_619_000,
            shared_optin_per_block: 227 * 1024,
        };
        // 2 × 2.619 GHz × 640 B = 3.35 TB/s, the H100 SXM's spec.
        assert!((info.peak_bandwidth_bytes_per_s() / 1e12 - 3.352).abs() < 0.01);
        assert!(info.can_run_kernels());
        assert_eq!(info.ptx_module().map(|m| m.arch), Some("sm_90"));
        let a100 = GpuInfo {
            name: "NVIDIA A100-SXM4-80GB".into(),
            compute_capability: (8, 0),
            ..info.clone()
        };
        assert_eq!(a100.ptx_module().map(|m| m.arch), Some("sm_80"));
        let t4 = GpuInfo {
            name: "Tesla T4".into(),
            compute_capability: (7, 5),
            ..info
        };
        assert!(!t4.can_run_kernels());
        assert_eq!(
            t4.too_old(),
            "Tesla T4 has compute capability 7.5; the kernels need compute capability 8.0 \
             (A100) or newer"
        );
    }
}
