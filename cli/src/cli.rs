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
    /// Where to write the packed file (default: qwenmk's cache beside the Hugging Face cache).
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
    /// Which engine runs the model.
    #[arg(long, short = 'd', value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// The most tokens to generate.
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
    /// Keep generating past the end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Positions the KV cache holds, prompt included (default: the model's maximum).
    #[arg(long, value_name = "N")]
    pub max_context: Option<usize>,
    /// End stdout with one JSON line: prompt and generated token ids, text and stats.
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
