//! `qwenmk pack`: resolve a checkpoint (local directory or hub repo) and convert it to the packed
//! format, to `-o FILE` or to the cache file `generate` would use. The file carries the config,
//! the tokenizer, the chat template and the generation config, so `qwenmk generate -m FILE`
//! runs it anywhere with nothing beside it. The summary goes to stderr, the
//! output path alone to stdout, so `$(qwenmk pack)` is the path.
//!
//! [`pack_with_progress`] is shared with `generate`, which packs on first use.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use qwenmk_weights::{PackSummary, pack_safetensors_with};

use crate::cli::PackArgs;
use crate::hub::{ModelFiles, PackedSource, packed_cache_path};
use crate::prompt::{ChatTemplate, PromptTokenizer};

pub fn run(args: &PackArgs) -> Result<()> {
    // The output path first: a wrong -o must not cost a download.
    if let Some(path) = &args.output {
        check_output_file(path, "-o")?;
    }
    let (settings, files) = super::resolve_model(&args.model)?;
    check_model_files(&files)?;
    let output = match &args.output {
        Some(path) => path.clone(),
        None => {
            let path = packed_cache_path(&files, &settings)?;
            ensure_cache_dir(&settings.packed_dir)?;
            path
        }
    };

    let started = Instant::now();
    let summary = pack_with_progress(&files, &output)?;
    let elapsed = started.elapsed();

    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "packed {} ({} layers, hidden {}, vocab {})",
        files.dir.display(),
        summary.config.num_hidden_layers,
        summary.config.hidden_size,
        summary.config.vocab_size
    )?;
    writeln!(err, "  output:    {}", summary.path.display())?;
    writeln!(
        err,
        "  size:      {} ({} bytes of weights)",
        human_bytes(summary.file_bytes),
        summary.payload_bytes
    )?;
    writeln!(
        err,
        "  tensors:   {} packed from {} safetensors file(s){}",
        summary.tensors,
        summary.sources.len(),
        if summary.ignored_lm_head {
            " (the stored lm_head.weight copy of the tied embedding was left out)"
        } else {
            ""
        }
    )?;
    writeln!(
        err,
        "  carries:   config.json, {}",
        summary.attachments.join(", ")
    )?;
    writeln!(
        err,
        "  checksum:  xxh3-64 {:016x}",
        summary.payload_checksum
    )?;
    writeln!(
        err,
        "  time:      {:.2} s ({}/s)",
        elapsed.as_secs_f64(),
        human_bytes(rate(summary.file_bytes, elapsed))
    )?;
    writeln!(std::io::stdout().lock(), "{}", summary.path.display())
        .context("cannot write to stdout")?;
    Ok(())
}

/// Packs `files` into `output` with a progress bar on stderr (drawn only on a terminal),
/// carrying the model's tokenizer, chat template and generation config and a record of where the
/// weights came from. The packer writes a hidden partial file beside `output` and renames it
/// into place, so an existing file at `output` is replaced atomically, and a failed or
/// interrupted pack leaves nothing behind. `output`'s folder must exist.
pub fn pack_with_progress(files: &ModelFiles, output: &Path) -> Result<PackSummary> {
    let provenance = PackedSource::of(files)?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "packing {bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let summary = pack_safetensors_with(&files.dir, output, vec![provenance.attachment()], |p| {
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_done);
        bar.set_message(format!(
            "tensor {}/{} {}",
            p.tensors_done, p.tensors_total, p.tensor
        ));
    });
    bar.finish_and_clear();
    Ok(summary?)
}

/// A packed file must be able to run on its own: the checkpoint needs its tokenizer, and what
/// it carries must parse. Checked before packing, so a broken file costs no pack.
fn check_model_files(files: &ModelFiles) -> Result<()> {
    if !files.tokenizer.is_file() {
        bail!(
            "{} has no tokenizer.json: a packed file carries the tokenizer so that it runs on its \
             own; put the tokenizer.json published with the model beside config.json",
            files.dir.display()
        );
    }
    PromptTokenizer::load(&files.tokenizer)?;
    if files.tokenizer_config.is_file() {
        ChatTemplate::load(&files.tokenizer_config)?;
    }
    Ok(())
}

/// Creates qwenmk's cache folder (the default place of packed files) when it is missing, and
/// sweeps the partial files that killed runs left there.
pub fn ensure_cache_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create qwenmk's cache folder {}", dir.display()))?;
    super::cache::sweep_partials(dir);
    Ok(())
}

/// Checks, before any long work, that a file can be written at `path` (given with `flag`): its
/// folder exists and is writable, and the path is not a folder. The file itself is written
/// later, through a partial file and a rename.
pub fn check_output_file(path: &Path, flag: &str) -> Result<()> {
    if path.as_os_str().is_empty() {
        bail!("{flag} is empty; give the path of the file to write");
    }
    if path.is_dir() {
        bail!(
            "{flag} {} is a directory; give the path of the file to write, e.g. {}",
            path.display(),
            path.join("model.qwenmk").display()
        );
    }
    let folder = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        bail!(
            "{flag} {}: the folder {} does not exist; create it first (mkdir -p {}) or write \
             elsewhere",
            path.display(),
            folder.display(),
            folder.display()
        );
    }
    // Writable: create and remove a partial file there, as the real write will.
    let probe = qwenmk_weights::partial::PartialFile::create(path).with_context(|| {
        format!(
            "{flag} {}: cannot write in the folder {}",
            path.display(),
            folder.display()
        )
    })?;
    drop(probe);
    Ok(())
}

fn rate(bytes: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        (bytes as f64 / secs) as u64
    } else {
        0
    }
}

/// `1.19 GB`, `19.6 MB`: decimal units, as bandwidth figures elsewhere in qwenmk.
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}
