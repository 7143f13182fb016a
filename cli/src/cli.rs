//! The command line: what users type. Each subcommand's work lives in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Qwen3-0.6B with the whole decode step in one persistent GPU kernel written in Rust.
#[derive(Debug, Parser)]
#[command(name = "qwenmk", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate text from a prompt, streaming it to stdout (stats go to stderr).
    ///
    /// Sampling defaults come from the model's generation_config.json (greedy when it says
    /// do_sample: false or has none); --temp 0 is greedy. The first run on a model packs its weights into qwenmk's cache
    /// ($QWENMK_CACHE, else $HF_HOME/qwenmk); later runs reuse that file, and a damaged one is
    /// packed again.
    Generate(GenerateArgs),
    /// Talk with the model: a multi-turn conversation in its chat template.
    ///
    /// The KV cache carries over between turns, so each turn feeds only its new tokens. On a
    /// terminal: line editing and history, /think on|off, /clear, /exit (or Ctrl-D); Ctrl-C
    /// stops a reply. With stdin not a terminal, every input line is one user turn and the
    /// replies go to stdout (--json: one JSON object per turn).
    Chat(ChatArgs),
    /// Download (if needed) and convert a checkpoint to qwenmk's packed format.
    Pack(PackArgs),
    /// Show the GPU, the driver and the embedded kernels.
    Info(InfoArgs),
    /// List the packed models in qwenmk's cache: name, source, size, date, and whether each is
    /// stale (its source changed, or an older format).
    Ls(LsArgs),
    /// Remove packed models from qwenmk's cache: by name (or source), or every stale one.
    Rm(RmArgs),
    /// Measure decode speed at several KV-cache depths: tok/s, µs per token, effective GB/s,
    /// % of the GPU's peak bandwidth and the bandwidth roofline.
    ///
    /// For each depth the KV cache is filled to that depth (with decode steps, or with random
    /// rows: --fill), then
    /// `-n` tokens are decoded `-r` times from that same depth after a warm-up. The table
    /// (or JSON, or CSV) goes to stdout; notices and a progress bar to stderr.
    Bench(BenchArgs),
}

/// Where the model comes from: a local directory or a Hugging Face hub repository.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// A local checkpoint directory (with config.json), a hub repository id, or (for
    /// `generate`, `chat` and `bench`) a packed .qwenmk file from `qwenmk pack -o`, which needs
    /// nothing else.
    #[arg(long, short = 'm', default_value = "Qwen/Qwen3-0.6B")]
    pub model: String,
    /// The hub revision (branch, tag or commit) to use.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Never touch the network: use the Hugging Face cache only (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Args)]
pub struct PackArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Where to write the packed file (default: qwenmk's cache beside the Hugging Face cache,
    /// the file `generate` uses). Its folder must exist. An existing file is replaced
    /// atomically. The file carries the tokenizer, chat template and generation config:
    /// `qwenmk generate -m FILE` runs it with nothing beside it. The summary goes to stderr, the
    /// path of the file to stdout.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

pub use crate::engine::Device;

/// `--device` values and their help: the engine room defines [`Device`], the command line
/// spells it.
impl ValueEnum for Device {
    fn value_variants<'a>() -> &'a [Self] {
        &[Device::Auto, Device::Gpu, Device::Cpu, Device::Emulator]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            Device::Auto => PossibleValue::new("auto")
                .help("The GPU when one is usable, else the CPU (with a notice)"),
            Device::Gpu => PossibleValue::new("gpu").help("The megakernel on a CUDA GPU"),
            Device::Cpu => {
                PossibleValue::new("cpu").help("A plain Rust implementation on all CPU cores")
            }
            Device::Emulator => PossibleValue::new("emulator")
                .help("The megakernel's source run on CPU threads (slow; for checking the kernel)"),
        })
    }
}

use crate::engine::KvDtype;

/// `--kv-cache` values: the command line's spelling of [`KvDtype`], defined in the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KvCacheArg {
    /// Keys and values rounded to BF16: half the bytes per position
    Bf16,
    /// Keys and values kept in f32, as transformers' float32 reference
    F32,
}

impl From<KvCacheArg> for KvDtype {
    fn from(arg: KvCacheArg) -> KvDtype {
        match arg {
            KvCacheArg::Bf16 => KvDtype::Bf16,
            KvCacheArg::F32 => KvDtype::F32,
        }
    }
}

/// How the next token is chosen; every flag defaults to the model's generation_config.json.
#[derive(Debug, Args, Clone, Default)]
pub struct SamplingArgs {
    /// Temperature; 0 is greedy [default: generation_config.json's, 0 without do_sample].
    #[arg(long, value_name = "T", help_heading = "Sampling")]
    pub temp: Option<f32>,
    /// Keep only the K most likely tokens, at most 64; 0 turns it off.
    #[arg(long, value_name = "K", help_heading = "Sampling")]
    pub top_k: Option<u32>,
    /// Keep the most likely tokens until their mass reaches P; 1 turns it off.
    #[arg(long, value_name = "P", help_heading = "Sampling")]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than P times the most likely one; 0 turns it off.
    #[arg(long, value_name = "P", help_heading = "Sampling")]
    pub min_p: Option<f32>,
    /// Seed of the draws: the same seed gives the same tokens on every engine and run
    /// [default: a random seed, printed on stderr].
    #[arg(long, short = 's', value_name = "S", help_heading = "Sampling")]
    pub seed: Option<u64>,
    /// Divide the logits of recently seen tokens by R (multiply when negative); 1 turns it off.
    #[arg(long, value_name = "R", help_heading = "Sampling")]
    pub repeat_penalty: Option<f32>,
    /// How many recent tokens (the prompt's included) the penalty looks at; -1 = the whole
    /// context, 0 = none.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 64,
        allow_negative_numbers = true,
        help_heading = "Sampling"
    )]
    pub repeat_last_n: i64,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Which engine runs the model. `auto` takes the GPU when one can run the kernels, else
    /// the CPU (saying why on stderr).
    #[arg(long, short = 'd', value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// The most tokens to generate (a stop token that ends generation counts as one).
    #[arg(long, short = 'n', visible_alias = "n-predict", default_value_t = 256)]
    pub max_tokens: usize,
    /// Tokenize the prompt as it is, without the chat template.
    #[arg(long)]
    pub raw: bool,
    /// Let the model think first (the chat template's thinking mode; off by default).
    #[arg(long, conflicts_with = "raw")]
    pub think: bool,
    /// A system message placed before the prompt in the chat template.
    #[arg(long, value_name = "TEXT", conflicts_with = "raw")]
    pub system: Option<String>,
    /// Keep generating past the end-of-sequence tokens. Without it, generation ends at the
    /// first stop token: `eos_token_id` of generation_config.json, else of config.json, else the
    /// tokenizer's <|im_end|> and <|endoftext|> (stderr says when a fallback was used).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Positions the KV cache holds, prompt included (default: the model's maximum; on the
    /// emulator, which allocates its cache up front, at most 4096). A longer prompt is an error;
    /// generation stops when the cache is full, so at most N - prompt + 1 tokens come out.
    #[arg(long, short = 'c', visible_alias = "ctx-size", value_name = "N")]
    pub max_context: Option<usize>,
    /// The KV cache's element type [default: bf16 on the gpu engine, as llama.cpp and vLLM;
    /// f32 on the cpu and emulator engines]. Every engine runs both, token for token alike.
    #[arg(long, value_enum, value_name = "TYPE")]
    pub kv_cache: Option<KvCacheArg>,
    /// Print one JSON document on stdout instead of streaming the text:
    /// {"prompt_tokens": [ids], "tokens": [ids], "text": "...", "stats": {"engine",
    /// "prompt_tokens", "generated_tokens", "max_context", "kv_cache", "prefill_s", "ttft_s",
    /// "decode_s", "tokens_per_s", "sampling", "stop_reason": "eos" | "length" | "context" |
    /// "interrupted"}}. As in Hugging Face's `generate`, `tokens` ends with the stop token when
    /// one ended generation; `text` leaves it out. ttft_s counts from the start of the command
    /// (loading and packing included); tokens_per_s is the decode rate after the first token
    /// (null when there was no decode step).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// The prompt, as one argument.
    #[arg(long, short = 'p', value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Read the prompt from FILE (`-` for stdin).
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The prompt: words are joined with spaces; `-` reads stdin, as does no prompt at all
    /// when stdin is not a terminal.
    #[arg(
        value_name = "PROMPT",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub words: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Which engine runs the model (as for `generate`).
    #[arg(long, short = 'd', value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// The most tokens in one reply.
    #[arg(long, short = 'n', visible_alias = "n-predict", default_value_t = 1024)]
    pub max_tokens: usize,
    /// Start with thinking on (toggle with /think on|off).
    #[arg(long)]
    pub think: bool,
    /// A system message at the start of the conversation (and again after /clear).
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Positions the KV cache holds for the whole conversation (as for `generate`).
    #[arg(long, short = 'c', visible_alias = "ctx-size", value_name = "N")]
    pub max_context: Option<usize>,
    /// The KV cache's element type [default: bf16 on the gpu engine, as llama.cpp and vLLM;
    /// f32 on the cpu and emulator engines]. Every engine runs both, token for token alike.
    #[arg(long, value_enum, value_name = "TYPE")]
    pub kv_cache: Option<KvCacheArg>,
    /// One JSON object per turn on stdout instead of the streamed reply.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// What to remove: a file name as `qwenmk ls` shows it (or a unique prefix), or a source (a
    /// hub repo id such as Qwen/Qwen3-0.6B, a checkpoint directory) to remove all its packs.
    #[arg(value_name = "NAME", required_unless_present = "stale")]
    pub names: Vec<String>,
    /// Remove every stale pack: its source changed since packing (a branch moved on, local
    /// files were edited or deleted), or it is in an older format this qwenmk cannot read.
    #[arg(long)]
    pub stale: bool,
    /// Say what would be removed, and remove nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Write the embedded PTX modules to stdout instead (sm_90, then sm_80), each from its
    /// `.version` line, separated by a blank line.
    #[arg(long)]
    pub ptx: bool,
    /// With --ptx: write only the module for this architecture (sm_90 or sm_80), whole, as it
    /// is embedded.
    #[arg(long, value_name = "ARCH", requires = "ptx")]
    pub arch: Option<String>,
    /// Print the report as JSON.
    #[arg(long, conflicts_with = "ptx")]
    pub json: bool,
}

/// How `bench` writes its results to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchFormat {
    /// A Markdown table (llama-bench style) and the run's context.
    Md,
    /// Everything, every sample included, with the GPU, driver, qwenmk version and commit.
    Json,
    /// One line per depth.
    Csv,
}

/// How `bench` brings the KV cache to each depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fill {
    /// Decode pseudo-random tokens through the engine: the cache a user's run would hold.
    Steps,
    /// Write pseudo-random keys and values straight into the cache: seconds instead of a step
    /// per position (decode speed does not depend on the cache's values).
    Random,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Random weights of a model's shapes instead of a checkpoint, so that nothing is
    /// downloaded: `qwen3-0.6b` (the default), `tiny` (a 2-layer toy), or the path of a
    /// config.json (or of its directory). Packed once into qwenmk's cache, then reused.
    #[arg(
        long,
        value_name = "CONFIG",
        num_args = 0..=1,
        default_missing_value = "qwen3-0.6b",
        conflicts_with = "model"
    )]
    pub synthetic: Option<String>,
    /// Seed of the --synthetic weights (and of the tokens that fill the cache).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Which engine runs the model: as for `generate`, `auto` takes the GPU when one can run
    /// the kernels, else the CPU (saying why on stderr).
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// The KV cache's element type [default: bf16 on the gpu engine, as llama.cpp and vLLM;
    /// f32 on the cpu and emulator engines]. Every engine runs both, token for token alike.
    #[arg(long, value_enum, value_name = "TYPE")]
    pub kv_cache: Option<KvCacheArg>,
    /// KV-cache depths to measure at, comma-separated (llama-bench's -d). Default on the GPU:
    /// 0,128,512,1024,4096,8192,16384,32768; on the cpu: 0,32,128; on the emulator: 0,32.
    /// A depth whose run would not fit in the model's context is skipped with a notice.
    #[arg(
        long,
        short = 'd',
        visible_alias = "n-depth",
        value_delimiter = ',',
        value_name = "D,D,..."
    )]
    pub depth: Option<Vec<usize>>,
    /// Tokens decoded per timed run [default: 128; 16 on the emulator].
    #[arg(short = 'n', long = "tokens", value_name = "N")]
    pub tokens: Option<usize>,
    /// Prompt tokens per timed prompt-processing run (llama-bench's -p): a prefill of N tokens
    /// from each depth, reported as pp tok/s beside the decode figures [default: 512; 16 on the
    /// emulator; lowered to what fits beside the deepest depth]. 0 skips it.
    #[arg(short = 'p', long = "n-prompt", value_name = "N")]
    pub prompt: Option<usize>,
    /// Timed runs per depth [default: 5; 2 on the emulator].
    #[arg(short = 'r', long = "repetitions", value_name = "R")]
    pub repetitions: Option<usize>,
    /// Untimed decode steps at each depth before its runs, and as many prompt tokens (at most
    /// -p) prefilled before the prompt-processing runs [default: 16 on the GPU, 4 on the cpu,
    /// 1 on the emulator].
    #[arg(long, value_name = "N")]
    pub warmup: Option<usize>,
    /// How the KV cache is brought to each depth [default: steps; random on the virtual GPU,
    /// where a step takes seconds to minutes].
    #[arg(long, value_enum, value_name = "HOW")]
    pub fill: Option<Fill>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = BenchFormat::Md)]
    pub output: BenchFormat,
    /// Also draw tok/s and % of peak bandwidth against depth into this file: SVG or PNG, by its
    /// extension. Its folder must exist; it is checked before the run.
    #[arg(long, value_name = "FILE.svg|FILE.png")]
    pub plot: Option<PathBuf>,
    /// Peer measurements from `cargo xtask peers` (JSON): adds qwenmk's ratio to each peer at
    /// every depth.
    #[arg(long, value_name = "FILE.json")]
    pub peers: Option<PathBuf>,
}
