//! The virtual device's settings, from the environment. Each variable is read once, when the
//! driver initialises; a value that does not parse is reported and the default kept.

use std::env;

/// What `QWENMK_VGPU_FAULT` injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `alloc` or `alloc:N`: the N-th allocation (1-based; default the first) fails with
    /// CUDA_ERROR_OUT_OF_MEMORY, and every later one too.
    Alloc(u32),
    /// `launch`: every kernel launch fails with CUDA_ERROR_LAUNCH_FAILED.
    Launch,
    /// `occupancy`: the occupancy API reports twice the blocks per SM that fit, so a host that
    /// trusts it asks for an oversized grid.
    Occupancy,
    /// `residency`: launches are accepted but only half the blocks the occupancy allows run at
    /// once, as if another program held the other SMs.
    Residency,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub sms: u32,
    pub compute_capability: (u32, u32),
    pub memory_bytes: u64,
    pub weak: bool,
    pub seed: u64,
    pub fault: Option<Fault>,
    /// Registers per thread to assume when ptxas is not available.
    pub fallback_registers: u32,
    pub trace: bool,
    /// `QWENMK_VGPU_TIMING=h100`: the timing model of an H100 SXM.
    pub timing: bool,
}

/// The SMs of the default virtual device: few, so launches interpret quickly.
pub const DEFAULT_SMS: u32 = 4;
/// Registers per thread assumed without ptxas: the most a thread can have, which gives the
/// fewest resident blocks (a conservative occupancy).
pub const DEFAULT_REGISTERS: u32 = 255;

fn warn(text: &str) {
    eprintln!("qwenmk virtual GPU: {text}");
}

fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, scale) = match s.to_ascii_lowercase() {
        l if l.ends_with("gib") || l.ends_with('g') => {
            (s.trim_end_matches(|c: char| c.is_alphabetic()), 1u64 << 30)
        }
        l if l.ends_with("mib") || l.ends_with('m') => {
            (s.trim_end_matches(|c: char| c.is_alphabetic()), 1u64 << 20)
        }
        _ => (s, 1),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(scale)
}

impl Config {
    pub fn from_env() -> Config {
        let var = |name: &str| env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut c = Config {
            sms: DEFAULT_SMS,
            compute_capability: (9, 0),
            memory_bytes: 16 << 30,
            weak: false,
            seed: 1,
            fault: None,
            fallback_registers: DEFAULT_REGISTERS,
            trace: var("QWENMK_VGPU_TRACE").is_some(),
            timing: false,
        };
        if let Some(v) = var("QWENMK_VGPU_TIMING") {
            match v.trim() {
                "h100" => c.timing = true,
                "0" | "off" | "none" => {}
                _ => warn(&format!(
                    "QWENMK_VGPU_TIMING={v} is not a timing model (the one there is: h100); \
                     running without timing"
                )),
            }
        }
        if let Some(v) = var("QWENMK_VGPU_SMS") {
            match v.trim().parse::<u32>() {
                Ok(n) if (1..=1024).contains(&n) => c.sms = n,
                _ => warn(&format!(
                    "QWENMK_VGPU_SMS={v} is not a number of SMs from 1 to 1024; using {DEFAULT_SMS}"
                )),
            }
        }
        if let Some(v) = var("QWENMK_VGPU_CC") {
            match v.trim() {
                "9.0" | "90" => c.compute_capability = (9, 0),
                "8.0" | "80" => c.compute_capability = (8, 0),
                "7.5" | "75" => c.compute_capability = (7, 5),
                _ => warn(&format!(
                    "QWENMK_VGPU_CC={v} is not 9.0, 8.0 or 7.5; using 9.0"
                )),
            }
        }
        if let Some(v) = var("QWENMK_VGPU_MEMORY") {
            match parse_bytes(&v) {
                Some(b) if b >= 1 << 20 => c.memory_bytes = b,
                _ => warn(&format!(
                    "QWENMK_VGPU_MEMORY={v} is not a size such as 8GiB or 512MiB; using 16 GiB"
                )),
            }
        }
        if let Some(v) = var("QWENMK_VGPU_WEAK") {
            c.weak = !matches!(v.trim(), "0" | "false" | "off");
        }
        if let Some(v) = var("QWENMK_VGPU_SEED") {
            match v.trim().parse() {
                Ok(s) => c.seed = s,
                Err(_) => warn(&format!("QWENMK_VGPU_SEED={v} is not a number; using 1")),
            }
        }
        if let Some(v) = var("QWENMK_VGPU_REGS") {
            match v.trim().parse::<u32>() {
                Ok(n) if (1..=255).contains(&n) => c.fallback_registers = n,
                _ => warn(&format!("QWENMK_VGPU_REGS={v} is not 1..255; using 255")),
            }
        }
        if let Some(v) = var("QWENMK_VGPU_FAULT") {
            c.fault = match v.trim() {
                "alloc" => Some(Fault::Alloc(1)),
                "launch" => Some(Fault::Launch),
                "occupancy" => Some(Fault::Occupancy),
                "residency" => Some(Fault::Residency),
                other => match other.strip_prefix("alloc:").and_then(|n| n.parse().ok()) {
                    Some(n) if n >= 1 => Some(Fault::Alloc(n)),
                    _ => {
                        warn(&format!(
                            "QWENMK_VGPU_FAULT={v} is not alloc, alloc:N, launch, occupancy or \
                             residency; injecting nothing"
                        ));
                        None
                    }
                },
            };
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("8GiB"), Some(8 << 30));
        assert_eq!(parse_bytes("512m"), Some(512 << 20));
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("lots"), None);
    }
}
