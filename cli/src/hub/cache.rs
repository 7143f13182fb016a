//! Reading the Hugging Face hub cache without the network:
//! `<hub cache>/models--{org}--{name}/refs/<revision>` holds a commit hash, and
//! `snapshots/<commit>/` holds the files (symlinks into `blobs/`).

use std::path::{Path, PathBuf};

use super::files::{self, ModelFiles, Origin};

/// `Qwen/Qwen3-0.6B` → `models--Qwen--Qwen3-0.6B`.
pub fn repo_folder(repo_id: &str) -> String {
    format!("models--{}", repo_id.replace('/', "--"))
}

/// A 40-hex-digit revision names a commit directly (no ref file is written for it).
pub fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Why a cache lookup failed: the most specific path that was missing, and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMiss {
    pub searched: PathBuf,
    pub why: String,
}

/// The commit a revision points to in the cache, and its snapshot directory.
pub fn snapshot_dir(
    hub_cache: &Path,
    repo_id: &str,
    revision: &str,
) -> Result<(String, PathBuf), CacheMiss> {
    let repo_dir = hub_cache.join(repo_folder(repo_id));
    if !repo_dir.is_dir() {
        return Err(CacheMiss {
            searched: repo_dir,
            why: " (never downloaded)".into(),
        });
    }
    let snapshots = repo_dir.join("snapshots");
    if is_commit_hash(revision) {
        let dir = snapshots.join(revision);
        if dir.is_dir() {
            return Ok((revision.to_owned(), dir));
        }
    }
    // Branch and tag names may contain '/', which the cache keeps as subdirectories of refs/.
    let ref_file = repo_dir.join("refs").join(revision);
    let commit = match std::fs::read_to_string(&ref_file) {
        Ok(text) => text.trim().to_owned(),
        Err(_) => {
            return Err(CacheMiss {
                searched: ref_file,
                why: format!(" (revision {revision:?} was never downloaded)"),
            });
        }
    };
    if commit.is_empty() || commit.contains(['/', '\\']) || commit == ".." {
        return Err(CacheMiss {
            searched: ref_file,
            why: " (the ref file is corrupt)".into(),
        });
    }
    let dir = snapshots.join(&commit);
    if !dir.is_dir() {
        return Err(CacheMiss {
            searched: dir,
            why: " (the snapshot is missing)".into(),
        });
    }
    Ok((commit, dir))
}

/// The model's files from the cache, if every required one is there.
pub fn cached_model(
    hub_cache: &Path,
    repo_id: &str,
    revision: &str,
) -> Result<ModelFiles, CacheMiss> {
    let (commit, dir) = snapshot_dir(hub_cache, repo_id, revision)?;
    for name in files::REQUIRED_FILES {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(CacheMiss {
                searched: path,
                why: " (download incomplete)".into(),
            });
        }
    }
    let incomplete = |why: String| CacheMiss {
        searched: dir.join(files::SINGLE_WEIGHTS),
        why,
    };
    match files::weights_in(&dir) {
        Ok(Some(_)) => {}
        Ok(None) => return Err(incomplete(" (weights not downloaded)".into())),
        Err(e) => return Err(incomplete(format!(" ({e})"))),
    }
    let origin = Origin::Hub {
        repo_id: repo_id.to_owned(),
        revision: revision.to_owned(),
        commit,
    };
    ModelFiles::from_dir(&dir, origin).map_err(|e| CacheMiss {
        searched: dir.clone(),
        why: format!(" ({e})"),
    })
}
