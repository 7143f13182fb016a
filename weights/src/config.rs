//! `config.json` of a Qwen3 checkpoint: parsing (both the transformers 4.x and 5.x spellings) and
//! validation against what qwenmk can run.
//!
//! [`ModelConfig`] is the single source of the model's dimensions: the packer, the loader, every
//! engine and the kernel read their constants from it, never from literals.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The architecture string Hugging Face writes for a Qwen3 causal language model.
pub const QWEN3_ARCHITECTURE: &str = "Qwen3ForCausalLM";
/// The `model_type` Hugging Face writes for Qwen3.
pub const QWEN3_MODEL_TYPE: &str = "qwen3";

/// Bytes per stored weight value: every tensor qwenmk packs is BF16.
pub const BYTES_PER_WEIGHT: u64 = 2;

/// A validated Qwen3 configuration: the fields of Hugging Face's `Qwen3Config` that decide the
/// computation, under their `config.json` names.
///
/// Fields that must hold a single value for qwenmk (`hidden_act: silu`, `attention_bias: false`,
/// `torch_dtype: bfloat16`, no sliding window, no RoPE scaling) are checked while parsing and not
/// kept.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architectures: Vec<String>,
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Width of one attention head. Qwen3-0.6B sets it explicitly (128) and it is not
    /// `hidden_size / num_attention_heads` (64) there; when absent it defaults to that quotient,
    /// as transformers' attention code does.
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    /// RoPE base θ (1,000,000 for Qwen3; the widespread 10,000 is a bug for this model).
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    /// `true`: the LM head is the token embedding. Absent means `false`, as in `Qwen3Config`.
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// `eos_token_id` may be one id or a list in `config.json`; empty when absent.
    pub eos_token_id: Vec<u32>,
}

/// Why a `config.json` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the model config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{origin} is not a valid model config ({source}); it should be the `config.json` published with the checkpoint"
    )]
    Parse {
        origin: ConfigOrigin,
        #[source]
        source: serde_json::Error,
    },
    #[error("{origin}: {problem}")]
    Invalid {
        origin: ConfigOrigin,
        problem: ConfigProblem,
    },
}

/// Where a config came from, for error messages.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigOrigin {
    File(PathBuf),
    /// Parsed from a string: `config.json` text handed over directly or stored in a packed file.
    Text,
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigOrigin::File(path) => write!(f, "{}", path.display()),
            ConfigOrigin::Text => f.write_str("the model config"),
        }
    }
}

/// A way in which a well-formed `config.json` describes a model qwenmk cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigProblem {
    #[error(
        "it describes a model of type {model_type} with architectures {architectures:?}; qwenmk runs only Qwen3 dense models (`model_type: \"qwen3\"`, architecture `Qwen3ForCausalLM`), such as Qwen/Qwen3-0.6B"
    )]
    WrongArchitecture {
        /// Quoted as found, or `(none)`.
        model_type: String,
        architectures: Vec<String>,
    },
    #[error(
        "`{field}` is missing; a Qwen3 config.json always gives it, so this file is probably not the checkpoint's config.json"
    )]
    MissingField { field: &'static str },
    #[error(
        "the weights are {found:?} but qwenmk packs and runs only bfloat16 checkpoints; download the original BF16 release"
    )]
    WrongDtype { found: String },
    #[error(
        "`hidden_act` is {found:?} but Qwen3 uses \"silu\"; other activations are not supported"
    )]
    WrongActivation { found: String },
    #[error(
        "`attention_bias` is true but Qwen3's attention projections have no bias; such checkpoints are not supported"
    )]
    AttentionBias,
    #[error(
        "sliding-window attention is enabled ({detail}); qwenmk implements full attention only"
    )]
    SlidingWindow { detail: String },
    #[error("RoPE scaling {found} is set; qwenmk implements only the default (unscaled) RoPE")]
    RopeScaling { found: String },
    #[error(
        "the RoPE base is given twice with different values (`rope_theta` = {top_level}, `rope_parameters.rope_theta` = {nested}); keep one"
    )]
    ConflictingRopeTheta { top_level: f64, nested: f64 },
    #[error("`{field}` is 0; every model dimension must be positive")]
    ZeroDimension { field: &'static str },
    #[error(
        "`{field}` is {value}, which does not fit the 32-bit values the packed format and the GPU kernel use"
    )]
    DimensionTooLarge { field: &'static str, value: u64 },
    #[error("`{field}` is {value}; it must be a positive finite number")]
    NotPositive { field: &'static str, value: f64 },
    #[error(
        "`num_attention_heads` ({heads}) is not a multiple of `num_key_value_heads` ({kv_heads}); grouped-query attention needs every key/value head to serve the same number of query heads"
    )]
    HeadsNotDivisible { heads: usize, kv_heads: usize },
    #[error("`head_dim` is {head_dim}; rotate-half RoPE needs an even head width")]
    OddHeadDim { head_dim: usize },
    #[error("`{field}` is {value}, which is not a valid token id")]
    BadTokenId { field: &'static str, value: String },
    #[error(
        "its dimensions describe {bytes} bytes of weights, more than any file can hold; the \
         numbers in config.json are wrong"
    )]
    Absurd { bytes: u128 },
}

impl ModelConfig {
    /// Reads and validates `config.json` at `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, ConfigOrigin::File(path.to_path_buf()))
    }

    /// Parses and validates `config.json` text.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, ConfigOrigin::Text)
    }

    fn parse(text: &str, origin: ConfigOrigin) -> Result<Self, ConfigError> {
        let raw: RawConfig = match serde_json::from_str(text) {
            Ok(raw) => raw,
            Err(source) => return Err(ConfigError::Parse { origin, source }),
        };
        raw.validate()
            .map_err(|problem| ConfigError::Invalid { origin, problem })
    }

    /// Serialises to `config.json` text in the transformers 4.51 spelling, with the fields that
    /// qwenmk fixes (activation, dtype, no bias, no sliding window) written out, so that
    /// [`ModelConfig::from_json_str`] reads it back to an equal value.
    pub fn to_json_string(&self) -> String {
        let raw = RawConfig {
            architectures: Some(self.architectures.clone()),
            model_type: Some(self.model_type.clone()),
            vocab_size: Some(self.vocab_size as u64),
            hidden_size: Some(self.hidden_size as u64),
            intermediate_size: Some(self.intermediate_size as u64),
            num_hidden_layers: Some(self.num_hidden_layers as u64),
            num_attention_heads: Some(self.num_attention_heads as u64),
            num_key_value_heads: Some(self.num_key_value_heads as u64),
            head_dim: Some(self.head_dim as u64),
            max_position_embeddings: Some(self.max_position_embeddings as u64),
            rope_theta: Some(self.rope_theta),
            rope_parameters: None,
            rope_scaling: None,
            rms_norm_eps: Some(self.rms_norm_eps),
            tie_word_embeddings: Some(self.tie_word_embeddings),
            torch_dtype: Some("bfloat16".to_owned()),
            dtype: None,
            hidden_act: Some("silu".to_owned()),
            attention_bias: Some(false),
            use_sliding_window: Some(false),
            sliding_window: None,
            layer_types: None,
            bos_token_id: self.bos_token_id.map(serde_json::Value::from),
            eos_token_id: match self.eos_token_id.as_slice() {
                [] => None,
                [one] => Some(serde_json::Value::from(*one)),
                many => Some(serde_json::Value::from(many.to_vec())),
            },
        };
        // Serialising plain numbers, strings and vectors cannot fail.
        serde_json::to_string_pretty(&raw).unwrap_or_default()
    }

    /// Width of all query heads together: `num_attention_heads * head_dim`.
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Width of all key (or value) heads together: `num_key_value_heads * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Query heads that share one key/value head.
    pub fn gqa_group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Rows of the fused Q/K/V projection: `q_dim + 2 * kv_dim`.
    pub fn qkv_rows(&self) -> usize {
        self.q_dim() + 2 * self.kv_dim()
    }

    /// Weight values of one decoder layer (norms, attention and MLP projections).
    pub fn params_per_layer(&self) -> u64 {
        let (h, q, kv, i, d) = (
            self.hidden_size as u64,
            self.q_dim() as u64,
            self.kv_dim() as u64,
            self.intermediate_size as u64,
            self.head_dim as u64,
        );
        let norms = 2 * h + 2 * d;
        let attention = (q + 2 * kv) * h + h * q;
        let mlp = 3 * i * h;
        norms + attention + mlp
    }

    /// Weight values of the LM head (`vocab_size * hidden_size`), whether tied or not.
    pub fn lm_head_params(&self) -> u64 {
        self.vocab_size as u64 * self.hidden_size as u64
    }

    /// Weight bytes one decode step must read: every layer, the final norm, the LM head and the
    /// single embedding row of the input token. The tied embedding counts once, as the LM head.
    /// For Qwen3-0.6B this is 1.192 GB, the figure every bandwidth roofline starts from.
    pub fn weight_bytes_per_token(&self) -> u64 {
        let layers = self.num_hidden_layers as u64 * self.params_per_layer();
        let final_norm = self.hidden_size as u64;
        let embedding_row = self.hidden_size as u64;
        (layers + final_norm + self.lm_head_params() + embedding_row) * BYTES_PER_WEIGHT
    }

    /// Key and value entries one position adds to the cache over all layers.
    pub fn kv_values_per_position(&self) -> u64 {
        2 * self.num_hidden_layers as u64 * self.kv_dim() as u64
    }

    /// Bytes one position of a BF16 KV cache occupies (and one decode step reads per position
    /// of context): 112 KiB for Qwen3-0.6B.
    pub fn kv_bytes_per_position(&self) -> u64 {
        self.kv_values_per_position() * BYTES_PER_WEIGHT
    }
}

/// `config.json` as written by transformers 4.x or 5.x; every field optional so that validation,
/// not serde, decides what a missing field means.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RawConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    architectures: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vocab_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hidden_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    intermediate_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_hidden_layers: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_attention_heads: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_key_value_heads: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    head_dim: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_position_embeddings: Option<u64>,
    /// transformers 4.x: top level.
    #[serde(skip_serializing_if = "Option::is_none")]
    rope_theta: Option<f64>,
    /// transformers 5.x: `{"rope_theta": ..., "rope_type": "default"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    rope_parameters: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rope_scaling: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rms_norm_eps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tie_word_embeddings: Option<bool>,
    /// transformers 4.x name of the weights' dtype.
    #[serde(skip_serializing_if = "Option::is_none")]
    torch_dtype: Option<String>,
    /// transformers 5.x name of the weights' dtype.
    #[serde(skip_serializing_if = "Option::is_none")]
    dtype: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hidden_act: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attention_bias: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    use_sliding_window: Option<bool>,
    /// A window size may be present while `use_sliding_window` is false; then it is unused.
    #[serde(skip_serializing_if = "Option::is_none")]
    sliding_window: Option<serde_json::Value>,
    /// transformers 5.x per-layer attention kinds.
    #[serde(skip_serializing_if = "Option::is_none")]
    layer_types: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bos_token_id: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eos_token_id: Option<serde_json::Value>,
}

impl RawConfig {
    fn validate(self) -> Result<ModelConfig, ConfigProblem> {
        // 1. The model family, before anything else: a Llama config would otherwise fail on some
        //    later field with a confusing sentence.
        let architectures = self.architectures.clone().unwrap_or_default();
        let is_qwen3 = self.model_type.as_deref() == Some(QWEN3_MODEL_TYPE)
            && (architectures.is_empty() || architectures.iter().any(|a| a == QWEN3_ARCHITECTURE));
        if !is_qwen3 {
            return Err(ConfigProblem::WrongArchitecture {
                model_type: self
                    .model_type
                    .map_or("(none)".to_owned(), |t| format!("{t:?}")),
                architectures,
            });
        }

        // 2. Features Qwen3 checkpoints could switch on that qwenmk does not implement.
        let dtype = self.dtype.as_ref().or(self.torch_dtype.as_ref());
        if let Some(dtype) = dtype
            && dtype != "bfloat16"
        {
            return Err(ConfigProblem::WrongDtype {
                found: dtype.clone(),
            });
        }
        if let Some(act) = &self.hidden_act
            && act != "silu"
        {
            return Err(ConfigProblem::WrongActivation { found: act.clone() });
        }
        if self.attention_bias == Some(true) {
            return Err(ConfigProblem::AttentionBias);
        }
        if self.use_sliding_window == Some(true) {
            return Err(ConfigProblem::SlidingWindow {
                detail: format!(
                    "`use_sliding_window` is true, window {}",
                    self.sliding_window
                        .as_ref()
                        .map_or("unset".to_owned(), |w| w.to_string())
                ),
            });
        }
        if let Some(kind) = self
            .layer_types
            .iter()
            .flatten()
            .find(|kind| kind.as_str() != "full_attention")
        {
            return Err(ConfigProblem::SlidingWindow {
                detail: format!("`layer_types` contains {kind:?}"),
            });
        }
        check_rope_scaling(self.rope_scaling.as_ref())?;
        let rope_theta = self.rope_theta()?;

        // 3. Dimensions.
        let vocab_size = dim("vocab_size", self.vocab_size)?;
        let hidden_size = dim("hidden_size", self.hidden_size)?;
        let intermediate_size = dim("intermediate_size", self.intermediate_size)?;
        let num_hidden_layers = dim("num_hidden_layers", self.num_hidden_layers)?;
        let num_attention_heads = dim("num_attention_heads", self.num_attention_heads)?;
        // Absent means multi-head attention, as in transformers.
        let num_key_value_heads = match self.num_key_value_heads {
            None => num_attention_heads,
            some => dim("num_key_value_heads", some)?,
        };
        let head_dim = match self.head_dim {
            None => dim("head_dim", Some((hidden_size / num_attention_heads) as u64))?,
            some => dim("head_dim", some)?,
        };
        let max_position_embeddings = dim("max_position_embeddings", self.max_position_embeddings)?;
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(ConfigProblem::HeadsNotDivisible {
                heads: num_attention_heads,
                kv_heads: num_key_value_heads,
            });
        }
        if head_dim % 2 != 0 {
            return Err(ConfigProblem::OddHeadDim { head_dim });
        }
        // Derived widths must fit in 32 bits as well: the kernel indexes rows with u32.
        let qkv_rows = (num_attention_heads + 2 * num_key_value_heads) as u64 * head_dim as u64;
        fits_u32("num_attention_heads * head_dim", qkv_rows)?;
        fits_u32("2 * intermediate_size", 2 * intermediate_size as u64)?;

        // The whole layout's size must be a u64 with room to spare, so that no later offset
        // arithmetic overflows and no table is planned for a model that cannot exist.
        let (v, h, i, l) = (
            vocab_size as u128,
            hidden_size as u128,
            intermediate_size as u128,
            num_hidden_layers as u128,
        );
        let (q, kv) = (
            (num_attention_heads * head_dim) as u128,
            (num_key_value_heads * head_dim) as u128,
        );
        let per_layer = 2 * h + 2 * head_dim as u128 + (q + 2 * kv) * h + h * q + 3 * i * h;
        let tensors = 3 + 8 * l;
        let bytes = (2 * v * h + l * per_layer + h) * 2 + tensors * 256;
        if bytes > u128::from(u64::MAX / 4) {
            return Err(ConfigProblem::Absurd { bytes });
        }

        let rms_norm_eps = positive(
            "rms_norm_eps",
            self.rms_norm_eps.ok_or(ConfigProblem::MissingField {
                field: "rms_norm_eps",
            })?,
        )?;

        Ok(ModelConfig {
            architectures,
            model_type: QWEN3_MODEL_TYPE.to_owned(),
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings,
            rope_theta,
            rms_norm_eps,
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(false),
            bos_token_id: match &self.bos_token_id {
                None | Some(serde_json::Value::Null) => None,
                Some(value) => Some(token_id("bos_token_id", value)?),
            },
            eos_token_id: match &self.eos_token_id {
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(serde_json::Value::Array(ids)) => ids
                    .iter()
                    .map(|id| token_id("eos_token_id", id))
                    .collect::<Result<_, _>>()?,
                Some(value) => vec![token_id("eos_token_id", value)?],
            },
        })
    }

    /// The RoPE base from either spelling. A missing base is an error rather than
    /// transformers' 10,000 default: that default is wrong for every Qwen3 checkpoint, and
    /// silently using it is the classic bug of Qwen3 reimplementations.
    fn rope_theta(&self) -> Result<f64, ConfigProblem> {
        let nested = match &self.rope_parameters {
            None => None,
            Some(params) => {
                let rope_type = params
                    .get("rope_type")
                    .or_else(|| params.get("type"))
                    .and_then(|t| t.as_str())
                    .unwrap_or("default");
                if rope_type != "default" {
                    return Err(ConfigProblem::RopeScaling {
                        found: format!(
                            "`rope_parameters` = {}",
                            serde_json::Value::Object(params.clone())
                        ),
                    });
                }
                match params.get("rope_theta") {
                    None => None,
                    Some(value) => Some(value.as_f64().ok_or(ConfigProblem::NotPositive {
                        field: "rope_parameters.rope_theta",
                        value: f64::NAN,
                    })?),
                }
            }
        };
        let theta = match (self.rope_theta, nested) {
            (Some(top_level), Some(nested)) if top_level != nested => {
                return Err(ConfigProblem::ConflictingRopeTheta { top_level, nested });
            }
            (Some(theta), _) | (None, Some(theta)) => theta,
            (None, None) => {
                return Err(ConfigProblem::MissingField {
                    field: "rope_theta",
                });
            }
        };
        positive("rope_theta", theta)
    }
}

fn check_rope_scaling(scaling: Option<&serde_json::Value>) -> Result<(), ConfigProblem> {
    let Some(value) = scaling else { return Ok(()) };
    let is_default = match value {
        serde_json::Value::Null => true,
        serde_json::Value::Object(map) => {
            let kind = map.get("rope_type").or_else(|| map.get("type"));
            kind.and_then(|k| k.as_str()) == Some("default")
        }
        _ => false,
    };
    if is_default {
        Ok(())
    } else {
        Err(ConfigProblem::RopeScaling {
            found: format!("`rope_scaling` = {value}"),
        })
    }
}

fn dim(field: &'static str, value: Option<u64>) -> Result<usize, ConfigProblem> {
    let value = value.ok_or(ConfigProblem::MissingField { field })?;
    if value == 0 {
        return Err(ConfigProblem::ZeroDimension { field });
    }
    fits_u32(field, value)?;
    // u32 always fits usize on the 32- and 64-bit hosts qwenmk builds for.
    Ok(value as usize)
}

fn fits_u32(field: &'static str, value: u64) -> Result<(), ConfigProblem> {
    if value > u64::from(u32::MAX) {
        return Err(ConfigProblem::DimensionTooLarge { field, value });
    }
    Ok(())
}

fn positive(field: &'static str, value: f64) -> Result<f64, ConfigProblem> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(ConfigProblem::NotPositive { field, value })
    }
}

fn token_id(field: &'static str, value: &serde_json::Value) -> Result<u32, ConfigProblem> {
    value
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| ConfigProblem::BadTokenId {
            field,
            value: value.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLISHED: &str = include_str!("../../fixtures/qwen3-0.6b/config.json");

    fn published() -> ModelConfig {
        ModelConfig::from_json_str(PUBLISHED).expect("the published config parses")
    }

    #[test]
    fn published_config_has_qwen3_06b_dims() {
        let c = published();
        assert_eq!(
            (
                c.vocab_size,
                c.hidden_size,
                c.intermediate_size,
                c.num_hidden_layers
            ),
            (151_936, 1024, 3072, 28)
        );
        assert_eq!(
            (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
            (16, 8, 128)
        );
        assert_eq!(c.rope_theta, 1e6);
        assert_eq!(c.rms_norm_eps, 1e-6);
        assert!(c.tie_word_embeddings);
        assert_eq!(c.bos_token_id, Some(151_643));
        assert_eq!(c.eos_token_id, vec![151_645]);
    }

    #[test]
    fn bandwidth_helpers_match_the_anchors() {
        let c = published();
        assert_eq!(c.params_per_layer(), 15_730_944);
        // 1.192 GB per token and 112 KiB per position (notes/anchors.md).
        assert_eq!(c.weight_bytes_per_token() / 1_000_000, 1_192);
        assert_eq!(c.kv_bytes_per_position(), 112 * 1024);
    }

    #[test]
    fn transformers5_spelling_parses_to_the_same_config() {
        let mut json: serde_json::Value = serde_json::from_str(PUBLISHED).unwrap();
        let map = json.as_object_mut().unwrap();
        let theta = map.remove("rope_theta").unwrap();
        map.remove("rope_scaling");
        let dtype = map.remove("torch_dtype").unwrap();
        map.insert("dtype".into(), dtype);
        map.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_theta": theta, "rope_type": "default"}),
        );
        map.insert(
            "layer_types".into(),
            serde_json::json!(vec!["full_attention"; 28]),
        );
        map.insert("transformers_version".into(), "5.0.0".into());
        let v5 = ModelConfig::from_json_str(&json.to_string()).unwrap();
        assert_eq!(v5, published());
        assert_eq!(v5.rope_theta, 1e6);
        assert_eq!(v5.rms_norm_eps, 1e-6);
    }

    #[test]
    fn canonical_json_round_trips() {
        let c = published();
        assert_eq!(ModelConfig::from_json_str(&c.to_json_string()).unwrap(), c);
    }

    fn problem(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> String {
        let mut json: serde_json::Value = serde_json::from_str(PUBLISHED).unwrap();
        edit(json.as_object_mut().unwrap());
        ModelConfig::from_json_str(&json.to_string())
            .expect_err("the edited config must be rejected")
            .to_string()
    }

    #[test]
    fn rejections_say_what_is_wrong() {
        let msg = problem(|m| {
            m.insert("model_type".into(), "llama".into());
            m.insert(
                "architectures".into(),
                serde_json::json!(["LlamaForCausalLM"]),
            );
        });
        assert!(
            msg.contains("type \"llama\"") && msg.contains("Qwen3ForCausalLM"),
            "{msg}"
        );
        let msg = problem(|m| {
            m.insert("torch_dtype".into(), "float16".into());
        });
        assert!(
            msg.contains("\"float16\"") && msg.contains("bfloat16"),
            "{msg}"
        );
        let msg = problem(|m| {
            m.insert("hidden_act".into(), "gelu".into());
        });
        assert!(msg.contains("\"gelu\""), "{msg}");
        let msg = problem(|m| {
            m.insert("attention_bias".into(), true.into());
        });
        assert!(msg.contains("`attention_bias` is true"), "{msg}");
        let msg = problem(|m| {
            m.insert("use_sliding_window".into(), true.into());
        });
        assert!(msg.contains("sliding-window attention is enabled"), "{msg}");
        let msg = problem(|m| {
            m.insert(
                "rope_scaling".into(),
                serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
            );
        });
        assert!(
            msg.contains("RoPE scaling") && msg.contains("yarn"),
            "{msg}"
        );
        let msg = problem(|m| {
            m.insert("num_key_value_heads".into(), 5.into());
        });
        assert!(
            msg.contains("(16) is not a multiple of `num_key_value_heads` (5)"),
            "{msg}"
        );
        let msg = problem(|m| {
            m.insert("hidden_size".into(), 0.into());
        });
        assert!(msg.contains("`hidden_size` is 0"), "{msg}");
        let msg = problem(|m| {
            m.remove("rope_theta");
        });
        assert!(msg.contains("`rope_theta` is missing"), "{msg}");
        let msg = problem(|m| {
            m.insert("head_dim".into(), 127.into());
        });
        assert!(msg.contains("even head width"), "{msg}");
        let msg = problem(|m| {
            m.insert(
                "rope_parameters".into(),
                serde_json::json!({"rope_theta": 10000.0, "rope_type": "default"}),
            );
        });
        assert!(msg.contains("given twice"), "{msg}");
    }

    #[test]
    fn defaults_follow_transformers() {
        let msg = problem(|m| {
            m.remove("tie_word_embeddings");
            m.remove("head_dim");
            m.insert("hidden_size".into(), 2048.into());
            m.insert("model_type".into(), 7.into());
        });
        assert!(msg.contains("not a valid model config"), "{msg}");
        let mut json: serde_json::Value = serde_json::from_str(PUBLISHED).unwrap();
        let m = json.as_object_mut().unwrap();
        m.remove("tie_word_embeddings");
        m.remove("head_dim");
        let c = ModelConfig::from_json_str(&json.to_string()).unwrap();
        assert!(!c.tie_word_embeddings);
        assert_eq!(c.head_dim, 1024 / 16);
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let err = ModelConfig::from_file(Path::new("/nonexistent/config.json")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/config.json"),
            "{err}"
        );
    }
}
