//! `qwenmk pack`: resolve a checkpoint (local directory or hub repo) and convert it to the packed
//! format, to `-o FILE` or to the cache file `generate` would use. The summary goes to stderr, the
//! output path alone to stdout, so `$(qwenmk pack)` is the path.
//!
//! [`pack_with_progress`] is shared with `generate`, which packs on first use.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use qwenmk_weights::{PackSummary, pack_safetensors};

use crate::cli::PackArgs;
use crate::hub::{ModelFiles, packed_cache_path};

pub fn run(args: &PackArgs) -> Result<()> {
    let (settings, files) = super::resolve_model(&args.model)?;
    let output = match &args.output {
        Some(path) => path.clone(),
        None => packed_cache_path(&files, &settings)?,
    };
    check_output_path(&output)?;

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

/// Packs `files` into `output` with a progress bar on stderr (drawn only on a terminal). The
/// packer writes a hidden temporary file beside `output` and renames it into place, so an
/// existing file at `output` is replaced atomically and a failed pack leaves nothing behind.
/// Creates `output`'s directory when it is missing.
pub fn pack_with_progress(files: &ModelFiles, output: &Path) -> Result<PackSummary> {
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "packing {bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let summary = pack_safetensors(&files.dir, output, |p| {
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

/// Refuses an output path that is a directory before any work: the packer would write the whole
/// file and only fail at the final rename.
fn check_output_path(output: &Path) -> Result<()> {
    if output.is_dir() {
        bail!(
            "-o {} is a directory; give the path of the file to write, e.g. {}",
            output.display(),
            output.join("model.qwenmk").display()
        );
    }
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
