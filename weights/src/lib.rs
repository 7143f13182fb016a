//! Qwen3 weights: config, safetensors, packed format.
