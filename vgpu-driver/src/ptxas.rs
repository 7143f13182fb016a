//! Register counts from NVIDIA's ptxas, so that the occupancy the virtual device reports is
//! the real kernel's. ptxas comes with the CUDA toolkit or PyPI's `nvidia-cuda-nvcc` wheel.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

/// `$PTXAS`, then `ptxas` on `PATH`, `$CUDA_HOME/bin`, `/usr/local/cuda/bin`.
fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PTXAS").map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(
        ["CUDA_HOME", "CUDA_PATH"]
            .into_iter()
            .filter_map(std::env::var_os)
            .map(|h| PathBuf::from(h).join("bin")),
    );
    dirs.push(PathBuf::from("/usr/local/cuda/bin"));
    dirs.into_iter()
        .map(|d| d.join("ptxas"))
        .find(|p| p.is_file())
}

/// Registers per thread of each entry of `ptx`, or `None` when ptxas is not available or
/// fails.
pub fn register_counts(ptx: &str, target: &str) -> Option<HashMap<String, u32>> {
    let ptxas = find()?;
    let dir = std::env::temp_dir().join(format!("qwenmk-vgpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let input = dir.join("module.ptx");
    std::fs::write(&input, ptx).ok()?;
    let output = Command::new(ptxas)
        .arg(format!("-arch={target}"))
        .arg("-v")
        .arg("-o")
        .arg(dir.join("module.cubin"))
        .arg(&input)
        .output()
        .ok();
    let _ = std::fs::remove_dir_all(&dir);
    let output = output?;
    if !output.status.success() {
        return None;
    }
    Some(parse(&String::from_utf8_lossy(&output.stderr)))
}

/// `ptxas info : Compiling entry function 'name' for 'sm_90'` … `Used N registers`.
fn parse(log: &str) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    let mut current: Option<String> = None;
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            current = rest.split('\'').next().map(str::to_string);
        } else if let Some(rest) = line.split("Used ").nth(1)
            && let Some(name) = &current
            && let Some(n) = rest.split_whitespace().next().and_then(|n| n.parse().ok())
            && rest.contains("registers")
        {
            out.insert(name.clone(), n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_registers_per_entry() {
        let log = "ptxas info    : 0 bytes gmem\n\
                   ptxas info    : Compiling entry function 'k' for 'sm_90'\n\
                   ptxas info    : Function properties for k\n\
                   \x20   0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
                   ptxas info    : Used 182 registers, used 1 barriers\n";
        assert_eq!(super::parse(log).get("k"), Some(&182));
    }
}
