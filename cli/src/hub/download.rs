//! Online resolution: download a hub repo's files into the standard cache with hf-hub's blocking
//! client, one progress bar per file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use indicatif::{MultiProgress, ProgressBar};

use super::cache::{is_commit_hash, repo_folder};
use super::files::{self, ModelFiles, Origin};
use super::{HubError, HubSettings};

/// Downloads what is missing of `repo_id` at `revision` and returns the snapshot's files.
pub fn download(
    settings: &HubSettings,
    repo_id: &str,
    revision: &str,
) -> Result<ModelFiles, HubError> {
    let ctx = Context {
        settings,
        repo_id,
        revision,
    };
    let api = ApiBuilder::from_cache(Cache::new(settings.hub_cache.clone()))
        .with_endpoint(settings.endpoint.clone())
        .with_token(settings.token.clone())
        .with_progress(false)
        .with_user_agent("qwenmk", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| ctx.classify(e, "the hub client"))?;

    // One request resolves the revision to a commit and lists the files.
    let info = api
        .repo(Repo::with_revision(
            repo_id.to_owned(),
            RepoType::Model,
            revision.to_owned(),
        ))
        .info()
        .map_err(|e| ctx.classify(e, &format!("{repo_id} at revision {revision}")))?;
    if !is_commit_hash(&info.sha) {
        return Err(HubError::Download {
            repo_id: repo_id.to_owned(),
            file: "(repo info)".into(),
            message: format!("the hub returned an invalid commit id {:?}", info.sha),
        });
    }
    let listed: HashSet<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();

    // Every download is pinned to that commit, so a branch that moves meanwhile cannot leave the
    // snapshot with files from two commits.
    let pinned = api.repo(Repo::with_revision(
        repo_id.to_owned(),
        RepoType::Model,
        info.sha.clone(),
    ));
    let repo_dir = settings.hub_cache.join(repo_folder(repo_id));
    let snapshot = repo_dir.join("snapshots").join(&info.sha);
    let sha_ref = repo_dir.join("refs").join(&info.sha);
    let sha_ref_existed = sha_ref.exists();
    let bars = MultiProgress::new();
    let fetch = |file: &str| ctx.fetch(&pinned, &snapshot, file, &bars);

    for name in files::REQUIRED_FILES {
        if !listed.contains(name) {
            return Err(HubError::NotFound {
                what: format!("{name} in {repo_id}"),
                revision: revision.to_owned(),
            });
        }
        fetch(name)?;
    }
    if listed.contains(files::GENERATION_CONFIG) {
        fetch(files::GENERATION_CONFIG)?;
    }
    if listed.contains(files::SINGLE_WEIGHTS) {
        fetch(files::SINGLE_WEIGHTS)?;
    } else if listed.contains(files::WEIGHTS_INDEX) {
        let index = fetch(files::WEIGHTS_INDEX)?;
        for shard in files::shard_names(&index)? {
            fetch(&shard)?;
        }
    } else {
        return Err(HubError::RepoHasNoWeights {
            repo_id: repo_id.to_owned(),
            revision: revision.to_owned(),
        });
    }

    // hf-hub records the pinned commit as a ref named after itself; the Python library writes
    // no ref for a commit (a snapshot is found by its name), and the user's revision is what
    // must point at the snapshot. A failed removal leaves a harmless extra ref.
    if !sha_ref_existed {
        let _ = std::fs::remove_file(&sha_ref);
    }
    if revision != info.sha {
        write_ref(&repo_dir.join("refs").join(revision), &info.sha)?;
    }
    let origin = Origin::Hub {
        repo_id: repo_id.to_owned(),
        revision: revision.to_owned(),
        commit: info.sha.clone(),
    };
    ModelFiles::from_dir(&snapshot, origin)
}

fn write_ref(path: &Path, commit: &str) -> Result<(), HubError> {
    let io = |source| HubError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, commit).map_err(io)
}

struct Context<'a> {
    settings: &'a HubSettings,
    repo_id: &'a str,
    revision: &'a str,
}

impl Context<'_> {
    /// Downloads `file` unless the snapshot already has it; returns its path in the snapshot.
    fn fetch(
        &self,
        repo: &ApiRepo,
        snapshot: &Path,
        file: &str,
        bars: &MultiProgress,
    ) -> Result<PathBuf, HubError> {
        let target = snapshot.join(file);
        if target.is_file() {
            return Ok(target);
        }
        let bar = bars.add(ProgressBar::new(0));
        let path = repo
            .download_with_progress(file, bar)
            .map_err(|e| self.classify(e, &format!("{file} of {}", self.repo_id)))?;
        if path != target {
            return Err(HubError::Download {
                repo_id: self.repo_id.to_owned(),
                file: file.to_owned(),
                message: format!(
                    "it was stored at {} instead of {}: the revision changed during the \
                     download; run the command again",
                    path.display(),
                    target.display()
                ),
            });
        }
        Ok(path)
    }

    /// Turns hf-hub's error into one that says what happened and what to do.
    fn classify(&self, error: ApiError, what: &str) -> HubError {
        match error {
            ApiError::RequestError(e) => match *e {
                ureq::Error::Status(status @ (401 | 403), _) => HubError::Unauthorized {
                    repo_id: self.repo_id.to_owned(),
                    status,
                    hint: if self.settings.token.is_some() {
                        ": the token in use (HF_TOKEN or the saved login) has no access to it; \
                         for a gated model, accept its terms on the model's page first"
                            .into()
                    } else {
                        ": the repo does not exist, or it is private or gated; check the repo \
                         id, or accept its terms on the model's page and set HF_TOKEN (or run \
                         `huggingface-cli login`)"
                            .into()
                    },
                },
                ureq::Error::Status(404, _) => HubError::NotFound {
                    what: what.to_owned(),
                    revision: self.revision.to_owned(),
                },
                ureq::Error::Status(status, _) => HubError::HttpStatus {
                    what: what.to_owned(),
                    status,
                },
                ureq::Error::Transport(transport) => HubError::Unreachable {
                    endpoint: self.settings.endpoint.clone(),
                    message: transport.to_string(),
                },
            },
            ApiError::TooManyRetries(inner) => self.classify(*inner, what),
            ApiError::LockAcquisition(path) => HubError::Locked { path },
            other => HubError::Download {
                repo_id: self.repo_id.to_owned(),
                file: what.to_owned(),
                message: other.to_string(),
            },
        }
    }
}
