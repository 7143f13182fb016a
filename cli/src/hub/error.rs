//! Errors of model resolution. Each is a sentence that names what was searched and how to fix it;
//! they reach the terminal as-is.

use std::path::PathBuf;

/// Everything that can go wrong while finding a model's files.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "cannot locate the Hugging Face cache: neither HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME nor \
         HOME is set; set HF_HOME to a writable directory"
    )]
    NoCacheDir,

    #[error("{name}={value:?} is not {expected}; fix or unset it")]
    BadSetting {
        name: &'static str,
        value: String,
        expected: &'static str,
    },

    #[error(
        "--model {spec:?} is neither an existing directory nor a Hugging Face repo id such as \
         Qwen/Qwen3-0.6B ({why})"
    )]
    InvalidSpec { spec: String, why: String },

    #[error(
        "--model {path} does not exist; give a directory that holds config.json and the \
         safetensors weights, or a hub repo id such as Qwen/Qwen3-0.6B"
    )]
    LocalDirMissing { path: PathBuf },

    #[error(
        "--model {path} is a file but not a qwenmk packed model; give a .qwenmk file written by \
         `qwenmk pack`, or the directory that holds config.json, tokenizer.json and the \
         safetensors weights"
    )]
    LocalIsFile { path: PathBuf },

    #[error(
        "--model {path} is already a packed model: `qwenmk pack` converts checkpoints (a \
         directory or a hub repo); run it directly with `qwenmk generate -m {path}`"
    )]
    AlreadyPacked { path: PathBuf },

    #[error(
        "{dir} has no config.json, so it is not a model directory; point --model at a directory \
         downloaded from the hub (config.json, tokenizer.json, model.safetensors, ...) or pass a \
         repo id such as Qwen/Qwen3-0.6B"
    )]
    LocalNoConfig { dir: PathBuf },

    #[error(
        "{dir} has no weights: expected model.safetensors, or model.safetensors.index.json and \
         the shards it lists{detail}"
    )]
    NoWeights { dir: PathBuf, detail: String },

    #[error("cannot read {path}: {message}")]
    BadIndex { path: PathBuf, message: String },

    #[error(
        "{repo_id} (revision {revision}) is not in the Hugging Face cache{why}: searched {searched} \
         (cache {cache}). Run once without --offline and without HF_HUB_OFFLINE=1 to download it, \
         or point --model at a local model directory"
    )]
    NotCached {
        repo_id: String,
        revision: String,
        searched: PathBuf,
        /// Where the cache directory came from ("from HF_HUB_CACHE", "default", ...).
        cache: String,
        why: String,
    },

    #[error(
        "could not reach the Hugging Face hub at {endpoint} ({message}). With no network, use \
         --offline (or HF_HUB_OFFLINE=1) to run from the local cache, or point --model at a local \
         model directory"
    )]
    Unreachable { endpoint: String, message: String },

    #[error(
        "the Hugging Face hub at {endpoint} stopped answering while sending {what} ({message}). \
         Check the network or proxy and run again (a download resumes where it stopped); raise \
         HF_HUB_DOWNLOAD_TIMEOUT or HF_HUB_ETAG_TIMEOUT (seconds) for a slow link; or use \
         --offline, or point --model at a local model"
    )]
    Stalled {
        endpoint: String,
        what: String,
        message: String,
    },

    #[error("the hub refused access to {repo_id} (HTTP {status}){hint}")]
    Unauthorized {
        repo_id: String,
        status: u16,
        hint: String,
    },

    #[error(
        "{what} was not found on the hub (HTTP 404): check the repo id and --revision {revision}"
    )]
    NotFound { what: String, revision: String },

    #[error("the hub answered HTTP {status} for {what}; try again later or use --offline")]
    HttpStatus { what: String, status: u16 },

    #[error(
        "another process has been downloading the file locked by {path} for over a minute; wait \
         for it to finish, then run again"
    )]
    Locked { path: PathBuf },

    #[error("downloading {file} of {repo_id} failed: {message}")]
    Download {
        repo_id: String,
        file: String,
        message: String,
    },

    #[error(
        "{repo_id} has no model.safetensors or model.safetensors.index.json at revision {revision}; qwenmk reads safetensors checkpoints only"
    )]
    RepoHasNoWeights { repo_id: String, revision: String },

    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}
