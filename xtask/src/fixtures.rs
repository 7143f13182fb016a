//! `cargo xtask fixtures`: regenerate the reference fixtures with Hugging Face transformers.
//!
//! The work is done by `xtask/fixtures/make_fixtures.py`; this command finds a Python that
//! can run it, runs it, and with `--check` regenerates into a scratch directory and
//! compares the result byte for byte with the committed fixtures.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

pub const SUMMARY: &str =
    "regenerate fixtures/tiny-* and fixtures/chat-template-cases.json with transformers";

const HELP: &str = "\
usage: cargo xtask fixtures [--python PATH] [--only checkpoints|chat] [--out DIR | --check]

Runs xtask/fixtures/make_fixtures.py, which builds the tiny random Qwen3 checkpoints
(fixtures/tiny-gqa2, fixtures/tiny-gqa4) with their reference.json, and
fixtures/chat-template-cases.json. Takes about a minute of CPU.

options:
  --python PATH   Python interpreter with torch, transformers 5.x, safetensors and numpy
                  (default: $QWENMK_PYTHON, else python3)
  --only WHAT     build only `checkpoints` (tiny-*) or only `chat` (chat-template-cases.json)
  --out DIR       write into DIR instead of the repository's fixtures/
  --check         write into a scratch directory and compare with the committed fixtures
                  byte for byte (fails if anything differs); leaves fixtures/ untouched";

const INSTALL_HINT: &str = "install them with `python3 -m pip install torch transformers safetensors numpy` \
(transformers 5.x; the CPU build of torch is enough), or point --python or QWENMK_PYTHON at a \
Python that has them";

/// Files the script writes, relative to the fixtures directory, per `--only` selection.
const CHECKPOINT_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "reference.json",
    "tokenizer.json",
    "tokenizer_config.json",
];
const CHECKPOINTS: &[&str] = &["tiny-gqa2", "tiny-gqa4"];
const CHAT_FILE: &str = "chat-template-cases.json";

#[derive(Default)]
struct Options {
    python: Option<OsString>,
    only: Option<String>,
    out: Option<PathBuf>,
    check: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Option<Options>> {
    let mut o = Options::default();
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
            "--python" => o.python = Some(value("--python")?.into()),
            "--out" => o.out = Some(value("--out")?.into()),
            "--only" => {
                let v = value("--only")?;
                if v != "checkpoints" && v != "chat" {
                    bail!("--only takes `checkpoints` or `chat`, not `{v}`");
                }
                o.only = Some(v);
            }
            "--check" => o.check = true,
            other => bail!("unknown option `{other}`\n\n{HELP}"),
        }
    }
    if o.check && o.out.is_some() {
        bail!("--check and --out cannot be combined");
    }
    Ok(Some(o))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The interpreter to use: `--python`, else `$QWENMK_PYTHON`, else `python3`.
fn python(o: &Options) -> OsString {
    o.python
        .clone()
        .or_else(|| std::env::var_os("QWENMK_PYTHON").filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "python3".into())
}

/// Fails with an install hint unless `python` can import everything the script needs.
fn preflight(python: &OsString) -> anyhow::Result<()> {
    let shown = python.to_string_lossy();
    let probe = "import torch, transformers, safetensors, numpy; \
                 print(f'torch {torch.__version__}, transformers {transformers.__version__}')";
    let out = match Command::new(python).args(["-c", probe]).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "Python interpreter `{shown}` not found. The fixtures need Python 3 with torch, \
             transformers, safetensors and numpy: {INSTALL_HINT}."
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot run `{shown}`")),
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        bail!(
            "`{shown}` cannot import torch, transformers, safetensors and numpy ({last}): \
             {INSTALL_HINT}."
        );
    }
    eprintln!(
        "xtask fixtures: using {shown} ({})",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(())
}

fn run_script(python: &OsString, out: &Path, only: Option<&str>) -> anyhow::Result<()> {
    let script = repo_root().join("xtask/fixtures/make_fixtures.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg("--out").arg(out);
    if let Some(w) = only {
        cmd.args(["--only", w]);
    }
    // Reproducibility: no hash randomisation, no stray thread-count influence.
    cmd.env("PYTHONHASHSEED", "0").env("OMP_NUM_THREADS", "1");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    Ok(())
}

/// The files (relative to a fixtures directory) that a run with `only` produces.
fn produced_files(only: Option<&str>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if only != Some("chat") {
        for c in CHECKPOINTS {
            files.extend(CHECKPOINT_FILES.iter().map(|f| Path::new(c).join(f)));
        }
    }
    if only != Some("checkpoints") {
        files.push(CHAT_FILE.into());
    }
    files
}

/// Compares one produced file with its committed counterpart: symlinks by target, other
/// files by content. Returns a description of the difference, if any.
fn differs(new: &Path, old: &Path) -> anyhow::Result<Option<String>> {
    let new_meta = std::fs::symlink_metadata(new)
        .with_context(|| format!("{} was not produced", new.display()))?;
    let Ok(old_meta) = std::fs::symlink_metadata(old) else {
        return Ok(Some("missing from the committed fixtures".into()));
    };
    if new_meta.file_type().is_symlink() || old_meta.file_type().is_symlink() {
        let (a, b) = (std::fs::read_link(new).ok(), std::fs::read_link(old).ok());
        return Ok((a != b).then(|| format!("symlink target {b:?}, regenerated {a:?}")));
    }
    let (a, b) = (std::fs::read(new)?, std::fs::read(old)?);
    if a == b {
        return Ok(None);
    }
    let at = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    Ok(Some(format!(
        "content differs ({} bytes committed, {} regenerated, first difference at byte {at})",
        b.len(),
        a.len()
    )))
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let Some(o) = parse(args)? else { return Ok(()) };
    let py = python(&o);
    preflight(&py)?;
    let fixtures = repo_root().join("fixtures");

    if !o.check {
        let out = o.out.clone().unwrap_or(fixtures);
        return run_script(&py, &out, o.only.as_deref());
    }

    let scratch =
        std::env::temp_dir().join(format!("qwenmk-fixtures-check-{}", std::process::id()));
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)?;
    }
    std::fs::create_dir_all(&scratch)?;
    let result = (|| {
        run_script(&py, &scratch, o.only.as_deref())?;
        let mut bad = Vec::new();
        for f in produced_files(o.only.as_deref()) {
            if let Some(why) = differs(&scratch.join(&f), &fixtures.join(&f))? {
                bad.push(format!("  fixtures/{}: {why}", f.display()));
            }
        }
        if !bad.is_empty() {
            bail!(
                "regenerated fixtures differ from the committed ones (library versions differ, \
                 or the script changed; regenerate with `cargo xtask fixtures`):\n{}",
                bad.join("\n")
            );
        }
        eprintln!("xtask fixtures --check: regenerated files are identical to the committed ones");
        Ok(())
    })();
    std::fs::remove_dir_all(&scratch).ok();
    result
}
