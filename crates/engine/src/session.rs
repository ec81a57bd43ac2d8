//! A conversation with a model: the tokens in its KV cache, the sampler, and the generation loop.
//!
//! One `Session` is one sequence. Tokens are fed once; the cache keeps them, so a chat turn only
//! evaluates what the turn adds. Nothing allocates per generated token: the logits buffer and the
//! sampler's candidates are sized once.

use std::time::{Duration, Instant};

use rustorch_model::{Logits, Model, ModelError};
use rustorch_tokenizer::{StreamDecoder, Tokenizer};

use crate::sampler::{Sampler, SamplerConfig};

/// Errors of a generation session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the context is full: {needed} tokens needed, the context holds {n_ctx}")]
    ContextFull { needed: usize, n_ctx: usize },
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-generation token (EOS, end of turn) was sampled; it is not part of the output.
    EndOfGeneration,
    /// The requested number of tokens was generated.
    MaxTokens,
    /// The context has no room for another token.
    ContextFull,
}

/// Timings of one `feed` + `generate`, for the stderr summary.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub prompt_tokens: usize,
    pub prompt_time: Duration,
    pub gen_tokens: usize,
    pub gen_time: Duration,
}

impl Timings {
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }
    pub fn gen_tps(&self) -> f64 {
        self.gen_tokens as f64 / self.gen_time.as_secs_f64().max(1e-9)
    }
}

pub struct Session {
    model: Box<dyn Model>,
    tokenizer: Tokenizer,
    sampler: Sampler,
    /// Every token in the cache, in order (`tokens.len()` is the next position).
    tokens: Vec<u32>,
    /// Logits of the last evaluated token: `(n_vocab)`.
    logits: Vec<f32>,
    pub timings: Timings,
}

impl Session {
    pub fn new(model: Box<dyn Model>, tokenizer: Tokenizer, sampler: SamplerConfig) -> Session {
        let n_vocab = model.config().n_vocab;
        let n_ctx = model.n_ctx();
        Session {
            model,
            tokenizer,
            sampler: Sampler::new(sampler, n_vocab),
            tokens: Vec::with_capacity(n_ctx),
            logits: Vec::with_capacity(n_vocab),
            timings: Timings::default(),
        }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn model(&self) -> &dyn Model {
        self.model.as_ref()
    }

    /// Tokens in the cache.
    pub fn n_past(&self) -> usize {
        self.tokens.len()
    }

    pub fn n_ctx(&self) -> usize {
        self.model.n_ctx()
    }

    /// Whether `n` more tokens fit the context.
    pub fn fits(&self, n: usize) -> bool {
        self.tokens.len() + n <= self.model.n_ctx()
    }

    /// Evaluates `ids` after the tokens already in the cache, as one batch.
    pub fn feed(&mut self, ids: &[u32]) -> Result<(), SessionError> {
        if ids.is_empty() {
            return Ok(());
        }
        if !self.fits(ids.len()) {
            return Err(SessionError::ContextFull {
                needed: self.tokens.len() + ids.len(),
                n_ctx: self.model.n_ctx(),
            });
        }
        let t0 = Instant::now();
        self.model
            .eval(ids, self.tokens.len(), Logits::Last, &mut self.logits)?;
        self.tokens.extend_from_slice(ids);
        self.timings.prompt_tokens += ids.len();
        self.timings.prompt_time += t0.elapsed();
        Ok(())
    }

    /// Samples up to `max_tokens` tokens after what was fed, streaming complete UTF-8 text to
    /// `on_text`. Returns the generated ids (without the end-of-generation token) and why it stopped.
    pub fn generate(
        &mut self,
        max_tokens: usize,
        mut on_text: impl FnMut(&str),
    ) -> Result<(Vec<u32>, StopReason), SessionError> {
        if self.tokens.is_empty() {
            return Err(SessionError::Model(ModelError::Backend(
                "nothing to continue: feed a prompt first".into(),
            )));
        }
        let mut decoder = StreamDecoder::new(&self.tokenizer);
        // Reused for every token's text: nothing allocates per token once it has grown.
        let mut text = String::with_capacity(256);
        let mut out = Vec::with_capacity(max_tokens.min(self.model.n_ctx()));
        let t0 = Instant::now();
        let reason = loop {
            if out.len() >= max_tokens {
                break StopReason::MaxTokens;
            }
            let id = self.sampler.sample(&self.logits, &self.tokens);
            if self.tokenizer.is_eog(id) {
                break StopReason::EndOfGeneration;
            }
            out.push(id);
            text.clear();
            decoder.push_into(id, &mut text);
            if !text.is_empty() {
                on_text(&text);
            }
            if !self.fits(1) {
                break StopReason::ContextFull;
            }
            // Evaluated even when it is the last one, so the cache always holds every token and a
            // later turn can continue from here.
            self.model
                .eval(&[id], self.tokens.len(), Logits::Last, &mut self.logits)?;
            self.tokens.push(id);
        };
        let tail = decoder.flush();
        if !tail.is_empty() {
            on_text(&tail);
        }
        self.timings.gen_tokens += out.len();
        self.timings.gen_time += t0.elapsed();
        Ok((out, reason))
    }
}
