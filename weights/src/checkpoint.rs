//! A Hugging Face Qwen3 checkpoint directory (`config.json` plus `model.safetensors`, or shards
//! listed by `model.safetensors.index.json`), memory-mapped and checked tensor by tensor against
//! the config before anything is packed.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors, tensor::Metadata};

use crate::config::{ConfigError, ModelConfig};
use crate::layout::{LayerPart, TensorId};

/// File names Hugging Face uses inside a checkpoint directory.
pub const CONFIG_FILE: &str = "config.json";
pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Why a checkpoint directory cannot be packed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{} holds no weights: expected `{SINGLE_FILE}` or `{INDEX_FILE}` next to `{CONFIG_FILE}`", dir.display())]
    NoWeights { dir: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a valid safetensors file ({reason}); it is probably truncated or corrupt, so download it again", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{} is not a valid shard index ({reason}); download it again", path.display())]
    BadIndex { path: PathBuf, reason: String },
    #[error(
        "tensor `{name}` is missing from {location}; the checkpoint does not match its config.json"
    )]
    MissingTensor { name: String, location: String },
    #[error("tensor `{name}` in {} is {found} but qwenmk needs BF16; download the original bfloat16 checkpoint", path.display())]
    WrongDtype {
        name: String,
        path: PathBuf,
        found: String,
    },
    #[error("tensor `{name}` in {} has shape {found:?} but config.json implies {expected:?}; the weights and the config do not belong together", path.display())]
    WrongShape {
        name: String,
        path: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor `{name}` in {} belongs to layer {layer}, but config.json says num_hidden_layers = {layers}; the weights and the config do not belong together", path.display())]
    ExtraLayer {
        name: String,
        path: PathBuf,
        layer: usize,
        layers: usize,
    },
}

/// One memory-mapped safetensors file.
struct Shard {
    path: PathBuf,
    mmap: Mmap,
    /// Where the tensor data starts: 8 length bytes plus the JSON header.
    data_start: usize,
    metadata: Metadata,
}

impl Shard {
    fn open(path: PathBuf) -> Result<Self, CheckpointError> {
        let file = File::open(&path).map_err(|source| CheckpointError::Read {
            path: path.clone(),
            source,
        })?;
        // SAFETY: the map is read-only; as with any mmap, another process truncating the file
        // while we read it would fault, which is the documented caveat of memmap2.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|source| CheckpointError::Read {
            path: path.clone(),
            source,
        })?;
        // read_metadata checks the header and that the tensors exactly cover the rest of the
        // file, so a truncated download fails here rather than at a tensor access.
        let (header_len, metadata) =
            SafeTensors::read_metadata(&mmap).map_err(|e| CheckpointError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        Ok(Shard {
            path,
            mmap,
            data_start: 8 + header_len,
            metadata,
        })
    }
}

/// A checkpoint directory whose tensors all exist with BF16 dtype and the shapes the config
/// implies (checked by [`Checkpoint::open`]).
pub struct Checkpoint {
    dir: PathBuf,
    config: ModelConfig,
    shards: Vec<Shard>,
    /// Tensor name → index into `shards`.
    location: HashMap<String, usize>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("files", &self.files())
            .field("tensors", &self.location.len())
            .finish()
    }
}

impl Checkpoint {
    /// Opens `dir`, parses `config.json`, maps every safetensors file and checks every tensor
    /// the packed layout needs.
    pub fn open(dir: &Path) -> Result<Self, CheckpointError> {
        let config = ModelConfig::from_file(&dir.join(CONFIG_FILE))?;
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        // A single file wins when both exist, as in transformers.
        let shards = if single.is_file() {
            vec![Shard::open(single)?]
        } else if index.is_file() {
            open_shards(dir, &index)?
        } else {
            return Err(CheckpointError::NoWeights {
                dir: dir.to_path_buf(),
            });
        };
        let mut location = HashMap::new();
        for (i, shard) in shards.iter().enumerate() {
            for name in shard.metadata.offset_keys() {
                location.insert(name, i);
            }
        }
        let checkpoint = Checkpoint {
            dir: dir.to_path_buf(),
            config,
            shards,
            location,
        };
        checkpoint.check()?;
        Ok(checkpoint)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The safetensors files, in the order they were opened.
    pub fn files(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// Whether the files contain a tensor of this name (used or not).
    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// The raw little-endian BF16 bytes of a tensor, after checking its dtype and shape.
    pub fn tensor_bytes(&self, name: &str, expected: &[usize]) -> Result<&[u8], CheckpointError> {
        let Some(&shard_index) = self.location.get(name) else {
            return Err(CheckpointError::MissingTensor {
                name: name.to_owned(),
                location: self.describe_files(),
            });
        };
        let shard = &self.shards[shard_index];
        let missing = || CheckpointError::MissingTensor {
            name: name.to_owned(),
            location: shard.path.display().to_string(),
        };
        let info = shard.metadata.info(name).ok_or_else(missing)?;
        if info.dtype != Dtype::BF16 {
            return Err(CheckpointError::WrongDtype {
                name: name.to_owned(),
                path: shard.path.clone(),
                found: format!("{:?}", info.dtype),
            });
        }
        if info.shape != expected {
            return Err(CheckpointError::WrongShape {
                name: name.to_owned(),
                path: shard.path.clone(),
                expected: expected.to_vec(),
                found: info.shape.clone(),
            });
        }
        let (start, end) = info.data_offsets;
        // read_metadata verified the offsets against the file length; `get` keeps that promise
        // checked rather than assumed.
        shard
            .mmap
            .get(shard.data_start + start..shard.data_start + end)
            .ok_or_else(|| CheckpointError::Corrupt {
                path: shard.path.clone(),
                reason: format!("tensor `{name}` lies outside the file"),
            })
    }

    /// Every tensor the packed layout needs is present as BF16 with the right shape, and no
    /// tensor belongs to a layer beyond `num_hidden_layers`.
    fn check(&self) -> Result<(), CheckpointError> {
        // Each packed tensor needs at least one stored tensor: too few stored tensors means a
        // layer count the files cannot back, found before a table of that size is planned.
        let needed = crate::layout::tensor_count(&self.config);
        if (self.location.len() as u64) < needed {
            // The first absent one is found within the first (stored / 8 + 1) layers.
            let layers = self.config.num_hidden_layers;
            let ids = std::iter::once(TensorId::Embedding).chain((0..layers).flat_map(|layer| {
                crate::layout::LayerPart::ALL
                    .into_iter()
                    .map(move |part| TensorId::Layer { layer, part })
            }));
            let missing = ids
                .flat_map(source_names)
                .find(|name| !self.location.contains_key(name))
                .unwrap_or_else(|| "model.norm.weight".to_owned());
            return Err(CheckpointError::MissingTensor {
                name: missing,
                location: self.describe_files(),
            });
        }
        for id in crate::layout::plan(&self.config).iter().map(|t| t.id) {
            for (name, shape) in self.sources(id) {
                self.tensor_bytes(&name, &shape)?;
            }
        }
        let layers = self.config.num_hidden_layers;
        let mut extra: Vec<(usize, &String, usize)> = self
            .location
            .iter()
            .filter_map(|(name, &shard)| {
                let rest = name.strip_prefix("model.layers.")?;
                let layer: usize = rest.split('.').next()?.parse().ok()?;
                (layer >= layers).then_some((layer, name, shard))
            })
            .collect();
        extra.sort();
        if let Some(&(layer, name, shard)) = extra.first() {
            return Err(CheckpointError::ExtraLayer {
                name: name.clone(),
                path: self.shards[shard].path.clone(),
                layer,
                layers,
            });
        }
        Ok(())
    }

    /// Source tensor names with the shape each must have.
    pub(crate) fn sources(&self, id: TensorId) -> Vec<(String, Vec<usize>)> {
        let c = &self.config;
        let hidden = c.hidden_size;
        source_names(id)
            .into_iter()
            .map(|name| {
                let shape = match id {
                    TensorId::Layer {
                        part: LayerPart::Qkv,
                        ..
                    } if name.ends_with("q_proj.weight") => vec![c.q_dim(), hidden],
                    TensorId::Layer {
                        part: LayerPart::Qkv,
                        ..
                    } => vec![c.kv_dim(), hidden],
                    TensorId::Layer {
                        part: LayerPart::GateUp,
                        ..
                    } => vec![c.intermediate_size, hidden],
                    other => other.shape(c),
                };
                (name, shape)
            })
            .collect()
    }

    fn describe_files(&self) -> String {
        match self.shards.as_slice() {
            [one] => one.path.display().to_string(),
            _ => format!("the shards of {}", self.dir.join(INDEX_FILE).display()),
        }
    }
}

/// Hugging Face names of the tensors that make up a packed tensor. The LM head of a tied model
/// is the embedding, so a tied model never asks for `lm_head.weight`.
fn source_names(id: TensorId) -> Vec<String> {
    let layer_name = |layer: usize, suffix: &str| format!("model.layers.{layer}.{suffix}.weight");
    match id {
        TensorId::Embedding => vec!["model.embed_tokens.weight".to_owned()],
        TensorId::FinalNorm => vec!["model.norm.weight".to_owned()],
        TensorId::LmHead => vec!["lm_head.weight".to_owned()],
        TensorId::Layer { layer, part } => match part {
            LayerPart::InputNorm => vec![layer_name(layer, "input_layernorm")],
            LayerPart::Qkv => ["q_proj", "k_proj", "v_proj"]
                .iter()
                .map(|p| layer_name(layer, &format!("self_attn.{p}")))
                .collect(),
            LayerPart::QNorm => vec![layer_name(layer, "self_attn.q_norm")],
            LayerPart::KNorm => vec![layer_name(layer, "self_attn.k_norm")],
            LayerPart::O => vec![layer_name(layer, "self_attn.o_proj")],
            LayerPart::PostNorm => vec![layer_name(layer, "post_attention_layernorm")],
            LayerPart::GateUp => vec![
                layer_name(layer, "mlp.gate_proj"),
                layer_name(layer, "mlp.up_proj"),
            ],
            LayerPart::Down => vec![layer_name(layer, "mlp.down_proj")],
        },
    }
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// Opens every shard the index names and checks that each tensor is where the index says.
fn open_shards(dir: &Path, index_path: &Path) -> Result<Vec<Shard>, CheckpointError> {
    let text = std::fs::read_to_string(index_path).map_err(|source| CheckpointError::Read {
        path: index_path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| CheckpointError::BadIndex {
        path: index_path.to_path_buf(),
        reason,
    };
    let index: ShardIndex = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let mut files: Vec<&String> = index.weight_map.values().collect();
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(bad("its weight_map is empty".to_owned()));
    }
    let mut shards = Vec::with_capacity(files.len());
    for file in files {
        // Shards live next to the index; a path elsewhere means a hand-edited or hostile index.
        if Path::new(file).components().count() != 1 {
            return Err(bad(format!("shard name {file:?} is not a plain file name")));
        }
        shards.push(Shard::open(dir.join(file))?);
    }
    for (name, file) in &index.weight_map {
        let shard = shards
            .iter()
            .find(|s| s.path.file_name().is_some_and(|f| f == file.as_str()))
            .ok_or_else(|| bad(format!("shard {file:?} was not opened")))?;
        if shard.metadata.info(name).is_none() {
            return Err(CheckpointError::MissingTensor {
                name: name.clone(),
                location: format!("{} (where {} says it is)", shard.path.display(), INDEX_FILE),
            });
        }
    }
    Ok(shards)
}
