//! Streaming detokenization: generated ids in, printable text out, one step at a time.
//!
//! Byte-level BPE splits a multi-byte UTF-8 character (emoji, CJK) across tokens; decoding token by
//! token would print U+FFFD halves. The tokenizers crate's `DecodeStream` holds text back while it
//! ends in an incomplete character and releases it once the character is whole. This wrapper adds
//! the end of the stream: text still held back when generation stops is flushed by `finish`.

use tokenizers::{
    DecodeStream, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper, Tokenizer,
};

use super::PromptError;

type InnerStream<'t> = DecodeStream<
    't,
    ModelWrapper,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// Turns generated ids into text chunks. The chunks concatenated equal the one-shot decode of all
/// ids (after [`TextStream::finish`]), and no chunk contains half a character.
pub struct TextStream<'t> {
    inner: InnerStream<'t>,
    tokenizer: &'t Tokenizer,
    skip_special_tokens: bool,
    /// Every id pushed, kept so `finish` can decode what `DecodeStream` still holds back.
    ids: Vec<u32>,
    /// Bytes of text handed out so far.
    emitted: usize,
}

impl<'t> TextStream<'t> {
    pub(super) fn new(tokenizer: &'t Tokenizer, skip_special_tokens: bool) -> Self {
        Self {
            inner: tokenizer.decode_stream(skip_special_tokens),
            tokenizer,
            skip_special_tokens,
            ids: Vec::new(),
            emitted: 0,
        }
    }

    /// Feeds one generated id. Returns the text it completes, or `None` while the text so far
    /// ends inside a character (or the id decodes to nothing, e.g. a skipped special token).
    pub fn push(&mut self, id: u32) -> Result<Option<String>, PromptError> {
        self.ids.push(id);
        let chunk = self.inner.step(id).map_err(|e| PromptError::Decode {
            ids: vec![id],
            message: e.to_string(),
        })?;
        if let Some(text) = &chunk {
            self.emitted += text.len();
        }
        Ok(chunk.filter(|text| !text.is_empty()))
    }

    /// Ends the stream: returns the text still held back (an incomplete character at the very end
    /// decodes to U+FFFD here, as the one-shot decode would show it), or `None` if there is none.
    pub fn finish(self) -> Result<Option<String>, PromptError> {
        let full = self
            .tokenizer
            .decode(&self.ids, self.skip_special_tokens)
            .map_err(|e| PromptError::Decode {
                ids: self.ids.clone(),
                message: e.to_string(),
            })?;
        // The held-back tail is what the full decode has beyond the emitted prefix; should a
        // decoder ever rewrite earlier text, nothing sensible can be appended, so emit nothing.
        Ok(full
            .get(self.emitted..)
            .filter(|tail| !tail.is_empty())
            .map(str::to_owned))
    }
}
