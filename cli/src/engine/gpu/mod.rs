//! The `gpu` engine's host side. Everything that calls the CUDA driver goes through cudarc
//! with dynamic loading, so the binary runs (and says so plainly) on machines without a
//! driver. `launch.rs` is the only file that loads and launches kernels.

pub mod engine;
mod launch;
pub mod memory;
mod probe;

pub use engine::GpuEngine;
pub use launch::{KernelAttributes, inspect_decode_step};
pub use probe::{GpuInfo, GpuUnavailable, probe};
