//! Incremental detokenization for generation: token pieces are bytes, and a character may be
//! split across tokens (byte-fallback tokens, byte-level BPE), so text is released only once
//! its characters are complete.

use crate::Tokenizer;

/// Turns generated ids into text as they come. Pieces are concatenated as llama.cpp's CLI
/// prints them (`token_to_piece`, no leading-space stripping or space clean-up).
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    text: TextStream,
}

impl<'a> StreamDecoder<'a> {
    /// Control tokens render as nothing, as in llama.cpp's default output.
    pub fn new(tokenizer: &'a Tokenizer) -> StreamDecoder<'a> {
        Self::with_special(tokenizer, false)
    }

    /// `special`: render control tokens (e.g. `<|im_end|>`) as their text.
    pub fn with_special(tokenizer: &'a Tokenizer, special: bool) -> StreamDecoder<'a> {
        StreamDecoder {
            tokenizer,
            text: TextStream::new(special),
        }
    }

    /// Adds one token; returns the text completed by it (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        let mut out = String::new();
        self.push_into(id, &mut out);
        out
    }

    /// Adds one token and appends the text it completes to `out`. Allocates nothing once `out`
    /// and the pending buffer have grown to a token's size, so a generation loop can reuse `out`.
    pub fn push_into(&mut self, id: u32, out: &mut String) {
        self.text.push_into(self.tokenizer, id, out);
    }

    /// Whatever is left at the end (an incomplete character becomes U+FFFD).
    pub fn flush(&mut self) -> String {
        self.text.flush()
    }
}

/// [`StreamDecoder`]'s state without the tokenizer, for a holder that keeps one per sequence and
/// passes the tokenizer in (a scheduler's many streams).
pub struct TextStream {
    special: bool,
    pending: Vec<u8>,
}

impl TextStream {
    /// `special`: render control tokens as their text.
    pub fn new(special: bool) -> TextStream {
        TextStream {
            special,
            // Longer than any token's piece in practice, so pushing never grows it.
            pending: Vec::with_capacity(256),
        }
    }

    /// Adds token `id` of `tokenizer` and appends the text it completes to `out`.
    pub fn push_into(&mut self, tokenizer: &Tokenizer, id: u32, out: &mut String) {
        self.pending
            .extend_from_slice(tokenizer.piece(id, self.special));
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).expect("checked by valid_up_to"));
                    match e.error_len() {
                        // bytes that can never start a character: replace them, go on
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            rest = &after[bad..];
                        }
                        // a character still waiting for its continuation bytes
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        // Keep only the incomplete tail, in place.
        let consumed = self.pending.len() - rest.len();
        self.pending.drain(..consumed);
    }

    /// Whatever is left at the end (an incomplete character becomes U+FFFD).
    pub fn flush(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}
