//! Compiles the `kernels` crate to PTX for sm_90 with rustc's NVPTX backend and leaves it in
//! `$OUT_DIR/qwenmk_kernels.ptx`, which `src/ptx.rs` embeds in the binary.
//!
//! How (see ../shared/notes/rust-ptx.md): a nested `cargo rustc` for `nvptx64-nvidia-cuda`
//! builds `core` from source (`-Zbuild-std=core`; no prebuilt std exists for the target) and
//! emits the crate's assembly, which for NVPTX is PTX. Panics abort immediately so that no
//! unresolved panic machinery is left in the module.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "nvptx64-nvidia-cuda";
const PTX_FILE: &str = "qwenmk_kernels.ptx";
const RUSTFLAGS: &[&str] = &[
    "-Zunstable-options",
    "-Cpanic=immediate-abort",
    "-Ctarget-cpu=sm_90",
    // PTX ISA 8.0: the first with sm_90's bulk copies (TMA) and mbarrier transaction counts.
    "-Ctarget-feature=+ptx80",
];

fn main() {
    embed_git_commit();
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let kernels_dir = manifest_dir.join("..").join("kernels");
    let out_dir = PathBuf::from(env("OUT_DIR"));
    println!(
        "cargo::rerun-if-changed={}",
        kernels_dir.join("src").display()
    );
    println!(
        "cargo::rerun-if-changed={}",
        kernels_dir.join("Cargo.toml").display()
    );

    let cargo = env("CARGO");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    check_toolchain(&rustc);

    let target_dir = out_dir.join("nvptx-target");
    let mut command = Command::new(&cargo);
    command
        .current_dir(&kernels_dir)
        .args(["rustc", "--lib", "--release", "--quiet", "--target", TARGET])
        .arg("-Zbuild-std=core")
        .arg("--manifest-path")
        .arg(kernels_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--", "--emit=asm"]);
    // The outer build's settings (flags, wrappers such as clippy-driver, target dir) must not
    // leak into the nested one.
    for var in [
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(var);
    }
    command
        .env("CARGO_ENCODED_RUSTFLAGS", RUSTFLAGS.join("\x1f"))
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3")
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        // One codegen unit gives one assembly file: the whole PTX module.
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS", "false")
        .env("CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS", "false");

    let output = command.output().unwrap_or_else(|e| {
        fail(&format!(
            "could not run `{cargo}` to build the kernels: {e}"
        ))
    });
    if !output.status.success() {
        fail(&format!(
            "building the kernels for {TARGET} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }

    let asm = newest_assembly(&target_dir.join(TARGET).join("release").join("deps"));
    let ptx = std::fs::read_to_string(&asm)
        .unwrap_or_else(|e| fail(&format!("could not read the PTX {}: {e}", asm.display())));
    if let Some(line) = ptx
        .lines()
        .find(|l| l.trim_start().starts_with(".extern .func"))
    {
        fail(&format!(
            "the PTX calls a function that is not in the module ({}): a kernel uses code from \
             core that does not inline (formatting, panics); keep kernels to plain arithmetic",
            line.trim()
        ));
    }
    std::fs::write(out_dir.join(PTX_FILE), ptx).unwrap_or_else(|e| {
        fail(&format!(
            "could not write the PTX into {}: {e}",
            out_dir.display()
        ))
    });
}

/// Sets `QWENMK_GIT_COMMIT` to the short hash of the checked-out commit (`unknown` outside a
/// git checkout or without git), which `qwenmk bench` reports. Reruns when HEAD moves: on a
/// checkout of another branch (`.git/HEAD`) or a new commit on this one (its ref file).
fn embed_git_commit() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo::rustc-env=QWENMK_GIT_COMMIT={commit}");
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from) {
        let mut watch = vec![git_dir.join("HEAD"), git_dir.join("packed-refs")];
        if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(git_dir.join(reference));
        }
        // A path that does not exist would make cargo rerun this script on every build.
        for path in watch.into_iter().filter(|p| p.exists()) {
            println!("cargo::rerun-if-changed={}", path.display());
        }
    }
}

/// The nightly compiler and its `rust-src` are needed; say exactly what to install if not.
fn check_toolchain(rustc: &str) {
    const INSTALL: &str =
        "rustup toolchain install nightly-2026-05-20 --component rust-src llvm-tools";
    let version = Command::new(rustc)
        .arg("-vV")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !version.contains("nightly") {
        fail(&format!(
            "the kernels need the nightly compiler pinned in rust-toolchain.toml, but `{rustc}` \
             is not a nightly ({}); run `{INSTALL}` and build with rustup's cargo",
            version.lines().next().unwrap_or("unknown version")
        ));
    }
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let core_src = Path::new(&sysroot).join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if !core_src.exists() {
        fail(&format!(
            "the kernels are built with -Zbuild-std=core, which needs the rust-src component \
             (not found at {}); run `{INSTALL}`",
            core_src.display()
        ));
    }
}

/// The assembly of the kernels crate: the newest `qwenmk_kernels-*.s` (old ones stay behind
/// when flags change the crate's hash).
fn newest_assembly(deps: &Path) -> PathBuf {
    let entries = std::fs::read_dir(deps).unwrap_or_else(|e| {
        fail(&format!(
            "no kernel build output in {}: {e}",
            deps.display()
        ))
    });
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("qwenmk_kernels-") && name.ends_with(".s")
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            fail(&format!(
                "the kernel build left no assembly in {}",
                deps.display()
            ))
        })
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| fail(&format!("cargo did not set {name}")))
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    panic!("{message}");
}
