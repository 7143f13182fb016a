//! The three engines behind one interface: `gpu` (the megakernel on CUDA), `emulator` (the same
//! kernel source run on CPU threads) and `cpu` (a plain Rust Qwen3, the oracle).

pub mod cpu;

use anyhow::Result;

/// A decoder that holds one sequence's KV cache and advances it one token at a time.
///
/// Every engine produces the same token ids for the same packed weights and prompt: greedy
/// decoding, ties broken toward the lowest token id (as `torch.argmax` does).
pub trait Engine {
    /// Short name shown to users: `cpu`, `emulator` or `gpu`.
    fn name(&self) -> &'static str;
    /// How many positions (prompt + generated tokens) the KV cache holds.
    fn max_context(&self) -> usize;
    /// How many tokens are already in the KV cache (the position the next token goes to).
    fn position(&self) -> usize;
    /// Appends `token` at [`Engine::position`] and returns the greedy next token id.
    /// Fails, without changing state, when the cache is full.
    fn step(&mut self, token: u32) -> Result<u32>;
    /// Feeds a whole prompt and returns the greedy token that follows it.
    fn prefill(&mut self, tokens: &[u32]) -> Result<u32> {
        let mut next = None;
        for &t in tokens {
            next = Some(self.step(t)?);
        }
        next.ok_or_else(|| anyhow::anyhow!("the prompt is empty: give at least one token"))
    }
}
