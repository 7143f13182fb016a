//! Where the Hugging Face cache is, which token to send, and whether the network may be used,
//! decided from environment variables the way `huggingface_hub` (Python) decides them, so both
//! tools share one cache and one login.
//!
//! Variables are read through a lookup function instead of `std::env` so tests can describe an
//! environment without mutating the process (which would race between test threads).

use std::path::{Path, PathBuf};

use super::HubError;
use super::http::NetworkPolicy;

/// The hub used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Directory under `HF_HOME` that holds qwenmk's packed files (see [`super::packed_cache_path`]).
pub const PACKED_DIR_NAME: &str = "qwenmk";

/// Resolved hub settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// `HF_HOME`: the root of Hugging Face's files (token, hub cache).
    pub hf_home: PathBuf,
    /// The hub cache, which holds `models--{org}--{name}/{blobs,snapshots,refs}`.
    pub hub_cache: PathBuf,
    /// Which variable chose `hub_cache`, for error messages ("from HF_HUB_CACHE").
    pub hub_cache_origin: &'static str,
    /// Access token for private or gated repos.
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE` is set to a true value.
    pub offline: bool,
    /// `HF_ENDPOINT`, else [`DEFAULT_ENDPOINT`].
    pub endpoint: String,
    /// Where packed files go: `$QWENMK_CACHE`, else `$HF_HOME/qwenmk`.
    pub packed_dir: PathBuf,
    /// Timeouts and retries of every hub request.
    pub network: NetworkPolicy,
}

impl HubSettings {
    /// Settings from the process environment.
    pub fn from_env() -> Result<Self, HubError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Settings from `lookup(name) -> value`. Empty values count as unset, as in Python.
    ///
    /// - `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`;
    /// - hub cache: `HF_HUB_CACHE`, else the legacy `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`;
    /// - token: `HF_TOKEN` (or legacy `HUGGING_FACE_HUB_TOKEN`), else the file `HF_TOKEN_PATH`,
    ///   else `$HF_HOME/token` (what `huggingface-cli login` writes);
    /// - offline: `HF_HUB_OFFLINE` in `1`, `on`, `yes`, `true` (any case);
    /// - packed files: `QWENMK_CACHE`, else `$HF_HOME/qwenmk` — beside the hub cache rather than
    ///   inside it, because `huggingface-cli scan-cache` reports unknown entries in the hub cache
    ///   as corrupt repos;
    /// - network: `HF_HUB_ETAG_TIMEOUT` (connecting and metadata) and `HF_HUB_DOWNLOAD_TIMEOUT`
    ///   (silence while a file streams), in seconds, 10 by default as in huggingface_hub;
    ///   `QWENMK_HUB_RETRIES`, the tries per request (default 5, at least 1). Unparsable values
    ///   are an error rather than a silent default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, HubError> {
        let var = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let home = var("HOME")
            .or_else(|| var("USERPROFILE"))
            .map(PathBuf::from);
        let path_var = |name: &str| var(name).map(|v| expand_home(&v, home.as_deref()));

        let hf_home = match path_var("HF_HOME") {
            Some(p) => p,
            None => path_var("XDG_CACHE_HOME")
                .or_else(|| home.as_ref().map(|h| h.join(".cache")))
                .ok_or(HubError::NoCacheDir)?
                .join("huggingface"),
        };
        let (hub_cache, hub_cache_origin) = if let Some(p) = path_var("HF_HUB_CACHE") {
            (p, "from HF_HUB_CACHE")
        } else if let Some(p) = path_var("HUGGINGFACE_HUB_CACHE") {
            (p, "from HUGGINGFACE_HUB_CACHE")
        } else if var("HF_HOME").is_some() {
            (hf_home.join("hub"), "from HF_HOME")
        } else {
            (hf_home.join("hub"), "default location")
        };
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let file = path_var("HF_TOKEN_PATH").unwrap_or_else(|| hf_home.join("token"));
                read_token_file(&file)
            });
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| is_truthy(&v));
        let endpoint = var("HF_ENDPOINT")
            .map(|e| e.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let packed_dir = path_var("QWENMK_CACHE").unwrap_or_else(|| hf_home.join(PACKED_DIR_NAME));
        let mut network = NetworkPolicy::default();
        if let Some(value) = var("HF_HUB_ETAG_TIMEOUT") {
            network.metadata_timeout = seconds("HF_HUB_ETAG_TIMEOUT", &value)?;
        }
        if let Some(value) = var("HF_HUB_DOWNLOAD_TIMEOUT") {
            network.download_timeout = seconds("HF_HUB_DOWNLOAD_TIMEOUT", &value)?;
        }
        if let Some(value) = var("QWENMK_HUB_RETRIES") {
            network.attempts = value
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|&n| (1..=100).contains(&n))
                .ok_or_else(|| HubError::BadSetting {
                    name: "QWENMK_HUB_RETRIES",
                    value: value.clone(),
                    expected: "a whole number of tries from 1 to 100",
                })?;
        }

        Ok(Self {
            hf_home: absolute(hf_home),
            // Relative symlinks between blobs/ and snapshots/ are computed from absolute paths.
            hub_cache: absolute(hub_cache),
            hub_cache_origin,
            token,
            offline,
            endpoint,
            packed_dir: absolute(packed_dir),
            network,
        })
    }
}

/// A timeout in seconds (fractions allowed), from 0.1 s to a day.
fn seconds(name: &'static str, value: &str) -> Result<std::time::Duration, HubError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| (0.1..=86_400.0).contains(s))
        .map(std::time::Duration::from_secs_f64)
        .ok_or_else(|| HubError::BadSetting {
            name,
            value: value.to_owned(),
            expected: "a number of seconds from 0.1 to 86400",
        })
}

/// `huggingface_hub`'s truthy values for boolean variables.
fn is_truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "on" | "yes" | "true"
    )
}

/// Python applies `os.path.expanduser` to these variables; so do we for a leading `~`.
fn expand_home(value: &str, home: Option<&Path>) -> PathBuf {
    match (value.strip_prefix('~'), home) {
        (Some(""), Some(home)) => home.to_path_buf(),
        (Some(rest), Some(home)) if rest.starts_with(['/', '\\']) => home.join(&rest[1..]),
        _ => PathBuf::from(value),
    }
}

fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

/// The token file holds the token on one line; an empty or unreadable file means no token.
fn read_token_file(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_owned())
}
