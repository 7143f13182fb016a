//! Assembles PTX with NVIDIA's `ptxas` to check it on a machine without a GPU: a PTX error, a
//! register spill or a stack frame shows up here before any GPU sees the code.
//!
//! `ptxas` comes with the CUDA toolkit or, without one, with PyPI's `nvidia-cuda-nvcc` wheel
//! (`.ci/run` installs it there and sets `PTXAS`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// What ptxas reports for one kernel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KernelReport {
    pub name: String,
    pub registers: u32,
    pub stack_frame_bytes: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
    /// Static shared memory; dynamic shared memory is sized at launch and not counted.
    pub static_shared_bytes: u32,
}

impl KernelReport {
    /// True when the kernel keeps everything in registers: no spills and no stack.
    pub fn is_clean(&self) -> bool {
        self.stack_frame_bytes == 0 && self.spill_store_bytes == 0 && self.spill_load_bytes == 0
    }
}

/// Finds ptxas: `$PTXAS`, then `ptxas` on `PATH`, then `$CUDA_HOME/bin` and `/usr/local/cuda/bin`.
pub fn find_ptxas() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PTXAS").map(PathBuf::from) {
        return path.is_file().then_some(path);
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let cuda_dirs = ["CUDA_HOME", "CUDA_PATH"]
        .into_iter()
        .filter_map(std::env::var_os)
        .map(|home| PathBuf::from(home).join("bin"))
        .chain(std::iter::once(PathBuf::from("/usr/local/cuda/bin")));
    path_dirs
        .into_iter()
        .chain(cuda_dirs)
        .map(|dir| dir.join("ptxas"))
        .find(|p| p.is_file())
}

/// Assembles `ptx` for `arch` (e.g. `sm_90`) with `ptxas -v` and returns each kernel's report.
/// A PTX error is an `Err` carrying ptxas's own message.
pub fn assemble(ptxas: &Path, ptx: &str, arch: &str) -> Result<Vec<KernelReport>> {
    let dir = std::env::temp_dir().join(format!("qwenmk-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let input = dir.join("kernels.ptx");
    std::fs::write(&input, ptx).with_context(|| format!("writing {}", input.display()))?;
    let output = Command::new(ptxas)
        .arg(format!("-arch={arch}"))
        .arg("-v")
        .arg(&input)
        .arg("-o")
        .arg(dir.join("kernels.cubin"))
        .output()
        .with_context(|| format!("running {}", ptxas.display()));
    let _ = std::fs::remove_dir_all(&dir);
    let output = output?;
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("ptxas rejected the PTX for {arch}:\n{text}");
    }
    Ok(parse_report(&text))
}

/// Parses `ptxas -v` output into one report per entry function.
pub fn parse_report(text: &str) -> Vec<KernelReport> {
    let mut reports: Vec<KernelReport> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            reports.push(KernelReport {
                name,
                registers: 0,
                stack_frame_bytes: 0,
                spill_store_bytes: 0,
                spill_load_bytes: 0,
                static_shared_bytes: 0,
            });
            continue;
        }
        let Some(current) = reports.last_mut() else {
            continue;
        };
        if line.contains("stack frame") {
            current.stack_frame_bytes = number_before(line, "bytes stack frame");
            current.spill_store_bytes = number_before(line, "bytes spill stores");
            current.spill_load_bytes = number_before(line, "bytes spill loads");
        }
        if line.contains("registers") {
            current.registers = number_before(line, "registers");
            current.static_shared_bytes = number_before(line, "bytes smem");
        }
    }
    reports
}

/// The number that stands right before `label` in `line`, or 0 when the label is absent.
fn number_before(line: &str, label: &str) -> u32 {
    line.split(label)
        .next()
        .filter(|head| head.len() < line.len())
        .and_then(|head| head.split([' ', ',']).rfind(|w| !w.is_empty()))
        .and_then(|w| w.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ptxas_verbose_output() {
        let text = "ptxas info    : 0 bytes gmem\n\
            ptxas info    : Compiling entry function 'k1' for 'sm_90'\n\
            ptxas info    : Function properties for k1\n    \
            8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
            ptxas info    : Used 40 registers, used 1 barriers, 1024 bytes smem\n\
            ptxas info    : Compiling entry function 'k2' for 'sm_90'\n\
            ptxas info    : Function properties for k2\n    \
            0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
            ptxas info    : Used 32 registers, used 1 barriers\n";
        let reports = parse_report(text);
        assert_eq!(reports.len(), 2);
        assert_eq!(
            reports[0],
            KernelReport {
                name: "k1".into(),
                registers: 40,
                stack_frame_bytes: 8,
                spill_store_bytes: 4,
                spill_load_bytes: 12,
                static_shared_bytes: 1024,
            }
        );
        assert!(!reports[0].is_clean());
        assert_eq!(reports[1].registers, 32);
        assert!(reports[1].is_clean());
    }
}
