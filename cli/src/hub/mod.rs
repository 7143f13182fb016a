//! Where a model comes from: `--model` names a local directory or a Hugging Face hub repo.
//!
//! A hub repo lives in the standard Hugging Face cache (shared with Python's `huggingface_hub`):
//! `<hub cache>/models--{org}--{name}/{blobs, snapshots/<commit>, refs/<revision>}`.
//! Resolution is cache-first, like huggingface_hub's `hf_hub_download`: a revision whose snapshot is complete in the
//! cache is used without touching the network (to pick up a newer commit of a branch, pass
//! `--revision <commit>` or delete `refs/<branch>`). Otherwise the files are downloaded, unless
//! `--offline` or `HF_HUB_OFFLINE=1`, in which case the error names the path that was searched.
//!
//! The packed file that `generate` builds lives beside the hub cache; see [`packed_cache_path`].

mod cache;
mod download;
mod error;
mod files;
pub mod http;
mod packed;
mod settings;

use std::path::{Path, PathBuf};

pub use cache::{is_commit_hash, repo_folder};
pub use error::HubError;
pub use files::{ModelFiles, Origin};
pub use packed::{
    PACKED_EXTENSION, PackedSource, SOURCE_ATTACHMENT, packed_cache_path,
    packed_cache_path_for_version, source_key,
};
pub use settings::{DEFAULT_ENDPOINT, HubSettings, PACKED_DIR_NAME};

/// The repo `--model` defaults to.
pub const DEFAULT_REPO: &str = "Qwen/Qwen3-0.6B";
/// The revision `--revision` defaults to.
pub const DEFAULT_REVISION: &str = "main";

/// What `--model` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A checkpoint directory on disk.
    Local(PathBuf),
    /// A hub repo at a branch, tag or commit.
    Hub { repo_id: String, revision: String },
    /// A packed file (`qwenmk pack -o FILE`), which carries everything a run needs.
    Packed(PathBuf),
}

impl ModelSource {
    /// Interprets `--model`: an existing directory wins (as in transformers' `from_pretrained`),
    /// then an existing file that starts like a packed file, then anything shaped like a path is
    /// a missing directory, then a valid repo id is a hub repo. `revision` only applies to hub
    /// repos.
    pub fn parse(spec: &str, revision: &str) -> Result<Self, HubError> {
        let path = Path::new(spec);
        if path.is_dir() {
            return Ok(Self::Local(path.to_path_buf()));
        }
        if path.is_file() {
            return if starts_like_packed(path) {
                Ok(Self::Packed(path.to_path_buf()))
            } else {
                Err(HubError::LocalIsFile {
                    path: path.to_path_buf(),
                })
            };
        }
        if looks_like_path(spec) {
            return Err(HubError::LocalDirMissing {
                path: path.to_path_buf(),
            });
        }
        validate_repo_id(spec).map_err(|why| HubError::InvalidSpec {
            spec: spec.to_owned(),
            why,
        })?;
        validate_revision(revision).map_err(|why| HubError::InvalidSpec {
            spec: spec.to_owned(),
            why: format!("--revision {revision:?}: {why}"),
        })?;
        Ok(Self::Hub {
            repo_id: spec.to_owned(),
            revision: revision.to_owned(),
        })
    }

    /// Parses `spec` and finds (or downloads) its files. `offline` is the `--offline` flag;
    /// `HF_HUB_OFFLINE` in `settings` has the same effect.
    pub fn resolve(
        spec: &str,
        revision: &str,
        offline: bool,
        settings: &HubSettings,
    ) -> Result<ModelFiles, HubError> {
        Self::parse(spec, revision)?.fetch(offline, settings)
    }

    /// Finds the files of this source, downloading a hub repo's when allowed.
    pub fn fetch(&self, offline: bool, settings: &HubSettings) -> Result<ModelFiles, HubError> {
        match self {
            Self::Local(dir) => ModelFiles::from_dir(dir, Origin::Local),
            Self::Packed(path) => Err(HubError::AlreadyPacked { path: path.clone() }),
            Self::Hub { repo_id, revision } => {
                match cache::cached_model(&settings.hub_cache, repo_id, revision) {
                    Ok(files) => Ok(files),
                    Err(miss) if offline || settings.offline => Err(HubError::NotCached {
                        repo_id: repo_id.clone(),
                        revision: revision.clone(),
                        searched: miss.searched,
                        cache: format!(
                            "{}, {}",
                            settings.hub_cache.display(),
                            settings.hub_cache_origin
                        ),
                        why: miss.why,
                    }),
                    Err(_) => download::download(settings, repo_id, revision),
                }
            }
        }
    }
}

/// Whether the file starts with the packed format's magic. Any version counts: the loader then
/// says what is wrong with an old or damaged file.
fn starts_like_packed(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == qwenmk_weights::format::MAGIC)
}

/// Relative and absolute paths, home-relative paths, Windows paths and anything with more than
/// one `/` cannot be repo ids, so a user who meant a directory hears that it is missing.
fn looks_like_path(spec: &str) -> bool {
    spec.starts_with(['.', '/', '~'])
        || spec.contains('\\')
        || spec.matches('/').count() > 1
        || spec.ends_with('/')
        || Path::new(spec).is_absolute()
}

/// The hub's rules for repo ids (`huggingface_hub.utils.validate_repo_id`): `name` or
/// `namespace/name` of letters, digits, `-`, `_`, `.`, at most 96 characters, no `--` or `..`,
/// not starting or ending with `-` or `.`, not ending with `.git`.
fn validate_repo_id(spec: &str) -> Result<(), String> {
    if spec.is_empty() {
        return Err("it is empty".into());
    }
    if spec.len() > 96 {
        return Err("a repo id has at most 96 characters".into());
    }
    for part in spec.split('/') {
        if part.is_empty() {
            return Err("a repo id is `name` or `namespace/name`".into());
        }
        if let Some(c) = part
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(format!("{c:?} is not allowed in a repo id"));
        }
        if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
            return Err("a part of a repo id cannot start or end with '-' or '.'".into());
        }
    }
    if spec.contains("--") || spec.contains("..") {
        return Err("'--' and '..' are not allowed in a repo id".into());
    }
    if spec.ends_with(".git") {
        return Err("a repo id cannot end with .git".into());
    }
    Ok(())
}

/// A revision becomes a path under `refs/` in the cache, so it must stay a relative path of
/// plain names (branch names like `refs/pr/1` keep their slashes).
fn validate_revision(revision: &str) -> Result<(), String> {
    if revision.is_empty() {
        return Err("it is empty".into());
    }
    if revision.contains('\\') || revision.starts_with('/') || revision.ends_with('/') {
        return Err("a revision is a branch, tag or commit name".into());
    }
    if revision
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err("a revision cannot contain empty, '.' or '..' parts".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
