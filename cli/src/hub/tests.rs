//! Hermetic tests: every cache is a temp directory, every environment a map, and the "hub" is
//! either an unreachable address or a tiny HTTP server in a thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::*;

const COMMIT: &str = "c1e4e6a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6";
const OTHER_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn settings_from(vars: &[(&str, &str)]) -> HubSettings {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    HubSettings::from_lookup(|name| map.get(name).cloned()).unwrap()
}

/// Settings whose cache is `root/hub` and whose network is a closed port, with short timeouts
/// and backoffs so that failure tests end quickly (their bounds are counted, never timed).
fn settings_in(root: &Path) -> HubSettings {
    let mut s = settings_from(&[("HF_HOME", root.to_str().unwrap())]);
    s.endpoint = fake_hub::refusing_endpoint();
    s.network = http::NetworkPolicy {
        metadata_timeout: std::time::Duration::from_secs(1),
        download_timeout: std::time::Duration::from_secs(1),
        attempts: 3,
        backoff: std::time::Duration::from_millis(10),
        backoff_max: std::time::Duration::from_millis(40),
    };
    s
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A cache entry as huggingface_hub lays it out: files in blobs/, symlinks in the snapshot.
fn fake_cached_repo(hub: &Path, repo_id: &str, commit: &str, files: &[&str], refs: &[&str]) {
    let repo = hub.join(repo_folder(repo_id));
    for (i, name) in files.iter().enumerate() {
        let blob = repo.join("blobs").join(format!("blob{i}-{name}"));
        write(&blob, format!("{{\"file\": \"{name}\"}}").as_bytes());
        let link = repo.join("snapshots").join(commit).join(name);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&blob, &link).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&blob, &link).unwrap();
    }
    for name in refs {
        write(&repo.join("refs").join(name), commit.as_bytes());
    }
}

const FULL: [&str; 5] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "model.safetensors",
];

// ------------------------------------------------------------------------------------------
// --model parsing

#[test]
fn spec_parsing_tells_directories_from_repo_ids() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert_eq!(
        ModelSource::parse(d, "main").unwrap(),
        ModelSource::Local(dir.path().into())
    );
    assert_eq!(
        ModelSource::parse("Qwen/Qwen3-0.6B", "main").unwrap(),
        ModelSource::Hub {
            repo_id: "Qwen/Qwen3-0.6B".into(),
            revision: "main".into()
        }
    );
    assert!(matches!(
        ModelSource::parse("gpt2", "v1.0").unwrap(),
        ModelSource::Hub { .. }
    ));

    let missing = dir.path().join("nope");
    let err = ModelSource::parse(missing.to_str().unwrap(), "main").unwrap_err();
    assert!(matches!(err, HubError::LocalDirMissing { .. }), "{err}");
    assert!(err.to_string().contains("does not exist"));
    for spec in ["./models/qwen", "a/b/c", "~/qwen"] {
        let err = ModelSource::parse(spec, "main").unwrap_err();
        assert!(
            matches!(err, HubError::LocalDirMissing { .. }),
            "{spec}: {err}"
        );
    }
    for spec in [
        "",
        "Qwen/Qwen 3",
        "Qwen--x/y",
        "a/-b",
        "org/name.git",
        "Qwen/Qwen3:0.6B",
    ] {
        let err = ModelSource::parse(spec, "main").unwrap_err();
        assert!(
            matches!(err, HubError::InvalidSpec { .. }),
            "{spec:?}: {err}"
        );
    }

    for revision in ["", "../../etc", "/abs", "a//b", "refs\\x"] {
        let err = ModelSource::parse("Qwen/Qwen3-0.6B", revision).unwrap_err();
        assert!(
            matches!(err, HubError::InvalidSpec { .. }),
            "{revision:?}: {err}"
        );
    }
    assert!(ModelSource::parse("Qwen/Qwen3-0.6B", "refs/pr/1").is_ok());

    let file = dir.path().join("model.safetensors");
    write(&file, b"x");
    let err = ModelSource::parse(file.to_str().unwrap(), "main").unwrap_err();
    assert!(matches!(err, HubError::LocalIsFile { .. }), "{err}");
}

// ------------------------------------------------------------------------------------------
// Local directories

#[test]
fn local_dir_without_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("model.safetensors"), b"x");
    let err = ModelSource::resolve(
        dir.path().to_str().unwrap(),
        "main",
        true,
        &settings_in(dir.path()),
    )
    .unwrap_err();
    assert!(matches!(err, HubError::LocalNoConfig { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("no config.json") && text.contains(&dir.path().display().to_string()));
}

#[test]
fn local_dir_files_are_found_and_optional_ones_reported_absent() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("config.json"), b"{}");
    let err = ModelFiles::from_dir(dir.path(), Origin::Local).unwrap_err();
    assert!(matches!(err, HubError::NoWeights { .. }), "{err}");

    write(&dir.path().join("model.safetensors"), b"weights");
    let files = ModelFiles::from_dir(dir.path(), Origin::Local).unwrap();
    assert_eq!(files.weights, vec![dir.path().join("model.safetensors")]);
    assert_eq!(files.generation_config, None);
    assert_eq!(files.tokenizer, dir.path().join("tokenizer.json"));
    assert_eq!(files.weights_index, None);
}

#[test]
fn sharded_weights_follow_the_index() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("config.json"), b"{}");
    let index = dir.path().join("model.safetensors.index.json");
    write(
        &index,
        br#"{"metadata": {}, "weight_map": {
            "model.norm.weight": "model-00002-of-00002.safetensors",
            "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
            "lm_head.weight": "model-00002-of-00002.safetensors"}}"#,
    );
    write(&dir.path().join("model-00001-of-00002.safetensors"), b"a");
    let err = ModelFiles::from_dir(dir.path(), Origin::Local).unwrap_err();
    assert!(
        err.to_string()
            .contains("model-00002-of-00002.safetensors, which is missing"),
        "{err}"
    );

    write(&dir.path().join("model-00002-of-00002.safetensors"), b"b");
    let files = ModelFiles::from_dir(dir.path(), Origin::Local).unwrap();
    assert_eq!(
        files.weights,
        vec![
            dir.path().join("model-00001-of-00002.safetensors"),
            dir.path().join("model-00002-of-00002.safetensors")
        ]
    );
    assert_eq!(files.weights_index, Some(index.clone()));

    // An index is input: it must not reach outside the model directory.
    write(
        &index,
        br#"{"weight_map": {"x": "../../etc/evil.safetensors"}}"#,
    );
    let err = ModelFiles::from_dir(dir.path(), Origin::Local).unwrap_err();
    assert!(matches!(err, HubError::BadIndex { .. }), "{err}");
}

// ------------------------------------------------------------------------------------------
// The hub cache, offline

#[test]
fn offline_resolution_follows_refs_to_the_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let settings = settings_in(root.path());
    fake_cached_repo(
        &settings.hub_cache,
        "Qwen/Qwen3-0.6B",
        COMMIT,
        &FULL,
        &["main", "refs/pr/1"],
    );
    let snapshot = settings
        .hub_cache
        .join("models--Qwen--Qwen3-0.6B/snapshots")
        .join(COMMIT);

    let files = ModelSource::resolve("Qwen/Qwen3-0.6B", "main", true, &settings).unwrap();
    assert_eq!(files.dir, snapshot);
    assert_eq!(
        files.origin,
        Origin::Hub {
            repo_id: "Qwen/Qwen3-0.6B".into(),
            revision: "main".into(),
            commit: COMMIT.into()
        }
    );
    assert_eq!(files.config, snapshot.join("config.json"));
    assert_eq!(
        files.generation_config,
        Some(snapshot.join("generation_config.json"))
    );
    assert_eq!(files.weights, vec![snapshot.join("model.safetensors")]);
    // The files are readable through the snapshot's symlinks.
    assert!(
        std::fs::read_to_string(&files.tokenizer)
            .unwrap()
            .contains("tokenizer.json")
    );

    // A ref with a slash, and a commit given directly (no ref file for it).
    let pr = ModelSource::resolve("Qwen/Qwen3-0.6B", "refs/pr/1", true, &settings).unwrap();
    assert_eq!(pr.dir, snapshot);
    let by_commit = ModelSource::resolve("Qwen/Qwen3-0.6B", COMMIT, true, &settings).unwrap();
    assert_eq!(by_commit.dir, snapshot);
}

#[test]
fn a_complete_cache_is_used_online_without_the_network() {
    let root = tempfile::tempdir().unwrap();
    let settings = settings_in(root.path()); // endpoint is a closed port
    fake_cached_repo(
        &settings.hub_cache,
        "Qwen/Qwen3-0.6B",
        COMMIT,
        &FULL,
        &["main"],
    );
    let files = ModelSource::resolve("Qwen/Qwen3-0.6B", "main", false, &settings).unwrap();
    assert!(files.dir.ends_with(COMMIT));
}

#[test]
fn offline_cache_miss_names_the_searched_path_and_the_fixes() {
    let root = tempfile::tempdir().unwrap();
    let settings = settings_in(root.path());
    let repo_dir = settings.hub_cache.join("models--Qwen--Qwen3-0.6B");

    let miss = |revision: &str| -> (HubError, String) {
        let err = ModelSource::resolve("Qwen/Qwen3-0.6B", revision, true, &settings).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--offline") && text.contains("--model"),
            "{text}"
        );
        (err, text)
    };

    // Never downloaded: the repo directory itself was searched.
    let (err, text) = miss("main");
    assert!(
        matches!(&err, HubError::NotCached { searched, .. } if *searched == repo_dir),
        "{err:?}"
    );
    assert!(text.contains(&repo_dir.display().to_string()), "{text}");
    assert!(text.contains("from HF_HOME"), "{text}");

    // The repo is there, but not this revision: the ref file was searched.
    fake_cached_repo(
        &settings.hub_cache,
        "Qwen/Qwen3-0.6B",
        COMMIT,
        &FULL[..4],
        &["main"],
    );
    let (err, _) = miss("v2");
    assert!(
        matches!(&err, HubError::NotCached { searched, .. } if *searched == repo_dir.join("refs/v2")),
        "{err:?}"
    );

    // The revision is there but its weights are not (an interrupted download).
    let (err, text) = miss("main");
    assert!(matches!(err, HubError::NotCached { .. }));
    assert!(
        text.contains("model.safetensors") && text.contains("weights not downloaded"),
        "{text}"
    );

    // A ref pointing at a snapshot that was deleted.
    write(&repo_dir.join("refs/old"), OTHER_COMMIT.as_bytes());
    let (_, text) = miss("old");
    assert!(
        text.contains(OTHER_COMMIT) && text.contains("snapshot is missing"),
        "{text}"
    );
}

#[test]
fn hf_hub_offline_forbids_the_network_like_the_flag() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().to_str().unwrap();
    for value in ["1", "TRUE", "yes", "On"] {
        let settings = settings_from(&[("HF_HOME", home), ("HF_HUB_OFFLINE", value)]);
        assert!(settings.offline, "{value}");
        let err = ModelSource::resolve("Qwen/Qwen3-0.6B", "main", false, &settings).unwrap_err();
        assert!(matches!(err, HubError::NotCached { .. }), "{err}");
    }
    for value in ["0", "false", ""] {
        assert!(!settings_from(&[("HF_HOME", home), ("HF_HUB_OFFLINE", value)]).offline);
    }
}

#[test]
fn unreachable_hub_suggests_offline_mode() {
    let root = tempfile::tempdir().unwrap();
    let settings = settings_in(root.path());
    let err = ModelSource::resolve("Qwen/Qwen3-0.6B", "main", false, &settings).unwrap_err();
    assert!(matches!(err, HubError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("could not reach") && text.contains("--offline"),
        "{text}"
    );
}

// ------------------------------------------------------------------------------------------
// Environment

#[test]
fn cache_location_follows_huggingface_hub_precedence() {
    let s = settings_from(&[("HOME", "/home/u")]);
    assert_eq!(s.hf_home, PathBuf::from("/home/u/.cache/huggingface"));
    assert_eq!(s.hub_cache, PathBuf::from("/home/u/.cache/huggingface/hub"));
    assert_eq!(
        s.packed_dir,
        PathBuf::from("/home/u/.cache/huggingface/qwenmk")
    );
    assert_eq!(s.endpoint, DEFAULT_ENDPOINT);

    let s = settings_from(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/xdg")]);
    assert_eq!(s.hub_cache, PathBuf::from("/xdg/huggingface/hub"));

    let s = settings_from(&[
        ("HOME", "/home/u"),
        ("XDG_CACHE_HOME", "/xdg"),
        ("HF_HOME", "/hf"),
    ]);
    assert_eq!(s.hub_cache, PathBuf::from("/hf/hub"));
    assert_eq!(s.packed_dir, PathBuf::from("/hf/qwenmk"));

    let s = settings_from(&[("HF_HOME", "/hf"), ("HUGGINGFACE_HUB_CACHE", "/legacy")]);
    assert_eq!(s.hub_cache, PathBuf::from("/legacy"));

    // HF_HUB_CACHE wins over HF_HOME (and the legacy name); the packed files stay under HF_HOME.
    let s = settings_from(&[
        ("HF_HOME", "/hf"),
        ("HUGGINGFACE_HUB_CACHE", "/legacy"),
        ("HF_HUB_CACHE", "/big/hub"),
    ]);
    assert_eq!(s.hub_cache, PathBuf::from("/big/hub"));
    assert_eq!(s.hub_cache_origin, "from HF_HUB_CACHE");
    assert_eq!(s.hf_home, PathBuf::from("/hf"));
    assert_eq!(s.packed_dir, PathBuf::from("/hf/qwenmk"));

    let s = settings_from(&[
        ("HOME", "/home/u"),
        ("HF_HOME", "~/hf"),
        ("QWENMK_CACHE", "/packed"),
    ]);
    assert_eq!(s.hub_cache, PathBuf::from("/home/u/hf/hub"));
    assert_eq!(s.packed_dir, PathBuf::from("/packed"));

    let s = settings_from(&[
        ("HF_HOME", "/hf"),
        ("HF_ENDPOINT", "https://mirror.example/"),
    ]);
    assert_eq!(s.endpoint, "https://mirror.example");

    let err = HubSettings::from_lookup(|_| None).unwrap_err();
    assert!(matches!(err, HubError::NoCacheDir));
}

#[test]
fn token_comes_from_hf_token_then_the_token_file() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().to_str().unwrap();
    assert_eq!(settings_from(&[("HF_HOME", home)]).token, None);

    write(&root.path().join("token"), b"hf_fromfile\n");
    assert_eq!(
        settings_from(&[("HF_HOME", home)]).token.as_deref(),
        Some("hf_fromfile")
    );
    let s = settings_from(&[("HF_HOME", home), ("HF_TOKEN", "hf_fromenv")]);
    assert_eq!(s.token.as_deref(), Some("hf_fromenv"));
    // An empty HF_TOKEN counts as unset.
    let s = settings_from(&[("HF_HOME", home), ("HF_TOKEN", "")]);
    assert_eq!(s.token.as_deref(), Some("hf_fromfile"));

    let other = root.path().join("elsewhere");
    write(&other, b"  hf_path  ");
    let s = settings_from(&[
        ("HF_HOME", home),
        ("HF_TOKEN_PATH", other.to_str().unwrap()),
    ]);
    assert_eq!(s.token.as_deref(), Some("hf_path"));

    write(&root.path().join("token"), b"\n");
    assert_eq!(settings_from(&[("HF_HOME", home)]).token, None);
}

// ------------------------------------------------------------------------------------------
// Packed-file cache

fn hub_files(commit: &str) -> ModelFiles {
    let dir = PathBuf::from("/cache/models--Qwen--Qwen3-0.6B/snapshots").join(commit);
    ModelFiles {
        origin: Origin::Hub {
            repo_id: "Qwen/Qwen3-0.6B".into(),
            revision: "main".into(),
            commit: commit.into(),
        },
        config: dir.join("config.json"),
        generation_config: None,
        tokenizer: dir.join("tokenizer.json"),
        tokenizer_config: dir.join("tokenizer_config.json"),
        weights: vec![dir.join("model.safetensors")],
        weights_index: None,
        dir,
    }
}

#[test]
fn packed_key_of_a_hub_snapshot_is_its_commit_and_format() {
    let settings = settings_from(&[("HF_HOME", "/hf")]);
    let a = packed_cache_path_for_version(&hub_files(COMMIT), &settings, 1).unwrap();
    assert_eq!(
        a,
        packed_cache_path_for_version(&hub_files(COMMIT), &settings, 1).unwrap()
    );
    assert_eq!(a.parent().unwrap(), Path::new("/hf/qwenmk"));
    let name = a.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("Qwen--Qwen3-0.6B-") && name.ends_with(".qwenmk"),
        "{name}"
    );

    // A revision name is not part of the identity: main and its commit share the file.
    let mut by_commit = hub_files(COMMIT);
    if let Origin::Hub { revision, .. } = &mut by_commit.origin {
        *revision = COMMIT.into();
    }
    assert_eq!(
        a,
        packed_cache_path_for_version(&by_commit, &settings, 1).unwrap()
    );

    assert_ne!(
        a,
        packed_cache_path_for_version(&hub_files(OTHER_COMMIT), &settings, 1).unwrap()
    );
    assert_ne!(
        a,
        packed_cache_path_for_version(&hub_files(COMMIT), &settings, 2).unwrap()
    );
    // The default uses the weights crate's current format version.
    assert_eq!(
        packed_cache_path(&hub_files(COMMIT), &settings).unwrap(),
        packed_cache_path_for_version(
            &hub_files(COMMIT),
            &settings,
            qwenmk_weights::FORMAT_VERSION
        )
        .unwrap()
    );
}

#[test]
fn packed_key_of_a_local_dir_changes_when_its_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_from(&[("HF_HOME", "/hf")]);
    write(&dir.path().join("config.json"), br#"{"hidden_size": 1024}"#);
    let weights = dir.path().join("model.safetensors");
    write(&weights, &vec![7u8; 200_000]);
    let key = || {
        let files = ModelFiles::from_dir(dir.path(), Origin::Local).unwrap();
        source_key(&files, 1).unwrap()
    };
    let original = key();
    assert_eq!(original, key(), "stable while nothing changes");
    assert_eq!(original.len(), 32);

    // config.json is hashed in full.
    write(&dir.path().join("config.json"), br#"{"hidden_size": 2048}"#);
    let edited_config = key();
    assert_ne!(original, edited_config);

    // Same size and mtime, different bytes inside the sampled head.
    let mtime = std::fs::metadata(&weights).unwrap().modified().unwrap();
    let mut bytes = vec![7u8; 200_000];
    bytes[10] = 8;
    write(&weights, &bytes);
    std::fs::File::options()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let edited_head = key();
    assert_ne!(edited_config, edited_head);

    // Only the modification time changes.
    let later = mtime + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert_ne!(edited_head, key());

    // The file name is human-readable and the format version is part of the key.
    let files = ModelFiles::from_dir(dir.path(), Origin::Local).unwrap();
    let path = packed_cache_path_for_version(&files, &settings, 1).unwrap();
    let stem = dir.path().canonicalize().unwrap();
    let expected_prefix = stem.file_name().unwrap().to_str().unwrap();
    assert!(
        path.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(expected_prefix)
    );
    assert_ne!(
        source_key(&files, 1).unwrap(),
        source_key(&files, 2).unwrap()
    );
}

mod fake_hub;

fn tiny_repo_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("config.json", b"{\"eos_token_id\": 1}".to_vec()),
        ("generation_config.json", b"{}".to_vec()),
        ("tokenizer.json", b"{\"tok\": 1}".to_vec()),
        ("tokenizer_config.json", b"{}".to_vec()),
        ("model.safetensors", weights_bytes()),
        ("README.md", b"not needed".to_vec()),
    ]
}

/// 300 kB that differ from byte to byte, so a resumed download at a wrong offset shows.
fn weights_bytes() -> Vec<u8> {
    (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn hub_settings(root: &Path, hub: &fake_hub::FakeHub) -> HubSettings {
    let mut settings = settings_in(root);
    settings.endpoint = hub.endpoint();
    settings
}

/// Files under the hub cache whose names end with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn download_fills_the_standard_cache_layout() {
    let root = tempfile::tempdir().unwrap();
    let hub = fake_hub::FakeHub::start(COMMIT, &tiny_repo_files());
    let mut settings = hub_settings(root.path(), &hub);
    settings.token = Some("hf_secret".into());

    let files = ModelSource::resolve("org/tiny", "main", false, &settings).unwrap();
    let repo_dir = settings.hub_cache.join("models--org--tiny");
    let snapshot = repo_dir.join("snapshots").join(COMMIT);
    assert_eq!(files.dir, snapshot);
    assert_eq!(std::fs::read(&files.weights[0]).unwrap(), weights_bytes());
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );
    // Large files are stored under their linked etag, linked relatively as huggingface_hub does.
    assert!(repo_dir.join("blobs/sha0004").is_file());
    #[cfg(unix)]
    assert_eq!(
        std::fs::read_link(snapshot.join("model.safetensors")).unwrap(),
        PathBuf::from("../../blobs/sha0004")
    );
    assert!(
        !repo_dir.join("refs").join(COMMIT).exists(),
        "no ref named after a commit"
    );
    assert!(
        !snapshot.join("README.md").exists(),
        "only the needed files are downloaded"
    );
    assert!(files_ending(&settings.hub_cache, ".incomplete").is_empty());
    // The token goes to the hub, never to the CDN it redirects to.
    for request in hub.requests() {
        let expected = (!request.path.starts_with("/cdn/")).then_some("Bearer hf_secret");
        assert_eq!(request.authorization.as_deref(), expected, "{request:?}");
    }

    // Now cached: offline works, and online needs no request.
    let before = hub.requests().len();
    assert_eq!(
        ModelSource::resolve("org/tiny", "main", true, &settings).unwrap(),
        files
    );
    assert_eq!(
        ModelSource::resolve("org/tiny", "main", false, &settings).unwrap(),
        files
    );
    assert_eq!(hub.requests().len(), before);
}

#[test]
fn hub_errors_are_explained() {
    let root = tempfile::tempdir().unwrap();
    let hub = fake_hub::FakeHub::start(COMMIT, &[("config.json", b"{}".to_vec())]);
    let settings = hub_settings(root.path(), &hub);

    // The fake hub answers 401 for repos it does not host, as the real one does.
    let err = ModelSource::resolve("org/private", "main", false, &settings).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, HubError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert!(text.contains("HF_TOKEN"), "{text}");

    // A repo without a tokenizer cannot be used for generation.
    let err = ModelSource::resolve("org/tiny", "main", false, &settings).unwrap_err();
    assert!(matches!(err, HubError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

// ------------------------------------------------------------------------------------------
// A network that misbehaves: every failure ends, in a bounded number of tries, with a sentence
// that names the endpoint; every recoverable one recovers.

#[test]
fn a_refused_connection_fails_at_once_naming_the_endpoint() {
    let root = tempfile::tempdir().unwrap();
    let settings = settings_in(root.path());
    let err = ModelSource::resolve("org/tiny", "main", false, &settings).unwrap_err();
    assert!(matches!(err, HubError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&settings.endpoint) && text.contains("--offline"),
        "{text}"
    );
}

#[test]
fn a_server_that_accepts_and_never_answers_is_given_up_after_the_retries() {
    let root = tempfile::tempdir().unwrap();
    let faults = fake_hub::Faults {
        stall_after_accept: true,
        ..Default::default()
    };
    let hub = fake_hub::FakeHub::start_with(COMMIT, &tiny_repo_files(), faults);
    let settings = hub_settings(root.path(), &hub);
    let err = ModelSource::resolve("org/tiny", "main", false, &settings).unwrap_err();
    assert!(matches!(err, HubError::Stalled { .. }), "{err:?}");
    let text = err.to_string();
    for part in [
        settings.endpoint.as_str(),
        "stopped answering",
        "3 tries",
        "HF_HUB_DOWNLOAD_TIMEOUT",
        "--offline",
    ] {
        assert!(text.contains(part), "no {part:?} in: {text}");
    }
    assert_eq!(hub.requests().len(), 3, "one request per try");
}

#[test]
fn transient_http_errors_are_retried() {
    let root = tempfile::tempdir().unwrap();
    let faults = fake_hub::Faults {
        unavailable_first: 2,
        ..Default::default()
    };
    let hub = fake_hub::FakeHub::start_with(COMMIT, &tiny_repo_files(), faults);
    let settings = hub_settings(root.path(), &hub);
    let files = ModelSource::resolve("org/tiny", "main", false, &settings).unwrap();
    assert_eq!(std::fs::read(&files.weights[0]).unwrap(), weights_bytes());
    let info_requests = hub
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/api/models/"))
        .count();
    assert_eq!(info_requests, 3, "two 503s, then the answer");

    // Too many: the status and the number of tries are said.
    let root = tempfile::tempdir().unwrap();
    let faults = fake_hub::Faults {
        unavailable_first: 100,
        ..Default::default()
    };
    let hub = fake_hub::FakeHub::start_with(COMMIT, &tiny_repo_files(), faults);
    let err = ModelSource::resolve("org/tiny", "main", false, &hub_settings(root.path(), &hub))
        .unwrap_err();
    assert!(
        matches!(err, HubError::HttpStatus { status: 503, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("3 tries"), "{err}");
}

/// The ranges the CDN was asked for, in order.
fn cdn_ranges(hub: &fake_hub::FakeHub) -> Vec<Option<String>> {
    hub.requests()
        .iter()
        .filter(|r| r.path.starts_with("/cdn/"))
        .map(|r| r.range.clone())
        .collect()
}

#[test]
fn a_download_that_stalls_midway_resumes_where_it_stopped() {
    let root = tempfile::tempdir().unwrap();
    let faults = fake_hub::Faults {
        stall_mid_file: Some(("model.safetensors".into(), 100_000)),
        ..Default::default()
    };
    let hub = fake_hub::FakeHub::start_with(COMMIT, &tiny_repo_files(), faults);
    let settings = hub_settings(root.path(), &hub);
    let files = ModelSource::resolve("org/tiny", "main", false, &settings).unwrap();
    assert_eq!(std::fs::read(&files.weights[0]).unwrap(), weights_bytes());
    assert_eq!(
        cdn_ranges(&hub),
        vec![None, Some("bytes=100000-".to_owned())]
    );
    assert!(files_ending(&settings.hub_cache, ".incomplete").is_empty());
}

#[test]
fn a_truncated_body_is_detected_and_resumed() {
    let root = tempfile::tempdir().unwrap();
    let faults = fake_hub::Faults {
        truncate_once: Some(("model.safetensors".into(), 123_456)),
        ..Default::default()
    };
    let hub = fake_hub::FakeHub::start_with(COMMIT, &tiny_repo_files(), faults);
    let files =
        ModelSource::resolve("org/tiny", "main", false, &hub_settings(root.path(), &hub)).unwrap();
    assert_eq!(std::fs::read(&files.weights[0]).unwrap(), weights_bytes());
    assert_eq!(
        cdn_ranges(&hub),
        vec![None, Some("bytes=123456-".to_owned())]
    );

    // A server that ignores ranges sends the whole file again; the result is still exact.
    let root = tempfile::tempdir().unwrap();
    let faults = fake_hub::Faults {
        truncate_once: Some(("model.safetensors".into(), 50_000)),
        ignore_range: true,
        ..Default::default()
    };
    let hub = fake_hub::FakeHub::start_with(COMMIT, &tiny_repo_files(), faults);
    let files =
        ModelSource::resolve("org/tiny", "main", false, &hub_settings(root.path(), &hub)).unwrap();
    assert_eq!(std::fs::read(&files.weights[0]).unwrap(), weights_bytes());
}

#[test]
fn an_incomplete_blob_left_by_a_killed_process_is_resumed_and_others_swept() {
    let root = tempfile::tempdir().unwrap();
    let hub = fake_hub::FakeHub::start(COMMIT, &tiny_repo_files());
    let settings = hub_settings(root.path(), &hub);
    let blobs = settings.hub_cache.join("models--org--tiny/blobs");
    write(
        &blobs.join("sha0004.incomplete"),
        &weights_bytes()[..70_000],
    );
    // Another file's leftover, whose lock nobody holds.
    write(&blobs.join("stale0001.incomplete"), b"old bytes");

    let files = ModelSource::resolve("org/tiny", "main", false, &settings).unwrap();
    assert_eq!(std::fs::read(&files.weights[0]).unwrap(), weights_bytes());
    assert_eq!(cdn_ranges(&hub), vec![Some("bytes=70000-".to_owned())]);
    assert!(files_ending(&settings.hub_cache, ".incomplete").is_empty());
}

#[test]
fn network_settings_come_from_the_environment() {
    let s = settings_from(&[("HF_HOME", "/hf")]);
    assert_eq!(s.network, http::NetworkPolicy::default());
    let s = settings_from(&[
        ("HF_HOME", "/hf"),
        ("HF_HUB_ETAG_TIMEOUT", "2.5"),
        ("HF_HUB_DOWNLOAD_TIMEOUT", "30"),
        ("QWENMK_HUB_RETRIES", "2"),
    ]);
    assert_eq!(s.network.metadata_timeout.as_millis(), 2500);
    assert_eq!(s.network.download_timeout.as_secs(), 30);
    assert_eq!(s.network.attempts, 2);
    for (name, value) in [
        ("HF_HUB_DOWNLOAD_TIMEOUT", "soon"),
        ("HF_HUB_ETAG_TIMEOUT", "0"),
        ("QWENMK_HUB_RETRIES", "0"),
    ] {
        let err = HubSettings::from_lookup(|n| match n {
            "HF_HOME" => Some("/hf".into()),
            n if n == name => Some(value.into()),
            _ => None,
        })
        .unwrap_err();
        assert!(
            matches!(err, HubError::BadSetting { .. }) && err.to_string().contains(name),
            "{err}"
        );
    }
}
