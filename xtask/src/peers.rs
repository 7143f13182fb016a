//! `cargo xtask peers`: decode speed of Hugging Face transformers (eager, and static cache +
//! torch.compile) on a CUDA GPU, as JSON for `qwenmk bench --peers`.
//!
//! The work is done by `xtask/peers/hf_peers.py`; this command finds the Python, passes the
//! options on, and fails with the script's own sentence (for example "peers need a CUDA GPU")
//! when it cannot run.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

pub const SUMMARY: &str =
    "measure HF transformers eager and torch.compile decode on the GPU (for bench --peers)";

const HELP: &str = "\
usage: cargo xtask peers [--python PATH] [--depths D,D,...] [-n N] [-r R] [--warmup N]
                         [--seed S] [--config FILE] [--peers hf_eager,hf_compile] [--out FILE]

Runs xtask/peers/hf_peers.py on a CUDA GPU: one Qwen3 model with random bf16 weights of the
config's shapes (Qwen3-0.6B's by default; not qwenmk's --synthetic values, which decode speed
does not depend on), decoded greedily at each KV-cache depth by
  hf_eager    transformers without compilation (DynamicCache, sdpa attention)
  hf_compile  a StaticCache and the decode step under torch.compile(mode=\"reduce-overhead\")
Each run decodes N tokens from the same depth, timed with CUDA events, R times after a warm-up.
Then: qwenmk bench --synthetic --device gpu --peers FILE

options:
  --python PATH   Python with torch (CUDA build) and transformers
                  (default: $QWENMK_PYTHON, else python3)
  --depths LIST   default 0,128,512,1024,4096,8192,16384,32768 (as qwenmk bench on the GPU)
  -n N            tokens per timed run (default 128)
  -r R            timed runs per depth (default 5)
  --warmup N      untimed steps per depth (default 16)
  --seed S        seed of the random weights and fill tokens (default 0)
  --config FILE   config.json of the model (default fixtures/qwen3-0.6b/config.json)
  --peers LIST    which peers to run (default hf_eager,hf_compile)
  --out FILE      where to write the JSON (default peers.json)";

/// Options passed on to the script as they are.
const PASSED_ON: &[&str] = &[
    "--depths", "-n", "-r", "--warmup", "--seed", "--config", "--peers", "--out",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

pub fn script() -> PathBuf {
    repo_root().join("xtask/peers/hf_peers.py")
}

/// The interpreter and the script's arguments, from the command line.
fn parse(args: &[String]) -> anyhow::Result<Option<(OsString, Vec<String>)>> {
    let mut python = None;
    let mut passed = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        match a.as_str() {
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(None);
            }
            "--python" => python = Some(OsString::from(value("--python")?)),
            flag if PASSED_ON.contains(&flag) => {
                let v = value(flag)?;
                passed.extend([flag.to_owned(), v]);
            }
            other => bail!("unknown option `{other}`\n\n{HELP}"),
        }
    }
    let python = python
        .or_else(|| std::env::var_os("QWENMK_PYTHON").filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "python3".into());
    Ok(Some((python, passed)))
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let Some((python, passed)) = parse(args)? else {
        return Ok(());
    };
    let shown = python.to_string_lossy().into_owned();
    let status = Command::new(&python)
        .arg(script())
        .args(&passed)
        .status()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "Python interpreter `{shown}` not found; the peers need Python 3 with torch \
                 (CUDA) and transformers: give --python PATH or set QWENMK_PYTHON"
            ),
            _ => anyhow::Error::new(e).context(format!("cannot run `{shown}`")),
        })?;
    if !status.success() {
        // The script has said why on stderr.
        bail!("the peer measurement did not run ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_passed_on_and_unknown_ones_refused() {
        let args: Vec<String> = [
            "--python", "py", "-n", "64", "--depths", "0,128", "--out", "p.json",
        ]
        .map(String::from)
        .to_vec();
        let (python, passed) = parse(&args).unwrap().unwrap();
        assert_eq!(python, "py");
        assert_eq!(passed, ["-n", "64", "--depths", "0,128", "--out", "p.json"]);
        assert!(parse(&["--bogus".to_owned()]).is_err());
        assert!(parse(&["-n".to_owned()]).is_err());
    }

    /// Without CUDA the script refuses politely. A stub `torch` whose CUDA is unavailable
    /// stands in for a CPU-only PyTorch; skipped where there is no python3.
    #[test]
    fn the_script_refuses_without_cuda() {
        let Ok(version) = Command::new("python3").arg("--version").output() else {
            eprintln!("no python3: skipped");
            return;
        };
        assert!(version.status.success());
        let stubs = std::env::temp_dir().join(format!("qwenmk-peers-stubs-{}", std::process::id()));
        std::fs::create_dir_all(stubs.join("torch")).unwrap();
        std::fs::create_dir_all(stubs.join("transformers")).unwrap();
        std::fs::write(
            stubs.join("torch/__init__.py"),
            "__version__ = '0.0-stub'\n\
             class version:\n    cuda = None\n\
             class cuda:\n    @staticmethod\n    def is_available():\n        return False\n",
        )
        .unwrap();
        std::fs::write(
            stubs.join("transformers/__init__.py"),
            "__version__ = '0.0-stub'\n",
        )
        .unwrap();
        let out = Command::new("python3")
            .arg(script())
            .args(["--out", "/nonexistent/peers.json"])
            .env("PYTHONPATH", &stubs)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&stubs).ok();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("peers need a CUDA GPU"), "{err}");
        assert!(!err.contains("Traceback"), "{err}");
    }
}
