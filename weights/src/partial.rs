//! Files that appear under their final name only when complete, and that never outlive an
//! interrupted run.
//!
//! A [`PartialFile`] is written as `.<name>.partial-<pid>` beside its target and renamed over the
//! target once complete (a reader sees the old file or the new one, never half of one). Three
//! ways it can be left behind, and what removes it:
//! - an error or a panic: its `Drop` removes it;
//! - Ctrl-C or SIGTERM: every partial file of the process is listed in a process-wide registry,
//!   and the binary's signal handler calls [`remove_all_for_exit`] before it exits;
//! - SIGKILL or a power loss: nothing runs, so the next writer into the same folder calls
//!   [`sweep_stale`], which removes partial files whose process (the pid in the name) is gone.
//!
//! Other partial files (a download's `.incomplete`) join the registry through [`register`].

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Paths of this process's partial files, removed by [`remove_all_for_exit`].
static REGISTRY: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

const PARTIAL_MARK: &str = ".partial-";

fn registry() -> MutexGuard<'static, Vec<PathBuf>> {
    // A panic while holding the lock leaves a valid Vec behind; keep using it.
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Keeps `path` in the registry for as long as it lives.
#[derive(Debug)]
pub struct Registration {
    path: PathBuf,
}

/// Lists `path` as a partial file of this process until the returned guard is dropped: an
/// interrupted run removes it. Register before creating the file, so that no moment exists in
/// which the file exists unlisted.
pub fn register(path: &Path) -> Registration {
    registry().push(path.to_path_buf());
    Registration {
        path: path.to_path_buf(),
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut list = registry();
        if let Some(i) = list.iter().rposition(|p| *p == self.path) {
            list.swap_remove(i);
        }
    }
}

/// Renames `from` over `to` while no interrupt can remove partial files, then lets `registration`
/// go: the rename and the unlisting happen as one step for [`remove_all_for_exit`].
pub fn rename_registered(
    registration: Registration,
    from: &Path,
    to: &Path,
) -> std::io::Result<()> {
    let mut list = registry();
    std::fs::rename(from, to)?;
    if let Some(i) = list.iter().rposition(|p| *p == registration.path) {
        list.swap_remove(i);
    }
    drop(list);
    // Already unlisted: its Drop finds nothing to remove.
    drop(registration);
    Ok(())
}

/// Removes every registered partial file and keeps the registry locked for good, so that no
/// rename can publish a file afterwards. For a signal handler that exits the process right after;
/// returns the paths removed.
pub fn remove_all_for_exit() -> Vec<PathBuf> {
    let list = registry();
    let removed = list
        .iter()
        .filter(|path| std::fs::remove_file(path).is_ok())
        .cloned()
        .collect();
    // The process is about to exit: never unlock, so a rename in another thread cannot follow.
    std::mem::forget(list);
    removed
}

/// A hidden file beside `target`, renamed over it by [`PartialFile::persist`] and removed if
/// dropped before that.
#[derive(Debug)]
pub struct PartialFile {
    temp: PathBuf,
    target: PathBuf,
    file: Option<File>,
    registration: Option<Registration>,
}

impl PartialFile {
    /// Creates `.<name>.partial-<pid>` beside `target`, first sweeping partial files of the same
    /// target left by processes that no longer run.
    pub fn create(target: &Path) -> std::io::Result<Self> {
        let name = target.file_name().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path names a directory, not a file",
            )
        })?;
        let dir = parent_dir(target);
        sweep_stale(dir, Some(name));
        let temp = dir.join(partial_name(name, std::process::id()));
        let registration = register(&temp);
        let file = File::create(&temp)?;
        Ok(PartialFile {
            temp,
            target: target.to_path_buf(),
            file: Some(file),
            registration: Some(registration),
        })
    }

    /// The temporary path being written.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// The file, once; later calls fail.
    pub fn take_file(&mut self) -> std::io::Result<File> {
        self.file
            .take()
            .ok_or_else(|| std::io::Error::other("the partial file was already taken"))
    }

    /// Renames the file over the target and syncs the folder (best effort: failing to make the
    /// rename durable is not worth failing the write over).
    pub fn persist(mut self) -> std::io::Result<()> {
        self.file = None;
        let registration = self
            .registration
            .take()
            .ok_or_else(|| std::io::Error::other("the partial file was already persisted"))?;
        if let Err(e) = rename_registered(registration, &self.temp, &self.target) {
            // The registration is gone with the failed rename; remove the file here.
            let _ = std::fs::remove_file(&self.temp);
            return Err(e);
        }
        if let Ok(dir) = File::open(parent_dir(&self.target)) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if self.registration.is_some() {
            self.file = None;
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes `bytes` to `target` through a [`PartialFile`]: all or nothing.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut partial = PartialFile::create(target)?;
    let mut file = partial.take_file()?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    partial.persist()
}

/// `.<name>.partial-<pid>`.
pub fn partial_name(target_name: &OsStr, pid: u32) -> OsString {
    let mut name = OsString::from(".");
    name.push(target_name);
    name.push(format!("{PARTIAL_MARK}{pid}"));
    name
}

/// The target's name and the writer's pid of a partial file's name; `None` for other names.
pub fn parse_partial_name(name: &OsStr) -> Option<(OsString, u32)> {
    let name = name.to_str()?;
    let rest = name.strip_prefix('.')?;
    let (target, pid) = rest.rsplit_once(PARTIAL_MARK)?;
    if target.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((OsString::from(target), pid.parse().ok()?))
}

/// Removes the partial files in `dir` (all of them, or only those for the target named
/// `only_for`) whose writing process no longer runs. Returns what was removed, with sizes; a
/// folder that cannot be read sweeps nothing.
pub fn sweep_stale(dir: &Path, only_for: Option<&OsStr>) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    // Bounded by the folder's size: one pass, no retries.
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((target, pid)) = parse_partial_name(&name) else {
            continue;
        };
        if only_for.is_some_and(|only| only != target) || process_is_running(pid) {
            continue;
        }
        let path = entry.path();
        let size = entry.metadata().map_or(0, |m| m.len());
        if entry.file_type().is_ok_and(|t| t.is_file()) && std::fs::remove_file(&path).is_ok() {
            removed.push((path, size));
        }
    }
    removed
}

/// Whether a process with this id exists. A reused pid makes a dead writer look alive, which
/// only postpones a sweep; it never removes a live writer's file.
pub fn process_is_running(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        if pid <= 0 {
            return false;
        }
        // SAFETY: signal 0 checks for existence and permission; it delivers nothing.
        let status = unsafe { libc::kill(pid, 0) };
        // EPERM: it exists but belongs to someone else.
        status == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        // Without a cheap liveness check, never sweep another process's file.
        true
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_ignored() {
        let name = partial_name(OsStr::new("model.qwenmk"), 4242);
        assert_eq!(name, ".model.qwenmk.partial-4242");
        assert_eq!(
            parse_partial_name(&name),
            Some((OsString::from("model.qwenmk"), 4242))
        );
        for other in [
            "model.qwenmk",
            ".model.qwenmk",
            ".partial-12",
            ".x.partial-",
            ".x.partial-12a",
        ] {
            assert_eq!(parse_partial_name(OsStr::new(other)), None, "{other}");
        }
    }

    #[test]
    fn a_dropped_partial_file_leaves_nothing_and_a_persisted_one_replaces_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        std::fs::write(&target, b"old").unwrap();
        {
            let partial = PartialFile::create(&target).unwrap();
            assert!(partial.path().exists());
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(std::fs::read(&target).unwrap(), b"old");

        write_atomic(&target, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_partials_of_dead_processes_are_swept_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        // A child that has exited: its pid is (almost surely) not running any more.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = dir.path().join(partial_name(OsStr::new("a.qwenmk"), dead));
        let other_target = dir.path().join(partial_name(OsStr::new("b.qwenmk"), dead));
        let live = dir
            .path()
            .join(partial_name(OsStr::new("a.qwenmk"), std::process::id()));
        for path in [&stale, &other_target, &live] {
            std::fs::write(path, b"x").unwrap();
        }
        let removed = sweep_stale(dir.path(), Some(OsStr::new("a.qwenmk")));
        assert_eq!(removed, vec![(stale.clone(), 1)]);
        assert!(other_target.exists() && live.exists());
        assert_eq!(sweep_stale(dir.path(), None), vec![(other_target, 1)]);
        assert!(live.exists());
    }

    #[test]
    fn registered_files_are_listed_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.incomplete");
        let registration = register(&path);
        assert!(registry().contains(&path));
        drop(registration);
        assert!(!registry().contains(&path));
    }
}
