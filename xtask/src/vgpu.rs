//! `cargo xtask vgpu -- <qwenmk arguments>`: the release `qwenmk` on the virtual GPU.
//!
//! Builds `qwenmk` and the stand-in driver (`qwenmk-vgpu-driver`) in release mode, links the
//! driver as `libcuda.so` into `target/vgpu/lib/` and runs `qwenmk` with that directory first
//! on `LD_LIBRARY_PATH`, so cudarc loads it instead of NVIDIA's driver. qwenmk's stdout, stderr
//! and exit status pass through unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

pub const SUMMARY: &str = "run the release qwenmk on the virtual GPU (a PTX interpreter)";

const HELP: &str = "\
usage: cargo xtask vgpu [options] -- <qwenmk arguments>

Runs target/release/qwenmk with a stand-in libcuda.so that interprets the embedded PTX.
Example: cargo xtask vgpu -- generate --device gpu --model fixtures/tiny-gqa2 -n 8 \"Hi\"

options (each sets the environment variable the driver reads; those can be set directly too):
  --sms N        SMs of the virtual device (QWENMK_VGPU_SMS; default 4, 132 = an H100's shape)
  --cc CC        compute capability (QWENMK_VGPU_CC): 9.0 (default; qwenmk loads its sm_90
                 PTX), 8.0 (an A100's shape; the sm_80 PTX) or 7.5 (too old: refused)
  --memory SIZE  device memory, e.g. 16GiB (QWENMK_VGPU_MEMORY)
  --weak         weak-visibility memory model (QWENMK_VGPU_WEAK=1)
  --seed S       its seed (QWENMK_VGPU_SEED)
  --fault F      inject alloc, alloc:N, launch, occupancy or residency (QWENMK_VGPU_FAULT)
  --timing h100  simulate an H100 SXM's timing (QWENMK_VGPU_TIMING): bench then reports
                 simulated times and where each step's time went
  --trace        log every driver call to stderr (QWENMK_VGPU_TRACE=1)";

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn cargo_build_release(packages: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root())
        .args(["build", "--release", "--quiet"]);
    for p in packages {
        command.args(["-p", p]);
    }
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("building {} failed", packages.join(" and "));
    }
    Ok(())
}

/// Builds the stand-in driver (release) and returns a directory that holds it as
/// `libcuda.so` (`name` keeps concurrent users apart).
pub fn build_driver(name: &str) -> Result<PathBuf> {
    cargo_build_release(&["qwenmk-vgpu-driver"])?;
    link_driver(name)
}

fn link_driver(name: &str) -> Result<PathBuf> {
    let driver = target_dir()
        .join("release")
        .join("libqwenmk_vgpu_driver.so");
    if !driver.is_file() {
        bail!("the build left no {}", driver.display());
    }
    let lib = target_dir().join("vgpu").join(name);
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let link = lib.join("libcuda.so");
    // A copy, not a symlink: it survives `cargo clean -p` of the driver.
    std::fs::copy(&driver, &link)
        .with_context(|| format!("copying the driver to {}", link.display()))?;
    Ok(lib)
}

/// Builds the release `qwenmk` and driver, and returns (qwenmk, directory holding
/// `libcuda.so`).
pub fn build() -> Result<(PathBuf, PathBuf)> {
    cargo_build_release(&["qwenmk", "qwenmk-vgpu-driver"])?;
    Ok((
        target_dir().join("release").join("qwenmk"),
        link_driver("lib")?,
    ))
}

/// Builds the release `qwenmk` alone.
pub fn build_qwenmk() -> Result<PathBuf> {
    cargo_build_release(&["qwenmk"])?;
    Ok(target_dir().join("release").join("qwenmk"))
}

/// `LD_LIBRARY_PATH` with `lib` first.
pub fn library_path(lib: &Path) -> std::ffi::OsString {
    let mut paths = vec![lib.to_path_buf()];
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
        paths.extend(std::env::split_paths(&old));
    }
    std::env::join_paths(paths).unwrap_or_else(|_| lib.as_os_str().to_owned())
}

pub fn run(args: &[String]) -> Result<()> {
    let split = args.iter().position(|a| a == "--");
    let (options, qwenmk_args) = match split {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &args[args.len()..]),
    };
    let mut env: Vec<(&str, String)> = Vec::new();
    let mut it = options.iter();
    while let Some(o) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value (see --help)"))
        };
        match o.as_str() {
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(());
            }
            "--sms" => env.push(("QWENMK_VGPU_SMS", value("--sms")?)),
            "--cc" => env.push(("QWENMK_VGPU_CC", value("--cc")?)),
            "--memory" => env.push(("QWENMK_VGPU_MEMORY", value("--memory")?)),
            "--seed" => env.push(("QWENMK_VGPU_SEED", value("--seed")?)),
            "--fault" => env.push(("QWENMK_VGPU_FAULT", value("--fault")?)),
            "--timing" => env.push(("QWENMK_VGPU_TIMING", value("--timing")?)),
            "--weak" => env.push(("QWENMK_VGPU_WEAK", "1".into())),
            "--trace" => env.push(("QWENMK_VGPU_TRACE", "1".into())),
            other => bail!("unknown option `{other}`; qwenmk's own arguments go after `--`"),
        }
    }
    if qwenmk_args.is_empty() {
        bail!("nothing to run: give qwenmk's arguments after `--` (see --help)");
    }
    let (qwenmk, lib) = build()?;
    let mut command = Command::new(&qwenmk);
    command
        .args(qwenmk_args)
        .env("LD_LIBRARY_PATH", library_path(&lib))
        .envs(env);
    if std::env::var_os("PTXAS").is_none()
        && let Some(ptxas) = qwenmk::ptxas::find_ptxas()
    {
        command.env("PTXAS", ptxas);
    }
    let status = command
        .status()
        .with_context(|| format!("running {}", qwenmk.display()))?;
    // qwenmk's exit status is ours.
    std::process::exit(exit_code(status));
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}
