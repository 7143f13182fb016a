//! A stand-in for NVIDIA's `libcuda.so` that runs CUDA host code on the qwenmk virtual GPU.
//!
//! Load it under the name `libcuda.so` (`cargo xtask vgpu` does: it links it into a directory
//! of its own and puts that on `LD_LIBRARY_PATH`), and a program that uses the CUDA driver
//! API through dynamic loading — qwenmk through cudarc — runs unchanged on a machine without a
//! GPU: its PTX is interpreted instruction by instruction by [`qwenmk_vgpu`].
//!
//! The device calls itself "qwenmk virtual GPU (PTX interpreter)" so that nobody takes it for
//! hardware; its clock, and so every event timing, is virtual. Settings (environment):
//! `QWENMK_VGPU_SMS` (SMs, default 4; 132 for an H100's shape), `QWENMK_VGPU_CC` (9.0, 8.0 or
//! 7.5), `QWENMK_VGPU_MEMORY` (e.g. 16GiB), `QWENMK_VGPU_WEAK=1` (weak-visibility memory,
//! `QWENMK_VGPU_SEED`), `QWENMK_VGPU_FAULT` (alloc, alloc:N, launch, occupancy, residency),
//! `QWENMK_VGPU_REGS` (registers per thread when ptxas is not found), `QWENMK_VGPU_TRACE=1`,
//! `QWENMK_VGPU_TIMING=h100` (simulated H100 timing; `qwenmkVgpuTakeProfile` returns it).

mod api;
mod config;
mod ptxas;
mod state;

pub use state::{DEVICE_NAME, DEVICE_NAME_TIMED};
