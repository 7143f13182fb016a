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
    /// Decoding is greedy. The first run on a model packs its weights into qwenmk's cache
    /// ($QWENMK_CACHE, else $HF_HOME/qwenmk); later runs reuse that file, and a damaged one is
    /// packed again.
    Generate(GenerateArgs),
    /// Download (if needed) and convert a checkpoint to qwenmk's packed format.
    Pack(PackArgs),
    /// Show the GPU, the driver and the embedded kernels.
    Info(InfoArgs),
}

/// Where the model comes from: a local directory or a Hugging Face hub repository.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// A local checkpoint directory (with config.json) or a hub repository id.
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
    /// the file `generate` uses). An existing file is replaced atomically. The summary goes to
    /// stderr, the path of the file to stdout.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

/// Which engine runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// The GPU when one is usable, else the CPU (with a notice).
    Auto,
    /// The megakernel on a CUDA GPU.
    Gpu,
    /// A plain Rust implementation on all CPU cores.
    Cpu,
    /// The megakernel's source run on CPU threads (slow; for checking the kernel).
    Emulator,
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
    #[arg(long, short = 'n', default_value_t = 256)]
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
    #[arg(long, value_name = "N")]
    pub max_context: Option<usize>,
    /// End stdout with one JSON line (after the streamed text and a newline):
    /// {"prompt_tokens": [ids], "tokens": [ids], "text": "...", "stats": {"engine",
    /// "prompt_tokens", "generated_tokens", "max_context", "prefill_s", "ttft_s", "decode_s",
    /// "tokens_per_s", "stop_reason": "eos" | "length" | "context"}}. As in Hugging Face's
    /// `generate`, `tokens` ends with the stop token when one ended generation; `text` (like the
    /// streamed text) leaves it out. ttft_s counts from the start of the command (loading and
    /// packing included); tokens_per_s is the decode rate after the first token (null when there
    /// was no decode step).
    #[arg(long)]
    pub json: bool,
    /// The prompt.
    pub prompt: String,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Write the embedded PTX to stdout instead.
    #[arg(long)]
    pub ptx: bool,
    /// Print the report as JSON.
    #[arg(long, conflicts_with = "ptx")]
    pub json: bool,
}
