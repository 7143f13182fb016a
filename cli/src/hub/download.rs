//! Online resolution: download a hub repo's files into the standard Hugging Face cache, laid out
//! as huggingface_hub lays it out so that both share it:
//!
//! ```text
//! models--{org}--{name}/blobs/<etag>                 the bytes (<etag>.incomplete while arriving)
//! models--{org}--{name}/snapshots/<commit>/<file>    a relative symlink to ../../blobs/<etag>
//! models--{org}--{name}/refs/<revision>              the commit hash
//! .locks/models--{org}--{name}/<etag>.lock           held (flock) while a blob downloads
//! ```
//!
//! Every request goes through [`HubClient`] (timeouts, bounded retries). A large file resumes
//! with an HTTP range where it stopped when a try fails midway; an `.incomplete` left by a
//! killed process is resumed the same way by the next run. Ctrl-C removes this run's
//! `.incomplete` files (they are registered as partial files).

use std::collections::HashSet;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use qwenmk_weights::partial;

use super::cache::{is_commit_hash, repo_folder};
use super::files::{self, ModelFiles, Origin};
use super::http::{Failure, HubClient, Purpose, RetryExhausted, stream_body};
use super::{HubError, HubSettings};

/// How long to wait for another process that is downloading the same file.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(200);
/// Relative redirects followed for one file's metadata (renamed repos answer with one).
const MAX_RELATIVE_REDIRECTS: usize = 5;

/// Downloads what is missing of `repo_id` at `revision` and returns the snapshot's files.
pub fn download(
    settings: &HubSettings,
    repo_id: &str,
    revision: &str,
) -> Result<ModelFiles, HubError> {
    let ctx = Context {
        client: HubClient::new(
            settings.network.clone(),
            &settings.endpoint,
            settings.token.clone(),
        ),
        settings,
        repo_id,
        revision,
    };

    // 1. The revision's commit and file list, in one request.
    let (commit, listed) = ctx.repo_info()?;
    let wanted = ctx.wanted_files(&listed)?;

    // 2. Each file, pinned to that commit, so that a branch that moves meanwhile cannot leave
    //    the snapshot with files from two commits.
    let repo_dir = settings.hub_cache.join(repo_folder(repo_id));
    let snapshot = repo_dir.join("snapshots").join(&commit);
    let bars = MultiProgress::new();
    for name in &wanted {
        ctx.fetch(&repo_dir, &snapshot, &commit, name, &bars)?;
    }
    if !listed.contains(files::SINGLE_WEIGHTS) {
        let index = snapshot.join(files::WEIGHTS_INDEX);
        for shard in files::shard_names(&index)? {
            if !listed.contains(shard.as_str()) {
                return Err(HubError::NotFound {
                    what: format!("{shard} (listed by {}) in {repo_id}", files::WEIGHTS_INDEX),
                    revision: revision.to_owned(),
                });
            }
            ctx.fetch(&repo_dir, &snapshot, &commit, &shard, &bars)?;
        }
    }

    // 3. What killed processes left: `.incomplete` blobs nobody writes (this run resumed its own).
    sweep_stale_incomplete(
        &repo_dir.join("blobs"),
        &settings.hub_cache.join(".locks").join(repo_folder(repo_id)),
    );

    // 4. The user's revision now points at the snapshot (a commit needs no ref).
    if revision != commit {
        let path = repo_dir.join("refs").join(revision);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| io(parent, source))?;
        }
        partial::write_atomic(&path, commit.as_bytes()).map_err(|source| io(&path, source))?;
    }
    let origin = Origin::Hub {
        repo_id: repo_id.to_owned(),
        revision: revision.to_owned(),
        commit,
    };
    ModelFiles::from_dir(&snapshot, origin)
}

struct Context<'a> {
    client: HubClient,
    settings: &'a HubSettings,
    repo_id: &'a str,
    revision: &'a str,
}

/// Where a file's bytes are and how many there are, from the hub's answer to a HEAD request.
struct FileMeta {
    etag: String,
    size: u64,
    /// Where to GET the bytes: the CDN's URL for large files, else the resolve URL.
    url: String,
}

impl Context<'_> {
    fn endpoint(&self) -> &str {
        &self.settings.endpoint
    }

    /// The commit the revision points to, and the repo's file names.
    fn repo_info(&self) -> Result<(String, HashSet<String>), HubError> {
        #[derive(serde::Deserialize)]
        struct Sibling {
            rfilename: String,
        }
        #[derive(serde::Deserialize)]
        struct Info {
            sha: String,
            #[serde(default)]
            siblings: Vec<Sibling>,
        }
        let url = format!(
            "{}/api/models/{}/revision/{}",
            self.endpoint(),
            self.repo_id,
            encode_path_segment(self.revision)
        );
        let what = format!("{} at revision {}", self.repo_id, self.revision);
        let text = self
            .client
            .retry(|| {
                let response = self
                    .client
                    .request(Purpose::Metadata, "GET", &url)
                    .call()
                    .map_err(|e| (Failure::from_ureq(e), false))?;
                // ureq caps a body read into a string at 10 MB.
                response
                    .into_string()
                    .map_err(|e| (Failure::from_read(&e), false))
            })
            .map_err(|e| self.give_up(e, &what))?;
        let info: Info = serde_json::from_str(&text).map_err(|e| HubError::Download {
            repo_id: self.repo_id.to_owned(),
            file: "(repo info)".into(),
            message: format!("the hub's answer is not the expected JSON ({e})"),
        })?;
        if !is_commit_hash(&info.sha) {
            return Err(HubError::Download {
                repo_id: self.repo_id.to_owned(),
                file: "(repo info)".into(),
                message: format!("the hub returned an invalid commit id {:?}", info.sha),
            });
        }
        let listed = info.siblings.into_iter().map(|s| s.rfilename).collect();
        Ok((info.sha.to_ascii_lowercase(), listed))
    }

    /// The files a run needs, in download order (small ones first, so a missing tokenizer is
    /// found before gigabytes move). Shards are added once the index is there.
    fn wanted_files(&self, listed: &HashSet<String>) -> Result<Vec<String>, HubError> {
        let mut wanted = Vec::new();
        for name in files::REQUIRED_FILES {
            if !listed.contains(name) {
                return Err(HubError::NotFound {
                    what: format!("{name} in {}", self.repo_id),
                    revision: self.revision.to_owned(),
                });
            }
            wanted.push(name.to_owned());
        }
        for name in [files::GENERATION_CONFIG, files::CHAT_TEMPLATE] {
            if listed.contains(name) {
                wanted.push(name.to_owned());
            }
        }
        if listed.contains(files::SINGLE_WEIGHTS) {
            wanted.push(files::SINGLE_WEIGHTS.to_owned());
        } else if listed.contains(files::WEIGHTS_INDEX) {
            wanted.push(files::WEIGHTS_INDEX.to_owned());
        } else {
            return Err(HubError::RepoHasNoWeights {
                repo_id: self.repo_id.to_owned(),
                revision: self.revision.to_owned(),
            });
        }
        Ok(wanted)
    }

    /// Makes `snapshot/<file>` exist, downloading its blob unless the cache has it.
    fn fetch(
        &self,
        repo_dir: &Path,
        snapshot: &Path,
        commit: &str,
        file: &str,
        bars: &MultiProgress,
    ) -> Result<PathBuf, HubError> {
        let target = snapshot.join(file);
        if target.is_file() {
            return Ok(target);
        }
        let meta = self.file_meta(commit, file)?;
        let blobs = repo_dir.join("blobs");
        let blob = blobs.join(&meta.etag);
        if !blob.is_file() {
            std::fs::create_dir_all(&blobs).map_err(|source| io(&blobs, source))?;
            let locks = self
                .settings
                .hub_cache
                .join(".locks")
                .join(repo_folder(self.repo_id));
            std::fs::create_dir_all(&locks).map_err(|source| io(&locks, source))?;
            let lock = self.lock(&locks.join(format!("{}.lock", meta.etag)))?;
            // Another process may have finished it while we waited for the lock.
            if !blob.is_file() {
                self.download_blob(&meta, &blob, file, bars)?;
            }
            drop(lock);
        }
        link_into_snapshot(&blob, &target)?;
        Ok(target)
    }

    /// The file's etag, size and download URL (HEAD on the resolve URL, no redirects followed:
    /// the hub's redirect to its CDN carries the large files' `X-Linked-*` headers).
    fn file_meta(&self, commit: &str, file: &str) -> Result<FileMeta, HubError> {
        let mut url = format!(
            "{}/{}/resolve/{commit}/{}",
            self.endpoint(),
            self.repo_id,
            encode_path(file)
        );
        let what = format!("{file} of {}", self.repo_id);
        for _ in 0..=MAX_RELATIVE_REDIRECTS {
            let response = self
                .client
                .retry(|| {
                    self.client
                        .request(Purpose::MetadataNoRedirect, "HEAD", &url)
                        .call()
                        .map_err(|e| (Failure::from_ureq(e), false))
                })
                .map_err(|e| self.give_up(e, &what))?;
            let location = response.header("Location").map(str::to_owned);
            if (300..400).contains(&response.status())
                && let Some(location) = &location
                && location.starts_with('/')
            {
                // A renamed repo: the same request at the new path.
                url = format!("{}{location}", self.endpoint());
                continue;
            }
            let header = |name: &str| response.header(name).map(str::to_owned);
            let etag = header("X-Linked-Etag").or_else(|| header("ETag"));
            let size = header("X-Linked-Size").or_else(|| header("Content-Length"));
            let bad = |message: String| HubError::Download {
                repo_id: self.repo_id.to_owned(),
                file: file.to_owned(),
                message,
            };
            let etag = etag
                .map(|e| e.trim_start_matches("W/").trim_matches('"').to_owned())
                .filter(|e| is_safe_blob_name(e))
                .ok_or_else(|| bad("the hub sent no usable ETag for it".to_owned()))?;
            let size = size
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| bad("the hub did not say how large it is".to_owned()))?;
            let download_url = match location {
                Some(location) if (300..400).contains(&response.status()) => location,
                _ => url.clone(),
            };
            return Ok(FileMeta {
                etag,
                size,
                url: download_url,
            });
        }
        Err(HubError::Download {
            repo_id: self.repo_id.to_owned(),
            file: file.to_owned(),
            message: format!("more than {MAX_RELATIVE_REDIRECTS} redirects"),
        })
    }

    /// Takes the blob's lock, waiting a bounded time for another downloader.
    fn lock(&self, path: &Path) -> Result<File, HubError> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|source| io(path, source))?;
        let started = std::time::Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(LOCK_POLL);
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(HubError::Locked {
                        path: path.to_path_buf(),
                    });
                }
                Err(std::fs::TryLockError::Error(source)) => return Err(io(path, source)),
            }
        }
    }

    /// Streams the file into `<blob>.incomplete`, resuming where it stops, checks its size and
    /// renames it into place.
    fn download_blob(
        &self,
        meta: &FileMeta,
        blob: &Path,
        file: &str,
        bars: &MultiProgress,
    ) -> Result<(), HubError> {
        let incomplete = incomplete_path(blob);
        let registration = partial::register(&incomplete);
        let mut out = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&incomplete)
            .map_err(|source| io(&incomplete, source))?;
        let bar = bars.add(progress_bar(meta.size, file));
        let what = format!("{file} of {}", self.repo_id);
        let result = self
            .client
            .retry(|| self.download_once(meta, &mut out, &incomplete, &bar))
            .map_err(|e| self.give_up(e, &what));
        bar.finish_and_clear();
        if let Err(error) = result {
            // A file the hub cannot send in this run is not worth keeping.
            drop(out);
            let _ = std::fs::remove_file(&incomplete);
            return Err(error);
        }
        out.sync_all().map_err(|source| io(&incomplete, source))?;
        drop(out);
        partial::rename_registered(registration, &incomplete, blob)
            .map_err(|source| io(blob, source))
    }

    /// One try: a GET from the current length of the `.incomplete` on. The error says whether
    /// the try moved the file forward.
    fn download_once(
        &self,
        meta: &FileMeta,
        out: &mut File,
        incomplete: &Path,
        bar: &ProgressBar,
    ) -> Result<(), (Failure, bool)> {
        let local_err = |e: std::io::Error| {
            (
                Failure::Fatal(format!("cannot write {}: {e}", incomplete.display())),
                false,
            )
        };
        let mut have = out.metadata().map_err(local_err)?.len();
        if have > meta.size {
            // Not a prefix of this file: start over.
            out.set_len(0).map_err(local_err)?;
            have = 0;
        }
        if have == meta.size {
            return Ok(());
        }
        let policy = &self.client.policy;
        let mut request = self.client.request(Purpose::Download, "GET", &meta.url);
        if have > 0 {
            request = request.set("Range", &format!("bytes={have}-"));
        }
        let response = request.call().map_err(|e| (Failure::from_ureq(e), false))?;
        let resumed = response.status() == 206
            && response
                .header("Content-Range")
                .and_then(range_start)
                .is_some_and(|start| start == have);
        if !resumed {
            // The server sent the whole file (or an unexpected range): start over.
            out.set_len(0).map_err(local_err)?;
            have = 0;
        }
        out.seek(SeekFrom::Start(have)).map_err(local_err)?;
        bar.set_position(have);
        let before = have;
        let streamed = stream_body(response, policy, |bytes| {
            if have + bytes.len() as u64 > meta.size {
                return Err(std::io::Error::other(format!(
                    "the hub sent more than the {} bytes it announced",
                    meta.size
                )));
            }
            out.write_all(bytes)?;
            have += bytes.len() as u64;
            bar.set_position(have);
            Ok(())
        });
        match streamed {
            Err((failure, got)) => Err((failure, got > 0)),
            Ok(_) if have == meta.size => Ok(()),
            Ok(_) => Err((
                Failure::Transient {
                    message: format!(
                        "the body ended after {have} of {} bytes (truncated)",
                        meta.size
                    ),
                    timed_out: false,
                },
                have > before,
            )),
        }
    }

    /// The sentence for a request that failed for good.
    fn give_up(&self, exhausted: RetryExhausted, what: &str) -> HubError {
        let tries = exhausted.tries;
        let endpoint = self.endpoint().to_owned();
        match exhausted.failure {
            Failure::Status {
                code: status @ (401 | 403),
                ..
            } => HubError::Unauthorized {
                repo_id: self.repo_id.to_owned(),
                status,
                hint: if self.settings.token.is_some() {
                    ": the token in use (HF_TOKEN or the saved login) has no access to it; for a \
                     gated model, accept its terms on the model's page first"
                        .into()
                } else {
                    ": the repo does not exist, or it is private or gated; check the repo id, or \
                     accept its terms on the model's page and set HF_TOKEN (or run \
                     `huggingface-cli login`)"
                        .into()
                },
            },
            Failure::Status { code: 404, .. } => HubError::NotFound {
                what: what.to_owned(),
                revision: self.revision.to_owned(),
            },
            Failure::Status { code, .. } => HubError::HttpStatus {
                what: format!("{what} ({})", tries_phrase(tries)),
                status: code,
            },
            Failure::Unreachable(message) => HubError::Unreachable { endpoint, message },
            Failure::Transient {
                message,
                timed_out: true,
            } => HubError::Stalled {
                endpoint,
                what: what.to_owned(),
                message: format!("{message}; {}", tries_phrase(tries)),
            },
            Failure::Transient { message, .. } => HubError::Unreachable {
                endpoint,
                message: format!("{message} while fetching {what}; {}", tries_phrase(tries)),
            },
            Failure::Fatal(message) => HubError::Download {
                repo_id: self.repo_id.to_owned(),
                file: what.to_owned(),
                message,
            },
        }
    }
}

fn tries_phrase(tries: u32) -> String {
    if tries == 1 {
        "1 try".to_owned()
    } else {
        format!("{tries} tries")
    }
}

fn progress_bar(size: u64, file: &str) -> ProgressBar {
    ProgressBar::new(size)
        .with_style(
            ProgressStyle::with_template(
                "{msg:24} {bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        )
        .with_message(file.to_owned())
}

/// `<blob>.incomplete`, huggingface_hub's name for a blob still arriving.
fn incomplete_path(blob: &Path) -> PathBuf {
    let mut name = blob.file_name().unwrap_or_default().to_os_string();
    name.push(".incomplete");
    blob.with_file_name(name)
}

/// Removes `.incomplete` blobs of this repo that no process is writing (their lock is free):
/// left by a process that was killed before it could clean up. Run after this run's own
/// downloads, which resume such a file instead when they need it.
fn sweep_stale_incomplete(blobs: &Path, locks: &Path) {
    let Ok(entries) = std::fs::read_dir(blobs) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(etag) = name.to_str().and_then(|n| n.strip_suffix(".incomplete")) else {
            continue;
        };
        if !is_safe_blob_name(etag) {
            continue;
        }
        let lock_path = locks.join(format!("{etag}.lock"));
        let Ok(lock) = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
        else {
            continue;
        };
        if lock.try_lock().is_ok() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// `snapshot/<file>` → `../../blobs/<etag>` (relative, as huggingface_hub links it; nested file
/// names get more `..`). Where symlinks are impossible the blob is copied.
fn link_into_snapshot(blob: &Path, target: &Path) -> Result<(), HubError> {
    let parent = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|source| io(parent, source))?;
    let _ = std::fs::remove_file(target);
    #[cfg(unix)]
    {
        let relative = relative_to(blob, parent);
        if std::os::unix::fs::symlink(&relative, target).is_ok() {
            return Ok(());
        }
    }
    std::fs::copy(blob, target)
        .map(|_| ())
        .map_err(|source| io(target, source))
}

/// `path` relative to the folder `from`, both under one common root.
fn relative_to(path: &Path, from: &Path) -> PathBuf {
    let path: Vec<_> = path.components().collect();
    let from: Vec<_> = from.components().collect();
    let common = path.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut relative = PathBuf::new();
    for _ in common..from.len() {
        relative.push("..");
    }
    for part in &path[common..] {
        relative.push(part.as_os_str());
    }
    relative
}

/// An etag becomes a file name: hex digests and the hub's other etags are plain names.
fn is_safe_blob_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The start of `bytes start-end/total`.
fn range_start(content_range: &str) -> Option<u64> {
    let spec = content_range.trim().strip_prefix("bytes ")?;
    spec.split_once('-')?.0.trim().parse().ok()
}

/// A revision is one path segment of the info URL (`refs/pr/1` → `refs%2Fpr%2F1`).
fn encode_path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A file name keeps its `/` (files in folders); every other unsafe byte is escaped.
fn encode_path(file: &str) -> String {
    file.split('/')
        .map(encode_path_segment)
        .collect::<Vec<_>>()
        .join("/")
}

fn io(path: &Path, source: std::io::Error) -> HubError {
    HubError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_paths_and_ranges() {
        assert_eq!(encode_path_segment("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(encode_path("a b/c.json"), "a%20b/c.json");
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("items 1-2/3"), None);
        assert_eq!(
            relative_to(
                Path::new("/c/models--a--b/blobs/e1"),
                Path::new("/c/models--a--b/snapshots/abc")
            ),
            PathBuf::from("../../blobs/e1")
        );
        assert!(is_safe_blob_name("a1b2-c_3"));
        assert!(!is_safe_blob_name("../x") && !is_safe_blob_name(""));
    }
}
