//! Compiles the `kernels` crate to PTX with rustc's NVPTX backend, once per architecture in
//! [`ARCHS`] (sm_90 and sm_80), and leaves each module in `$OUT_DIR/qwenmk_kernels_<arch>.ptx`,
//! which `src/ptx.rs` embeds in the binary. The gpu engine loads the one that suits the GPU.
//!
//! How (see ../shared/notes/rust-ptx.md): a nested `cargo rustc` for `nvptx64-nvidia-cuda`
//! builds `core` from source (`-Zbuild-std=core`; no prebuilt std exists for the target) and
//! emits the crate's assembly, which for NVPTX is PTX. Panics abort immediately so that no
//! unresolved panic machinery is left in the module. Each architecture has its own nested
//! target directory (its flags differ, so a shared one would rebuild `core` every time), and
//! the builds run side by side.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "nvptx64-nvidia-cuda";
const RUSTFLAGS: &[&str] = &[
    "-Zunstable-options",
    "-Cpanic=immediate-abort",
    // No jump tables (`brx.idx`): a `match` over a few cases becomes compares and branches,
    // which ptxas turns into the same predicated code, and which the virtual GPU runs (it
    // has no multi-way branch).
    "-Cllvm-args=-min-jump-table-entries=1000000",
];

/// One PTX build of the kernels.
struct Arch {
    /// rustc's `-Ctarget-cpu`, which is also the module's `.target`.
    cpu: &'static str,
    /// rustc's `-Ctarget-feature` naming the PTX ISA version of the module.
    isa_feature: &'static str,
    /// `--cfg` flags that let the device layer pick instructions per architecture
    /// (`kernels/src/device/nvptx.rs` lists them).
    cfgs: &'static [&'static str],
}

/// The architectures built, newest first. `src/ptx.rs` embeds one module per entry.
const ARCHS: &[Arch] = &[
    Arch {
        cpu: "sm_90",
        // PTX ISA 8.0: the first with sm_90's bulk copies (TMA) and mbarrier transaction
        // counts; drivers for CUDA 12.0 and newer accept it.
        isa_feature: "+ptx80",
        cfgs: &["qwenmk_sm90"],
    },
    Arch {
        cpu: "sm_80",
        // PTX ISA 7.4: the first with the `L1::no_allocate` eviction priority of the weight
        // loads (ptxas refuses 7.0, rustc's default for sm_80); drivers for CUDA 11.4 and
        // newer accept it.
        isa_feature: "+ptx74",
        cfgs: &[],
    },
];

/// Where the module of `cpu` is written in `OUT_DIR` (`src/ptx.rs` includes these names).
fn ptx_file(cpu: &str) -> String {
    format!("qwenmk_kernels_{cpu}.ptx")
}

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

    // Start every build, then collect them: each is mostly one single-threaded rustc (core,
    // then the kernels), so side by side they take the time of one on two cores.
    let builds: Vec<_> = ARCHS
        .iter()
        .map(|arch| {
            let target_dir = out_dir.join(format!("nvptx-{}", arch.cpu));
            let child = nested_build(&cargo, &kernels_dir, &target_dir, arch)
                .spawn()
                .unwrap_or_else(|e| {
                    fail(&format!(
                        "could not run `{cargo}` to build the kernels: {e}"
                    ))
                });
            (arch, target_dir, child)
        })
        .collect();
    for (arch, target_dir, child) in builds {
        let output = child.wait_with_output().unwrap_or_else(|e| {
            fail(&format!(
                "waiting for the {} kernel build failed: {e}",
                arch.cpu
            ))
        });
        if !output.status.success() {
            fail(&format!(
                "building the kernels for {TARGET} ({}) failed:\n{}",
                arch.cpu,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let asm = newest_assembly(&target_dir.join(TARGET).join("release").join("deps"));
        let ptx = std::fs::read_to_string(&asm)
            .unwrap_or_else(|e| fail(&format!("could not read the PTX {}: {e}", asm.display())));
        check_ptx(&ptx, arch.cpu);
        let file = out_dir.join(ptx_file(arch.cpu));
        std::fs::write(&file, ptx).unwrap_or_else(|e| {
            fail(&format!(
                "could not write the PTX into {}: {e}",
                file.display()
            ))
        });
    }
}

/// The nested `cargo rustc` that compiles the kernels for `arch` into `target_dir`.
fn nested_build(cargo: &str, kernels_dir: &Path, target_dir: &Path, arch: &Arch) -> Command {
    let mut command = Command::new(cargo);
    command
        .current_dir(kernels_dir)
        .args(["rustc", "--lib", "--release", "--quiet", "--target", TARGET])
        .arg("-Zbuild-std=core")
        .arg("--manifest-path")
        .arg(kernels_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .args(["--", "--emit=asm"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
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
    let mut flags: Vec<String> = RUSTFLAGS.iter().map(|f| f.to_string()).collect();
    flags.push(format!("-Ctarget-cpu={}", arch.cpu));
    flags.push(format!("-Ctarget-feature={}", arch.isa_feature));
    for cfg in arch.cfgs {
        flags.push(format!("--cfg={cfg}"));
    }
    command
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3")
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        // One codegen unit gives one assembly file: the whole PTX module.
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS", "false")
        .env("CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS", "false");
    command
}

/// Fails the build on a module the driver could not load: one that names another target than
/// it was built for, or that calls a function it does not define.
fn check_ptx(ptx: &str, cpu: &str) {
    let target = ptx
        .lines()
        .find_map(|l| l.trim().strip_prefix(".target"))
        .map(str::trim);
    if target != Some(cpu) {
        fail(&format!(
            "the kernels built for {cpu} name another target in their PTX ({})",
            target.unwrap_or("no .target line")
        ));
    }
    if let Some(line) = ptx
        .lines()
        .find(|l| l.trim_start().starts_with(".extern .func"))
    {
        fail(&format!(
            "the {cpu} PTX calls a function that is not in the module ({}): a kernel uses code \
             from core that does not inline (formatting, panics); keep kernels to plain \
             arithmetic",
            line.trim()
        ));
    }
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
