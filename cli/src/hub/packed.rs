//! Where `generate` keeps the packed file it builds on first use, and the key that says whether
//! an existing packed file still matches its source.
//!
//! Path: `<packed dir>/<name>-<key>.qwenmk`, the packed dir being `$QWENMK_CACHE` or
//! `$HF_HOME/qwenmk` (see [`HubSettings`]). `<name>` is for humans (`Qwen--Qwen3-0.6B`);
//! `<key>` is a 128-bit XXH3 of the source's identity and the packed format version, so a new
//! commit, edited local files or a new format all lead to a new file instead of a stale one.
//!
//! The identity of a source:
//! - hub snapshot: repo id, commit hash and the weight file names. Snapshot files are
//!   content-addressed and immutable, so the commit pins every byte; nothing needs hashing.
//! - local directory: its canonical path; the full bytes of config.json (small, and it decides
//!   the layout) and of the tokenizer, chat template and generation config files the packed
//!   file carries; and for each weight file (and the shard index) its name, size, modification
//!   time and the first and last 64 KiB. Hashing all 1.2 GB would cost about a second of cold-disk
//!   reads on every start, longer than a short generation; size + mtime catch edits and copies,
//!   and the sampled bytes (the safetensors header with every tensor's offset, and the tail)
//!   catch a replacement that kept the size and timestamp.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

use super::files::{ModelFiles, Origin};
use super::{HubError, HubSettings};

/// Extension of packed files.
pub const PACKED_EXTENSION: &str = "qwenmk";

/// The attached file in which a packed file records where its weights came from, so that
/// `qwenmk ls` can show it and `qwenmk rm --stale` can tell whether the source has changed.
pub const SOURCE_ATTACHMENT: &str = "qwenmk-source.json";

/// Where a packed file's weights came from, as recorded in [`SOURCE_ATTACHMENT`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PackedSource {
    /// A hub snapshot.
    Hub {
        repo_id: String,
        revision: String,
        commit: String,
    },
    /// A local checkpoint directory and its [`source_key`] when packed.
    Local { dir: PathBuf, key: String },
    /// Random weights (`qwenmk bench --synthetic`).
    Synthetic { label: String, seed: u64 },
}

impl PackedSource {
    /// The provenance of `files`, with the key of their current contents.
    pub fn of(files: &ModelFiles) -> Result<Self, HubError> {
        Ok(match &files.origin {
            Origin::Hub {
                repo_id,
                revision,
                commit,
            } => PackedSource::Hub {
                repo_id: repo_id.clone(),
                revision: revision.clone(),
                commit: commit.clone(),
            },
            Origin::Local => PackedSource::Local {
                dir: files
                    .dir
                    .canonicalize()
                    .map_err(|source| io(&files.dir, source))?,
                key: source_key(files, qwenmk_weights::FORMAT_VERSION)?,
            },
        })
    }

    /// As an attached file for the packer.
    pub fn attachment(&self) -> qwenmk_weights::Attachment {
        qwenmk_weights::Attachment {
            name: SOURCE_ATTACHMENT.to_owned(),
            // Serialising strings and numbers cannot fail.
            bytes: serde_json::to_vec_pretty(self).unwrap_or_default(),
        }
    }

    /// Reads it back from an attached file's bytes; `None` when absent or unreadable.
    pub fn from_attachment(bytes: Option<&[u8]>) -> Option<Self> {
        serde_json::from_slice(bytes?).ok()
    }

    /// One line for `qwenmk ls`: `Qwen/Qwen3-0.6B@c1e4e6a2b1c0 (main)`, a directory, or
    /// `random Qwen3-0.6B, seed 0`.
    pub fn describe(&self) -> String {
        match self {
            PackedSource::Hub {
                repo_id,
                revision,
                commit,
            } => {
                let short = &commit[..commit.len().min(12)];
                if revision == commit {
                    format!("{repo_id}@{short}")
                } else {
                    format!("{repo_id}@{short} ({revision})")
                }
            }
            PackedSource::Local { dir, .. } => dir.display().to_string(),
            PackedSource::Synthetic { label, seed } => format!("random {label}, seed {seed}"),
        }
    }
}

/// Bytes sampled at each end of a local weight file.
const SAMPLE_BYTES: u64 = 64 * 1024;

/// The packed file for `files` in qwenmk's cache (it may not exist yet). Uses the packed format
/// version of `qwenmk_weights`, so bumping that version invalidates every cached file.
pub fn packed_cache_path(files: &ModelFiles, settings: &HubSettings) -> Result<PathBuf, HubError> {
    packed_cache_path_for_version(files, settings, qwenmk_weights::FORMAT_VERSION)
}

/// [`packed_cache_path`] for an explicit format version.
pub fn packed_cache_path_for_version(
    files: &ModelFiles,
    settings: &HubSettings,
    format_version: u32,
) -> Result<PathBuf, HubError> {
    let key = source_key(files, format_version)?;
    let name = format!("{}-{key}.{PACKED_EXTENSION}", readable_name(files));
    Ok(settings.packed_dir.join(name))
}

/// 32 hex digits identifying the source files and the packed format version.
pub fn source_key(files: &ModelFiles, format_version: u32) -> Result<String, HubError> {
    let mut h = Fields(Xxh3::new());
    h.text("qwenmk packed source v1");
    h.u64(u64::from(format_version));
    match &files.origin {
        Origin::Hub {
            repo_id, commit, ..
        } => {
            h.text("hub");
            h.text(repo_id);
            h.text(commit);
            for path in &files.weights {
                h.text(&file_name(path));
            }
        }
        Origin::Local => {
            h.text("local");
            let dir = files
                .dir
                .canonicalize()
                .map_err(|source| io(&files.dir, source))?;
            h.text(&dir.to_string_lossy());
            let config =
                std::fs::read(&files.config).map_err(|source| io(&files.config, source))?;
            h.bytes(&config);
            for path in files.weights.iter().chain(&files.weights_index) {
                h.text(&file_name(path));
                file_identity(&mut h, path)?;
            }
            // The packed file carries these, so they are part of what it was made from.
            for name in qwenmk_weights::pack::MODEL_FILES {
                let path = files.dir.join(name);
                match std::fs::read(&path) {
                    Ok(bytes) => {
                        h.text(name);
                        h.bytes(&bytes);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(io(&path, source)),
                }
            }
        }
    }
    Ok(format!("{:032x}", h.0.digest128()))
}

/// Size, mtime and sampled bytes of a local file.
fn file_identity(h: &mut Fields, path: &Path) -> Result<(), HubError> {
    let mut file = std::fs::File::open(path).map_err(|source| io(path, source))?;
    let meta = file.metadata().map_err(|source| io(path, source))?;
    h.u64(meta.len());
    // Some filesystems have no mtime; the size and samples still identify the file.
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    h.u64(mtime.map_or(0, |d| d.as_secs()));
    h.u64(mtime.map_or(0, |d| u64::from(d.subsec_nanos())));

    let head_len = meta.len().min(SAMPLE_BYTES);
    let mut sample = vec![0u8; head_len as usize];
    file.read_exact(&mut sample)
        .map_err(|source| io(path, source))?;
    h.bytes(&sample);
    let tail_start = meta.len().saturating_sub(SAMPLE_BYTES).max(head_len);
    file.seek(SeekFrom::Start(tail_start))
        .map_err(|source| io(path, source))?;
    sample.clear();
    file.read_to_end(&mut sample)
        .map_err(|source| io(path, source))?;
    h.bytes(&sample);
    Ok(())
}

/// A hasher fed with length-prefixed fields, so ("ab","c") and ("a","bc") differ.
struct Fields(Xxh3);

impl Fields {
    fn bytes(&mut self, bytes: &[u8]) {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }
    fn text(&mut self, text: &str) {
        self.bytes(text.as_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.0.update(&value.to_le_bytes());
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `Qwen--Qwen3-0.6B` for a hub repo, the directory name for a local one; only characters that
/// are safe in a file name on every OS.
fn readable_name(files: &ModelFiles) -> String {
    let raw = match &files.origin {
        Origin::Hub { repo_id, .. } => repo_id.replace('/', "--"),
        Origin::Local => {
            let dir = files
                .dir
                .canonicalize()
                .unwrap_or_else(|_| files.dir.clone());
            file_name(&dir)
        }
    };
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if clean.is_empty() {
        "model".into()
    } else {
        clean
    }
}

fn io(path: &Path, source: std::io::Error) -> HubError {
    HubError::Io {
        path: path.to_path_buf(),
        source,
    }
}
