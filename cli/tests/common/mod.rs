//! Helpers for tests that run the real `qwenmk` binary: a hermetic environment (a temporary
//! `HF_HOME`, no network), fixture copies with real files, and stdout/stderr parsing.

#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// `fixtures/<name>` in the repository.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fixtures")
        .join(name)
}

/// A temporary `HF_HOME` for one test: the packed cache lands in `<dir>/qwenmk`, the hub cache in
/// `<dir>/hub`, and nothing of the user's cache is read or written.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("create a temporary HF_HOME"),
        }
    }

    pub fn hf_home(&self) -> &Path {
        self.dir.path()
    }

    /// `$HF_HOME/qwenmk`, where `generate` keeps packed files.
    pub fn packed_dir(&self) -> PathBuf {
        self.hf_home().join("qwenmk")
    }

    /// The packed files in the cache.
    pub fn packed_files(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.packed_dir()) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .map(|e| e.expect("read the packed cache").path())
            .filter(|p| p.extension().is_some_and(|e| e == "qwenmk"))
            .collect();
        files.sort();
        files
    }

    /// The only packed file in the cache.
    pub fn packed_file(&self) -> PathBuf {
        let files = self.packed_files();
        assert_eq!(files.len(), 1, "one packed file expected, found {files:?}");
        files[0].clone()
    }

    /// `qwenmk ARGS` in this sandbox: the hub variables that could point elsewhere are removed
    /// and the hub is offline, so a test can never download or touch the user's cache.
    pub fn qwenmk(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run the qwenmk binary")
    }

    /// The command [`Sandbox::qwenmk`] runs, to adjust (environment, stdio) or spawn.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_qwenmk"));
        for var in [
            "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE",
            "QWENMK_CACHE",
            "HF_TOKEN",
            "HUGGING_FACE_HUB_TOKEN",
            "HF_TOKEN_PATH",
            "HF_ENDPOINT",
        ] {
            command.env_remove(var);
        }
        command
            .env("HF_HOME", self.hf_home())
            .env("HF_HUB_OFFLINE", "1")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(args);
        command
    }

    /// A copy of `fixtures/<name>` with real files (the fixture's tokenizer files are symlinks),
    /// which a test may then damage.
    pub fn copy_fixture(&self, name: &str) -> PathBuf {
        let to = self.hf_home().join("models").join(name);
        std::fs::create_dir_all(&to).expect("create the fixture copy");
        for entry in std::fs::read_dir(fixture(name)).expect("read the fixture") {
            let from = entry.expect("read the fixture").path();
            // fs::copy follows symlinks: the copy holds the target's bytes.
            std::fs::copy(&from, to.join(from.file_name().unwrap())).expect("copy a fixture file");
        }
        to
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stderr (shown on failure).
pub fn assert_success(output: &Output) -> String {
    let err = stderr(output);
    assert!(
        output.status.success(),
        "qwenmk failed ({:?})\nstderr:\n{err}\nstdout:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(!err.contains("panicked"), "stderr: {err}");
    err
}

/// `generate --json` output: stdout is exactly one JSON document; returns its text and itself.
pub fn split_json(output: &Output) -> (String, Value) {
    let out = stdout(output);
    let json: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("stdout is one JSON document ({e}): {out:?}"));
    let text = json["text"].as_str().expect("a text field").to_owned();
    (text, json)
}

pub fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("an array of ids")
        .iter()
        .map(|v| v.as_u64().expect("an id") as u32)
        .collect()
}

/// One case of a fixture's `reference.json`.
pub struct ReferenceCase {
    pub name: String,
    pub raw: bool,
    pub prompt: String,
    pub system: Option<String>,
    pub think: bool,
    pub prompt_ids: Vec<u32>,
    pub generated_ids: Vec<u32>,
}

impl ReferenceCase {
    /// `generate` arguments that reproduce this case's prompt (the model and device not
    /// included).
    pub fn prompt_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.raw {
            args.push("--raw".to_owned());
        }
        if let Some(system) = &self.system {
            args.extend(["--system".to_owned(), system.clone()]);
        }
        if self.think {
            args.push("--think".to_owned());
        }
        args.push(self.prompt.clone());
        args
    }
}

/// The cases of `fixtures/<checkpoint>/reference.json`.
pub fn reference_cases(checkpoint: &str) -> Vec<ReferenceCase> {
    let text = std::fs::read_to_string(fixture(checkpoint).join("reference.json"))
        .expect("read reference.json");
    let json: Value = serde_json::from_str(&text).expect("reference.json is JSON");
    json["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|case| {
            let mode = case["mode"].as_str().expect("mode");
            assert!(mode == "raw" || mode == "chat", "unknown mode {mode}");
            ReferenceCase {
                name: case["name"].as_str().expect("name").to_owned(),
                raw: mode == "raw",
                prompt: case["prompt"].as_str().expect("prompt").to_owned(),
                system: case["system"].as_str().map(str::to_owned),
                think: case["think"].as_bool().expect("think"),
                prompt_ids: ids(&case["prompt_ids"]),
                generated_ids: ids(&case["generated_ids"]),
            }
        })
        .collect()
}

pub fn reference_case(checkpoint: &str, name: &str) -> ReferenceCase {
    reference_cases(checkpoint)
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name} in {checkpoint}/reference.json"))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ lives in the repository root")
        .to_path_buf()
}

/// A directory holding the virtual GPU's stand-in driver as `libcuda.so`, built (release) once
/// per test process with the repository's toolchain. `cargo xtask vgpu` uses the same build.
pub fn vgpu_lib_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = repo_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "--release", "--quiet", "-p", "qwenmk-vgpu-driver"])
            .status()
            .expect("run cargo to build the virtual GPU driver");
        assert!(status.success(), "building qwenmk-vgpu-driver failed");
        let built = target.join("release").join("libqwenmk_vgpu_driver.so");
        // One directory per test process: test binaries never race on the copy.
        let dir = target
            .join("vgpu")
            .join(format!("test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the driver directory");
        std::fs::copy(&built, dir.join("libcuda.so")).expect("copy the driver as libcuda.so");
        dir
    })
    .clone()
}

/// `LD_LIBRARY_PATH` (and `PTXAS`, for the real register counts) that make cudarc load the
/// virtual GPU.
pub fn vgpu_env() -> Vec<(String, std::ffi::OsString)> {
    let mut env = vec![(
        "LD_LIBRARY_PATH".to_owned(),
        vgpu_lib_dir().into_os_string(),
    )];
    if std::env::var_os("PTXAS").is_none()
        && let Some(p) = qwenmk::ptxas::find_ptxas()
    {
        env.push(("PTXAS".to_owned(), p.into_os_string()));
    }
    env
}

impl Sandbox {
    /// `qwenmk ARGS` on the virtual GPU, with extra driver settings (`QWENMK_VGPU_*`).
    pub fn qwenmk_vgpu(&self, args: &[&str], settings: &[(&str, &str)]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_qwenmk"));
        for var in [
            "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE",
            "QWENMK_CACHE",
            "HF_TOKEN",
            "HF_ENDPOINT",
            "QWENMK_VGPU_SMS",
            "QWENMK_VGPU_WEAK",
            "QWENMK_VGPU_FAULT",
            "QWENMK_VGPU_CC",
            "QWENMK_VGPU_TIMING",
        ] {
            command.env_remove(var);
        }
        command
            .env("HF_HOME", self.hf_home())
            .env("HF_HUB_OFFLINE", "1")
            .envs(vgpu_env())
            .envs(settings.iter().copied())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .expect("run the qwenmk binary")
    }
}

/// Runs the calling test again in a child process on the virtual GPU (the driver library must
/// be on the library path when the process starts). Returns `true` in the parent, after
/// checking that the child passed; `false` in the child, which then runs the test's body.
pub fn rerun_on_vgpu(test: &str, settings: &[(&str, &str)]) -> bool {
    const MARK: &str = "QWENMK_TEST_ON_VGPU";
    if std::env::var(MARK).as_deref() == Ok(test) {
        return false;
    }
    let output = Command::new(std::env::current_exe().expect("the test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(MARK, test)
        .envs(vgpu_env())
        .envs(settings.iter().copied())
        .output()
        .expect("run the test again on the virtual GPU");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && text.contains("1 passed"),
        "{test} on the virtual GPU:\n{text}"
    );
    true
}
