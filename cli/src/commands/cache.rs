//! `qwenmk ls` and `qwenmk rm`: the packed models in qwenmk's cache (`$QWENMK_CACHE`, else
//! `$HF_HOME/qwenmk`): where each came from, its size and date, and whether it is stale — its
//! source has changed (a branch now points to another commit, local files were edited or
//! removed), or it was written in an older format that this qwenmk cannot read.
//!
//! Both commands first sweep partial files left in the cache by runs that were killed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use qwenmk_weights::partial;
use qwenmk_weights::{PackedError, read_header};
use serde_json::json;

use crate::bench::report::utc_from_unix;
use crate::cli::{LsArgs, RmArgs};
use crate::commands::pack::human_bytes;
use crate::hub::{
    HubSettings, ModelFiles, Origin, PACKED_EXTENSION, PackedSource, SOURCE_ATTACHMENT,
    is_commit_hash, repo_folder, source_key,
};

/// One packed file of the cache.
#[derive(Debug, Clone)]
pub struct CachedPack {
    pub path: PathBuf,
    pub size: u64,
    /// Seconds since the epoch of its last modification (when it was packed).
    pub modified: u64,
    pub provenance: Option<PackedSource>,
    pub status: Status,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Usable, and its source (when known) unchanged.
    Current,
    /// Usable, but where it came from is not recorded or cannot be checked now.
    Unknown(String),
    /// Its source changed, or it cannot be used by this qwenmk: `rm --stale` removes it.
    Stale(String),
}

impl Status {
    fn describe(&self) -> String {
        match self {
            Status::Current => "ok".to_owned(),
            Status::Unknown(why) => format!("ok ({why})"),
            Status::Stale(why) => format!("stale: {why}"),
        }
    }
}

impl CachedPack {
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn source(&self) -> String {
        self.provenance
            .as_ref()
            .map_or_else(|| "(not recorded)".to_owned(), PackedSource::describe)
    }
}

pub fn run_ls(args: &LsArgs) -> Result<()> {
    let settings = HubSettings::from_env()?;
    sweep_partials(&settings.packed_dir);
    let packs = list(&settings)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let rows: Vec<_> = packs
            .iter()
            .map(|p| {
                json!({
                    "name": p.name(),
                    "path": p.path,
                    "source": p.provenance,
                    "size_bytes": p.size,
                    "packed": utc_from_unix(p.modified),
                    "stale": matches!(p.status, Status::Stale(_)),
                    "status": p.status.describe(),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(rows)).context("cannot write to stdout")?;
        return Ok(());
    }
    if packs.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "no packed models in {} (`qwenmk generate` and `qwenmk pack` put them there)",
            settings.packed_dir.display()
        );
        return Ok(());
    }
    let rows: Vec<[String; 5]> = packs
        .iter()
        .map(|p| {
            [
                p.name(),
                p.source(),
                human_bytes(p.size),
                utc_from_unix(p.modified)
                    .replace('T', " ")
                    .trim_end_matches('Z')
                    .to_owned(),
                p.status.describe(),
            ]
        })
        .collect();
    let header = ["NAME", "SOURCE", "SIZE", "PACKED (UTC)", "STATUS"];
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: [&str; 5]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i < 4 {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            } else {
                text.push_str(cell);
            }
        }
        text
    };
    writeln!(out, "{}", line(header)).context("cannot write to stdout")?;
    for row in &rows {
        let cells = [
            row[0].as_str(),
            row[1].as_str(),
            row[2].as_str(),
            row[3].as_str(),
            row[4].as_str(),
        ];
        writeln!(out, "{}", line(cells)).context("cannot write to stdout")?;
    }
    let total: u64 = packs.iter().map(|p| p.size).sum();
    let stale = packs
        .iter()
        .filter(|p| matches!(p.status, Status::Stale(_)))
        .count();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "{} packed model{} ({}) in {}{}",
        packs.len(),
        if packs.len() == 1 { "" } else { "s" },
        human_bytes(total),
        settings.packed_dir.display(),
        if stale > 0 {
            format!("; {stale} stale (`qwenmk rm --stale` removes them)")
        } else {
            String::new()
        }
    );
    Ok(())
}

pub fn run_rm(args: &RmArgs) -> Result<()> {
    let settings = HubSettings::from_env()?;
    sweep_partials(&settings.packed_dir);
    let packs = list(&settings)?;
    let mut chosen: Vec<&CachedPack> = Vec::new();
    for name in &args.names {
        for pack in select(&packs, name, &settings.packed_dir)? {
            if !chosen.iter().any(|c| c.path == pack.path) {
                chosen.push(pack);
            }
        }
    }
    if args.stale {
        for pack in packs
            .iter()
            .filter(|p| matches!(p.status, Status::Stale(_)))
        {
            if !chosen.iter().any(|c| c.path == pack.path) {
                chosen.push(pack);
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if chosen.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "no stale packed models in {}",
            settings.packed_dir.display()
        );
        return Ok(());
    }
    let mut freed = 0;
    for pack in &chosen {
        let why = match &pack.status {
            Status::Stale(why) => format!(" ({why})"),
            _ => String::new(),
        };
        if args.dry_run {
            writeln!(out, "would remove {}{why}", pack.name()).context("cannot write to stdout")?;
        } else {
            std::fs::remove_file(&pack.path)
                .with_context(|| format!("cannot remove {}", pack.path.display()))?;
            writeln!(out, "removed {}{why}", pack.name()).context("cannot write to stdout")?;
        }
        freed += pack.size;
    }
    let _ = writeln!(
        std::io::stderr(),
        "{} {} in {} file{}",
        if args.dry_run { "would free" } else { "freed" },
        human_bytes(freed),
        chosen.len(),
        if chosen.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// The packs `name` designates: a file name (with or without `.qwenmk`), a source (a hub repo
/// id, or a local directory), or a prefix of exactly one file name.
fn select<'a>(packs: &'a [CachedPack], name: &str, dir: &Path) -> Result<Vec<&'a CachedPack>> {
    let exact: Vec<_> = packs
        .iter()
        .filter(|p| {
            let file = p.name();
            file == name || file.strip_suffix(&format!(".{PACKED_EXTENSION}")) == Some(name)
        })
        .collect();
    if !exact.is_empty() {
        return Ok(exact);
    }
    let canonical = Path::new(name).canonicalize().ok();
    let by_source: Vec<_> = packs
        .iter()
        .filter(|p| match &p.provenance {
            Some(PackedSource::Hub { repo_id, .. }) => repo_id == name,
            Some(PackedSource::Local { dir, .. }) => canonical.as_deref() == Some(dir.as_path()),
            _ => false,
        })
        .collect();
    if !by_source.is_empty() {
        return Ok(by_source);
    }
    let prefixed: Vec<_> = packs
        .iter()
        .filter(|p| !name.is_empty() && p.name().starts_with(name))
        .collect();
    match prefixed.len() {
        1 => Ok(prefixed),
        0 => bail!(
            "no packed model in {} is named {name:?} or comes from it; `qwenmk ls` lists them",
            dir.display()
        ),
        _ => bail!(
            "{name:?} matches {} packed models ({}); give more of the name",
            prefixed.len(),
            prefixed
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The packed files of the cache, by name.
pub fn list(settings: &HubSettings) -> Result<Vec<CachedPack>> {
    let dir = &settings.packed_dir;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut packs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden || path.extension().is_none_or(|e| e != PACKED_EXTENSION) || !path.is_file() {
            continue;
        }
        let meta = entry
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let (provenance, status) = match read_header(&path) {
            Ok(header) if header.expected_len != meta.len() => (
                PackedSource::from_attachment(header.attachment(SOURCE_ATTACHMENT)),
                Status::Stale(format!(
                    "damaged: {} bytes where its header says {}",
                    meta.len(),
                    header.expected_len
                )),
            ),
            Ok(header) => {
                let provenance =
                    PackedSource::from_attachment(header.attachment(SOURCE_ATTACHMENT));
                let status = match &provenance {
                    Some(p) => source_status(p, settings),
                    None => Status::Unknown("source not recorded".to_owned()),
                };
                (provenance, status)
            }
            Err(PackedError::UnknownVersion { found, .. })
                if found < qwenmk_weights::FORMAT_VERSION =>
            {
                (
                    None,
                    Status::Stale(format!("older packed format {found}; re-pack it")),
                )
            }
            Err(e) => (None, Status::Stale(format!("unusable: {}", brief(&e)))),
        };
        packs.push(CachedPack {
            path,
            size: meta.len(),
            modified,
            provenance,
            status,
        });
    }
    packs.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(packs)
}

/// Whether the source a pack was made from still is what it was.
fn source_status(provenance: &PackedSource, settings: &HubSettings) -> Status {
    match provenance {
        PackedSource::Synthetic { .. } => Status::Current,
        PackedSource::Hub {
            repo_id,
            revision,
            commit,
        } => {
            if is_commit_hash(revision) {
                return Status::Current;
            }
            let refs = settings.hub_cache.join(repo_folder(repo_id)).join("refs");
            let Ok(now) = std::fs::read_to_string(refs.join(revision)) else {
                return Status::Unknown("source not in the Hugging Face cache".to_owned());
            };
            let now = now.trim();
            if now == commit || any_ref_names(&refs, commit) {
                Status::Current
            } else {
                Status::Stale(format!(
                    "{revision} now points to {}",
                    &now[..now.len().min(12)]
                ))
            }
        }
        PackedSource::Local { dir, key } => {
            if !dir.is_dir() {
                return Status::Stale(format!("{} no longer exists", dir.display()));
            }
            match ModelFiles::from_dir(dir, Origin::Local)
                .and_then(|files| source_key(&files, qwenmk_weights::FORMAT_VERSION))
            {
                Ok(now) if now == *key => Status::Current,
                Ok(_) => Status::Stale(format!("{} changed since it was packed", dir.display())),
                Err(e) => {
                    Status::Stale(format!("{} is no longer a checkpoint ({e})", dir.display()))
                }
            }
        }
    }
}

/// Whether any ref file under `refs` (branches, tags, `refs/pr/N`) names `commit`. Bounded by
/// the folder tree, which is a handful of files.
fn any_ref_names(refs: &Path, commit: &str) -> bool {
    let mut stack = vec![refs.to_path_buf()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            seen += 1;
            if seen > 10_000 {
                return false;
            }
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read_to_string(&path).is_ok_and(|t| t.trim() == commit) {
                return true;
            }
        }
    }
    false
}

/// The part of a loader error after the file name, which the table already shows.
fn brief(error: &PackedError) -> String {
    let text = error.to_string();
    match text.split_once("; re-run") {
        Some((head, _)) => head.to_owned(),
        None => text,
    }
}

/// Removes partial files that killed runs left in the cache, saying how much it freed.
pub fn sweep_partials(dir: &Path) {
    let sizes: Vec<u64> = partial::sweep_stale(dir, None)
        .into_iter()
        .map(|(_, size)| size)
        .collect();
    if !sizes.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "removed {} partial file{} ({}) left in {} by interrupted runs",
            sizes.len(),
            if sizes.len() == 1 { "" } else { "s" },
            human_bytes(sizes.iter().sum()),
            dir.display()
        );
    }
}
