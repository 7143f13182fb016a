//! The `gpu` engine's host side. This module finds a usable GPU; everything that calls the
//! CUDA driver goes through cudarc with dynamic loading, so the binary runs (and says so
//! plainly) on machines without a driver.

mod probe;

pub use probe::{GpuInfo, GpuUnavailable, probe};
