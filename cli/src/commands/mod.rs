//! One module per subcommand.

pub mod bench;
pub mod cache;
pub mod chat;
pub mod decode;
pub mod generate;
pub mod info;
pub mod interrupt;
pub mod model;
pub mod pack;
pub mod sampling;

use anyhow::Result;

use crate::cli::ModelArgs;
use crate::hub::{HubSettings, ModelFiles, ModelSource};

/// The hub settings from the environment, and the files `--model`, `--revision` and
/// `--offline` name (downloaded into the Hugging Face cache when needed).
pub fn resolve_model(args: &ModelArgs) -> Result<(HubSettings, ModelFiles)> {
    let settings = HubSettings::from_env()?;
    let files = ModelSource::resolve(&args.model, &args.revision, args.offline, &settings)?;
    Ok((settings, files))
}
