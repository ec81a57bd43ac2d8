//! Many sequences in one forward pass: the scheduler that owns the model.
//!
//! Each [`Engine::step`] evaluates every running sequence in one forward pass, so each weight is
//! read once per step: a decode row for every sequence that is generating first, then chunks of
//! the prompts being prefilled within a per-step token budget (a long prompt cannot stall the
//! others' tokens). Each sequence samples with its own sampler and seed and sends its tokens to
//! its request's [`Stream`]; a stream dropped by its reader cancels the request, whose blocks are
//! freed before the next step. The KV cache is a pool of blocks ([`BlockPool`]) with a block table
//! per sequence; full blocks are shared through the prefix cache. When the pool runs out, the
//! most recently admitted sequence is preempted (its blocks freed, its tokens prefilled again
//! later) rather than failed, and requests beyond a bound wait or are refused.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use rustorch_model::{paged, Batch, Model, ModelError, KV_BLOCK};
use rustorch_tokenizer::{TextStream, Tokenizer};
use tokio::sync::mpsc as events;
use tokio::sync::oneshot;

use crate::blocks::{BlockKey, BlockPool};
use crate::sampler::{Sampler, SamplerConfig};

/// How the engine schedules.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Rows one step evaluates at most: decode rows first, then prompt chunks in what is left.
    pub step_tokens: usize,
    /// Requests that may wait for a sequence slot; more are refused.
    pub max_waiting: usize,
    /// Share full blocks between sequences with the same prefix (off for models whose
    /// sliding-window layers keep rings: a ring holds no prefix).
    pub prefix_cache: bool,
    /// Size the chunks of long prompts (over 128 tokens left) that share a step with decode
    /// rows by time, so that such a step takes at most [`PACE`] times a decode step: a long
    /// prompt then cannot stretch the running sequences' inter-token time beyond that (a
    /// server's choice; off, the chunks fill `step_tokens` and the steps' rows do not depend on
    /// timing).
    pub pace_prompts: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            step_tokens: rustorch_model::N_UBATCH,
            max_waiting: 256,
            prefix_cache: true,
            pace_prompts: false,
        }
    }
}

/// A step with prompt rows beside decode rows takes at most this many times a decode step
/// ([`EngineConfig::pace_prompts`]).
pub const PACE: f64 = 1.8;

/// Prompt rows beside decode rows before any step was timed.
const PACE_FIRST: usize = 16;

/// Prompts with at most this many tokens left are not paced: they go whole into one step, as a
/// short stall of the running sequences, rather than taking many steps to their first token
/// (vLLM's long-prefill threshold plays this part).
const PACE_SHORT: usize = 128;

/// Steps of prompt rows only, with at least this many rows, give a first cost of a row.
const PACE_ROWS: usize = 32;

/// The time a decode step takes and the time a prompt row adds to it, as recent steps measured
/// them. The cost of a row is measured on the steps it is used for (a few prompt rows beside
/// decode rows cost more each than in a long prompt's step, whose weights serve hundreds of
/// rows), so chunks that turned out too slow make the next ones smaller.
#[derive(Debug, Default)]
struct Pace {
    /// Seconds of a step of decode rows only (moving average).
    decode: Option<f64>,
    /// Seconds one prompt row adds to a decode step (moving average).
    row: Option<f64>,
}

impl Pace {
    fn observe(&mut self, rows: usize, prompt_rows: usize, secs: f64) {
        fn avg(v: &mut Option<f64>, x: f64) {
            *v = Some(v.map_or(x, |a| a + 0.25 * (x - a)));
        }
        let decode_rows = rows - prompt_rows;
        if prompt_rows == 0 {
            avg(&mut self.decode, secs);
        } else if decode_rows > 0 {
            if let Some(d) = self.decode {
                avg(&mut self.row, (secs - d).max(0.0) / prompt_rows as f64);
            }
        } else if rows >= PACE_ROWS && self.row.is_none() {
            self.row = Some(secs / rows as f64);
        }
    }

    /// Prompt rows that may join a step of decode rows.
    fn prompt_rows(&self) -> usize {
        match (self.decode, self.row) {
            (Some(d), Some(r)) if r > 0.0 => (((PACE - 1.0) * d / r) as usize).max(1),
            (Some(_), Some(_)) => usize::MAX,
            _ => PACE_FIRST,
        }
    }
}

/// One generation request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The prompt's tokens (with BOS where the vocabulary wants it).
    pub prompt: Vec<u32>,
    /// Tokens to generate at most.
    pub max_tokens: usize,
    pub sampling: SamplerConfig,
    /// Texts that end the generation when it produces them (not part of the output).
    pub stop: Vec<String>,
    /// Go on past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
    /// `Some(k)`: each token comes with its log-probability and the `k` most likely tokens'
    /// (at most [`MAX_TOP_LOGPROBS`]); `None` computes nothing.
    pub logprobs: Option<usize>,
}

/// The most alternatives a token's [`TokenLogprob`] lists (OpenAI's limit for `top_logprobs`).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// A generated token's log-probability and the most likely tokens' at its position, from the
/// log-softmax of the model's logits before the sampler's bias, penalties and filters (what
/// vLLM reports by default): the model's distribution, not the sampler's.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub logprob: f32,
    /// (id, log-probability), most likely first (ties to the lower id).
    pub top: Vec<(u32, f32)>,
}

/// Why a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop text.
    Stop,
    /// `max_tokens` tokens were generated.
    Length,
    /// The sequence reached the model's context.
    ContextFull,
    /// The model failed (the message says why).
    Error,
    /// The engine was shut down ([`EngineHandle::shutdown`]) before the request ended.
    Shutdown,
}

/// How a request ended, with its counts and timings.
#[derive(Debug, Clone)]
pub struct Finish {
    pub reason: FinishReason,
    pub error: Option<String>,
    pub prompt_tokens: usize,
    /// Prompt tokens found in the prefix cache (not computed).
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    /// From admission to the first generated token.
    pub prompt_time: Duration,
    /// From the first generated token to the end.
    pub gen_time: Duration,
}

/// What a request's stream delivers.
#[derive(Debug, Clone)]
pub enum Event {
    /// A generated token and the text it completes (text that may begin a stop string is held
    /// back until it is decided); `logprob` when the request asked for it.
    Token {
        id: u32,
        text: String,
        logprob: Option<TokenLogprob>,
    },
    /// Text released at the end that no new token brought (held back for a stop string that
    /// did not come).
    Text(String),
    /// The end; nothing follows.
    Done(Finish),
}

/// A request's events. Dropping it cancels the request.
pub struct Stream {
    rx: events::UnboundedReceiver<Event>,
}

impl Stream {
    /// The next event, waiting for it (from a thread outside any async runtime); `None` after
    /// the end.
    pub fn next_blocking(&mut self) -> Option<Event> {
        self.rx.blocking_recv()
    }

    /// The next event if one has come.
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// The next event; `None` after the end.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// Reads the stream to its end: the generated ids, their text, and how it ended.
    pub fn collect_blocking(mut self) -> (Vec<u32>, String, Option<Finish>) {
        let (mut ids, mut text) = (Vec::new(), String::new());
        while let Some(e) = self.next_blocking() {
            match e {
                Event::Token { id, text: t, .. } => {
                    ids.push(id);
                    text.push_str(&t);
                }
                Event::Text(t) => text.push_str(&t),
                Event::Done(f) => return (ids, text, Some(f)),
            }
        }
        (ids, text, None)
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt is {n} tokens long, more than the context of {n_ctx} tokens holds")]
    PromptTooLong { n: usize, n_ctx: usize },
    #[error("token {0} is outside the vocabulary")]
    BadToken(u32),
    #[error("{waiting} requests are already waiting: try again later")]
    QueueFull { waiting: usize },
    #[error("the engine has stopped")]
    Stopped,
    #[error("invalid sampling settings: {0}")]
    Sampling(String),
}

/// The counters a server exports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub steps: u64,
    /// Rows evaluated in all steps, and in the last one.
    pub rows: u64,
    pub last_step_rows: usize,
    pub running: usize,
    pub waiting: usize,
    /// Preemptions so far.
    pub preempted: u64,
    pub cancelled: u64,
    pub finished: u64,
    pub blocks_used: usize,
    pub blocks_free: usize,
    pub blocks_cached: usize,
    pub prefix_hits: u64,
    pub prefix_misses: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub generated_tokens: u64,
}

/// A sequence of the engine: a request being prefilled or generating.
struct Seq {
    /// Admission order (preemption takes the latest).
    id: u64,
    slot: usize,
    /// Prompt and generated tokens; `computed` of them are in the cache.
    tokens: Vec<u32>,
    n_prompt: usize,
    computed: usize,
    /// Block table and the prefix keys of its full blocks, in order.
    blocks: Vec<u32>,
    keys: Vec<BlockKey>,
    max_tokens: usize,
    generated: usize,
    sampler: Sampler,
    stop: Vec<String>,
    ignore_eos: bool,
    logprobs: Option<usize>,
    tx: events::UnboundedSender<Event>,
    text: TextStream,
    /// Generated text not yet sent (it may be the start of a stop string).
    held: String,
    cached_tokens: usize,
    admitted: Option<Instant>,
    first_token: Option<Instant>,
}

/// The scheduler and the model it owns.
pub struct Engine {
    model: Box<dyn Model>,
    tok: Arc<Tokenizer>,
    cfg: EngineConfig,
    /// The pool, for a paged cache; `None`: each slot keeps its own blocks.
    pool: Option<BlockPool>,
    free_slots: Vec<usize>,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    next_id: u64,
    counters: Counters,
    /// Requests waiting, as of the last change (read by handles to refuse early).
    queued: Arc<AtomicUsize>,
    // Reused per step.
    tokens: Vec<u32>,
    seqs: Vec<u32>,
    pos: Vec<u32>,
    head: Vec<u32>,
    logits: Vec<f32>,
    /// The step's sequences in row order: (index in `running`, rows).
    plan: Vec<(usize, usize)>,
    /// Prompt rows of the step being built, and whether some are a short prompt's (unpaced).
    prompt_rows: usize,
    short_rows: bool,
    pace: Pace,
}

impl Engine {
    pub fn new(model: Box<dyn Model>, tok: Arc<Tokenizer>, mut cfg: EngineConfig) -> Engine {
        let spec = model.kv_spec().clone();
        let pool = paged(model.device()).then(|| BlockPool::new(spec.n_blocks));
        if pool.is_none() || spec.ring.iter().any(|&r| r > 0) {
            cfg.prefix_cache = false;
        }
        cfg.step_tokens = cfg.step_tokens.clamp(1, rustorch_model::N_UBATCH);
        Engine {
            model,
            tok,
            cfg,
            pool,
            free_slots: (0..spec.n_seq).rev().collect(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            next_id: 0,
            counters: Counters::default(),
            queued: Arc::new(AtomicUsize::new(0)),
            tokens: Vec::new(),
            seqs: Vec::new(),
            pos: Vec::new(),
            head: Vec::new(),
            logits: Vec::new(),
            plan: Vec::new(),
            prompt_rows: 0,
            short_rows: false,
            pace: Pace::default(),
        }
    }

    pub fn model(&self) -> &dyn Model {
        self.model.as_ref()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Whether no request is waiting or running.
    pub fn idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// The counters as of now.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.running = self.running.len();
        c.waiting = self.waiting.len();
        let spec = self.model.kv_spec();
        match &self.pool {
            Some(p) => {
                c.blocks_used = p.used();
                c.blocks_free = p.available();
                c.blocks_cached = p.cached();
                c.prefix_hits = p.hits;
                c.prefix_misses = p.misses;
            }
            None => {
                let used: usize = self.running.iter().map(|s| s.blocks.len()).sum();
                c.blocks_used = used;
                c.blocks_free = spec.n_blocks - used;
            }
        }
        c
    }

    /// Checks a request against the model and queues it.
    pub fn submit(&mut self, req: Request) -> Result<Stream, SubmitError> {
        let (tx, rx) = events::unbounded_channel();
        self.enqueue(req, tx)?;
        Ok(Stream { rx })
    }

    fn check(&self, req: &Request) -> Result<(), SubmitError> {
        let n_ctx = self.model.n_ctx();
        if req.prompt.is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        if req.prompt.len() > n_ctx {
            return Err(SubmitError::PromptTooLong {
                n: req.prompt.len(),
                n_ctx,
            });
        }
        let n_vocab = self.model.config().n_vocab;
        if let Some(&t) = req.prompt.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(SubmitError::BadToken(t));
        }
        if let Some(k) = req.logprobs.filter(|&k| k > MAX_TOP_LOGPROBS) {
            return Err(SubmitError::Sampling(format!(
                "top_logprobs must be at most {MAX_TOP_LOGPROBS}, got {k}"
            )));
        }
        // The sampler skips ids beyond its logits; a request naming one is a mistake.
        let bias = &req.sampling.logit_bias;
        if let Some(&(t, _)) = bias.iter().find(|&&(t, _)| t as usize >= n_vocab) {
            return Err(SubmitError::Sampling(format!(
                "logit_bias: token {t} is outside the vocabulary of {n_vocab} tokens"
            )));
        }
        req.sampling
            .validate()
            .map_err(|e| SubmitError::Sampling(e.to_string()))
    }

    fn enqueue(
        &mut self,
        req: Request,
        tx: events::UnboundedSender<Event>,
    ) -> Result<(), SubmitError> {
        // A request that a free sequence slot takes at the next step does not wait.
        if self.waiting.len() >= self.cfg.max_waiting + self.free_slots.len() {
            return Err(SubmitError::QueueFull {
                waiting: self.waiting.len(),
            });
        }
        self.check(&req)?;
        let n_vocab = self.model.config().n_vocab;
        self.next_id += 1;
        self.waiting.push_back(Seq {
            id: self.next_id,
            slot: usize::MAX,
            n_prompt: req.prompt.len(),
            tokens: req.prompt,
            computed: 0,
            blocks: Vec::new(),
            keys: Vec::new(),
            max_tokens: req.max_tokens,
            generated: 0,
            sampler: Sampler::new(req.sampling, n_vocab),
            stop: req.stop.into_iter().filter(|s| !s.is_empty()).collect(),
            ignore_eos: req.ignore_eos,
            logprobs: req.logprobs,
            tx,
            text: TextStream::new(false),
            held: String::new(),
            cached_tokens: 0,
            admitted: None,
            first_token: None,
        });
        self.publish_queue();
        Ok(())
    }

    /// One step: drops cancelled requests, admits waiting ones, evaluates one forward pass of
    /// every running sequence, samples, and sends tokens. Returns the rows evaluated.
    pub fn step(&mut self) -> usize {
        self.reap_cancelled();
        self.admit();
        let rows = self.build_step();
        self.publish_queue();
        if rows == 0 {
            return 0;
        }
        let batch = Batch {
            tokens: &self.tokens,
            seqs: &self.seqs,
            pos: &self.pos,
        };
        let t = Instant::now();
        let r = self.model.eval_batch(&batch, &self.head, &mut self.logits);
        // A short prompt's step says nothing of what a paced row costs.
        if r.is_ok() && !self.short_rows {
            self.pace
                .observe(rows, self.prompt_rows, t.elapsed().as_secs_f64());
        }
        self.counters.steps += 1;
        self.counters.rows += rows as u64;
        self.counters.last_step_rows = rows;
        match r {
            Ok(()) => self.after_step(),
            Err(e) => self.fail_step(e),
        }
        rows
    }

    /// Steps until no request is left.
    pub fn run_until_idle(&mut self) {
        while !self.idle() {
            self.step();
        }
    }

    /// The requests that wait beyond what the free sequence slots take at the next step, for
    /// handles to refuse early.
    fn publish_queue(&self) {
        let q = self.waiting.len().saturating_sub(self.free_slots.len());
        self.queued.store(q, Ordering::Relaxed);
    }

    /// Frees the sequences whose stream was dropped.
    fn reap_cancelled(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].tx.is_closed() {
                let s = self.running.swap_remove(i);
                self.free(s);
                self.counters.cancelled += 1;
            } else {
                i += 1;
            }
        }
        let before = self.waiting.len();
        self.waiting.retain(|s| !s.tx.is_closed());
        self.counters.cancelled += (before - self.waiting.len()) as u64;
    }

    /// Gives a sequence's blocks and slot back.
    fn free(&mut self, mut s: Seq) {
        self.release_blocks(&mut s);
        if s.slot != usize::MAX {
            self.free_slots.push(s.slot);
        }
    }

    fn release_blocks(&mut self, s: &mut Seq) {
        if let Some(pool) = &mut self.pool {
            for &b in &s.blocks {
                pool.release(b);
            }
        }
        s.blocks.clear();
        s.keys.clear();
        s.computed = 0;
    }

    /// Admits waiting requests while a slot is free and the pool has blocks for their prompt.
    fn admit(&mut self) {
        while let Some(slot) = self.free_slots.last().copied() {
            let Some(mut s) = self.waiting.pop_front() else {
                break;
            };
            if !self.place(&mut s, slot) {
                self.waiting.push_front(s);
                break;
            }
            self.free_slots.pop();
            if s.admitted.is_none() {
                self.counters.prompt_tokens += s.n_prompt as u64;
                self.counters.cached_tokens += s.computed as u64;
                s.cached_tokens = s.computed;
                s.admitted = Some(Instant::now());
            }
            self.running.push(s);
        }
    }

    /// Maps the cached prefix of `s` into `slot` and checks that the pool has blocks for the rest
    /// of its tokens; false (and nothing held) if not.
    fn place(&mut self, s: &mut Seq, slot: usize) -> bool {
        let need = s.tokens.len().div_ceil(KV_BLOCK);
        let Some(pool) = &mut self.pool else {
            s.slot = slot;
            return true;
        };
        if self.cfg.prefix_cache {
            // Full blocks before the last token (at least one token is computed, for logits).
            let full = (s.tokens.len() - 1) / KV_BLOCK;
            for i in 0..full {
                let parent = s.keys.last().copied().unwrap_or(0);
                match pool.lookup(parent, &s.tokens[i * KV_BLOCK..(i + 1) * KV_BLOCK]) {
                    Some((b, key)) => {
                        s.blocks.push(b);
                        s.keys.push(key);
                    }
                    None => break,
                }
            }
        }
        // Room for the prompt's other blocks, and one more block per running sequence so that
        // admitting does not preempt at once.
        let reserve = self.running.len();
        if pool.available() < need - s.blocks.len() + reserve && !self.running.is_empty() {
            for &b in &s.blocks {
                pool.release(b);
            }
            s.blocks.clear();
            s.keys.clear();
            return false;
        }
        s.slot = slot;
        s.computed = s.blocks.len() * KV_BLOCK;
        if !s.blocks.is_empty() {
            if let Err(e) = self.model.map_blocks(slot, 0, &s.blocks) {
                // Cannot happen for a checked pool; report it on the request.
                let _ = s.tx.send(Event::Done(error_finish(s, &e)));
            }
        }
        true
    }

    /// Takes blocks so that `s` can hold `n` positions; false if the pool ran out (what was
    /// taken stays with `s`).
    fn grow(&mut self, i: usize, n: usize) -> bool {
        let s = &mut self.running[i];
        let need = n.div_ceil(KV_BLOCK);
        if s.blocks.len() >= need {
            return true;
        }
        let first = s.blocks.len();
        match &mut self.pool {
            None => {
                let spec = self.model.kv_spec();
                s.blocks
                    .extend((first..need).map(|b| spec.own_block(s.slot, b)));
                true
            }
            Some(pool) => {
                while s.blocks.len() < need {
                    match pool.alloc() {
                        Some(b) => s.blocks.push(b),
                        None => break,
                    }
                }
                if s.blocks.len() > first {
                    let (slot, new) = (s.slot, &s.blocks[first..]);
                    self.model
                        .map_blocks(slot, first, new)
                        .expect("blocks from the pool fit the cache");
                }
                s.blocks.len() >= need
            }
        }
    }

    /// Preempts the most recently admitted running sequence: its blocks go back (full ones stay
    /// in the prefix cache), its slot is freed, and it waits at the front of the queue to be
    /// prefilled again with every token it has.
    fn preempt_latest(&mut self) {
        let Some(i) = (0..self.running.len()).max_by_key(|&i| self.running[i].id) else {
            return;
        };
        let mut s = self.running.swap_remove(i);
        self.release_blocks(&mut s);
        self.free_slots.push(s.slot);
        s.slot = usize::MAX;
        self.counters.preempted += 1;
        self.waiting.push_front(s);
    }

    /// Builds the step's rows: a decode row for every generating sequence (oldest first), then
    /// prompt chunks within the budget. Returns the number of rows.
    fn build_step(&mut self) -> usize {
        loop {
            self.tokens.clear();
            self.seqs.clear();
            self.pos.clear();
            self.head.clear();
            self.plan.clear();
            self.running.sort_by_key(|s| s.id);
            let mut budget = self.cfg.step_tokens;
            let mut short = false;
            // Decode rows first.
            for i in 0..self.running.len() {
                let s = &self.running[i];
                if s.tokens.len() - s.computed != 1 || budget == 0 {
                    continue;
                }
                if !self.grow(i, self.running[i].computed + 1) {
                    short = true;
                    break;
                }
                self.push_rows(i, 1);
                budget -= 1;
            }
            if short {
                if self.running.len() == 1 {
                    // Alone and still short: the pool cannot hold this sequence.
                    self.fail_alone();
                    return 0;
                }
                // A generating sequence needs a block: preempt the latest and build again.
                self.preempt_latest();
                continue;
            }
            // Then prompt chunks. Beside decode rows, when asked, a long prompt's chunks are
            // paced (a short prompt goes whole, as one step's stall).
            let decode_rows = self.tokens.len();
            let pacing = self.cfg.pace_prompts && decode_rows > 0;
            let mut paced = if pacing {
                self.pace.prompt_rows()
            } else {
                usize::MAX
            };
            self.short_rows = false;
            for i in 0..self.running.len() {
                let s = &self.running[i];
                let pending = s.tokens.len() - s.computed;
                let long = pending > PACE_SHORT;
                let limit = if long { budget.min(paced) } else { budget };
                if pending <= 1 || limit == 0 {
                    continue;
                }
                let mut n = pending.min(limit);
                let want = self.running[i].computed + n;
                if !self.grow(i, want) {
                    let held = self.running[i].blocks.len() * KV_BLOCK;
                    n = held.saturating_sub(self.running[i].computed).min(n);
                }
                if n == 0 {
                    continue;
                }
                self.push_rows(i, n);
                budget -= n;
                if long {
                    paced -= n;
                } else {
                    self.short_rows = true;
                }
            }
            self.prompt_rows = self.tokens.len() - decode_rows;
            if self.tokens.is_empty() && !self.running.is_empty() {
                // Every running sequence waits for blocks the others hold.
                if self.running.len() == 1 {
                    self.fail_alone();
                    return 0;
                }
                self.preempt_latest();
                continue;
            }
            return self.tokens.len();
        }
    }

    /// Ends the only running sequence, which the pool cannot hold, with an error.
    fn fail_alone(&mut self) {
        let s = self.running.pop().expect("one sequence");
        let e = ModelError::BadBatch(format!(
            "the KV cache pool of {} blocks cannot hold this sequence's {} tokens",
            self.model.kv_spec().n_blocks,
            s.tokens.len()
        ));
        let _ = s.tx.send(Event::Done(error_finish(&s, &e)));
        self.free(s);
        self.counters.finished += 1;
    }

    /// Adds rows for the next `n` tokens of running sequence `i` (logits for the last one when
    /// it reaches the sequence's end).
    fn push_rows(&mut self, i: usize, n: usize) {
        let s = &self.running[i];
        for p in s.computed..s.computed + n {
            self.tokens.push(s.tokens[p]);
            self.seqs.push(s.slot as u32);
            self.pos.push(p as u32);
        }
        if s.computed + n == s.tokens.len() {
            self.head.push(self.tokens.len() as u32 - 1);
        }
        self.plan.push((i, n));
    }

    /// After a successful forward pass: the sequences' new cache contents, their full blocks in
    /// the prefix cache, and a token sampled for every sequence whose prefill or decode ended.
    fn after_step(&mut self) {
        let n_vocab = self.model.config().n_vocab;
        let n_ctx = self.model.n_ctx();
        let mut head = 0;
        let mut finished = Vec::new();
        for &(i, n) in &self.plan {
            let s = &mut self.running[i];
            s.computed += n;
            if let Some(pool) = &mut self.pool {
                if self.cfg.prefix_cache {
                    while (s.keys.len() + 1) * KV_BLOCK <= s.computed {
                        let k = s.keys.len();
                        let parent = s.keys.last().copied().unwrap_or(0);
                        let toks = &s.tokens[k * KV_BLOCK..(k + 1) * KV_BLOCK];
                        let key = pool.register(s.blocks[k], parent, toks);
                        s.keys.push(key);
                    }
                }
            }
            if s.computed < s.tokens.len() {
                continue; // a prompt chunk short of the end
            }
            let logits = &self.logits[head * n_vocab..(head + 1) * n_vocab];
            head += 1;
            if s.max_tokens == 0 {
                finished.push((i, End::Length));
                continue;
            }
            let id = s.sampler.sample(logits, &s.tokens);
            s.first_token.get_or_insert_with(Instant::now);
            if self.tok.is_eog(id) && !s.ignore_eos {
                finished.push((i, End::Eog));
                continue;
            }
            let logprob = s.logprobs.map(|k| token_logprob(logits, id, k));
            s.tokens.push(id);
            s.generated += 1;
            self.counters.generated_tokens += 1;
            let mut text = String::new();
            s.text.push_into(&self.tok, id, &mut text);
            if emit(s, id, text, logprob) {
                finished.push((i, End::StopText));
            } else if s.generated >= s.max_tokens {
                finished.push((i, End::Length));
            } else if s.tokens.len() >= n_ctx {
                finished.push((i, End::ContextFull));
            }
        }
        // Highest index first, so the indices stay valid.
        finished.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (i, end) in finished {
            let s = self.running.swap_remove(i);
            let reason = match end {
                End::Eog | End::StopText => FinishReason::Stop,
                End::Length => FinishReason::Length,
                End::ContextFull => FinishReason::ContextFull,
            };
            self.end(s, reason, end != End::StopText);
        }
    }

    /// Sends a sequence's end and frees it. With `release`, text held back for a stop string
    /// that did not come, and an incomplete character, end the output first.
    fn end(&mut self, mut s: Seq, reason: FinishReason, release: bool) {
        if release {
            let mut rest = std::mem::take(&mut s.held);
            rest.push_str(&s.text.flush());
            if !rest.is_empty() {
                let _ = s.tx.send(Event::Text(rest));
            }
        }
        let _ = s.tx.send(Event::Done(finish(&s, reason)));
        self.counters.finished += 1;
        self.free(s);
    }

    /// Ends every running and waiting request with [`FinishReason::Shutdown`].
    fn shut_down(&mut self) {
        let running = std::mem::take(&mut self.running);
        let waiting = std::mem::take(&mut self.waiting);
        for s in running.into_iter().chain(waiting) {
            self.end(s, FinishReason::Shutdown, true);
        }
        self.queued.store(0, Ordering::Relaxed);
    }

    /// A failed forward pass fails its sequences (the cache contents of the step are unknown).
    fn fail_step(&mut self, e: ModelError) {
        let slots: Vec<u32> = self.seqs.clone();
        let mut i = 0;
        while i < self.running.len() {
            if slots.contains(&(self.running[i].slot as u32)) {
                let s = self.running.swap_remove(i);
                let _ = s.tx.send(Event::Done(error_finish(&s, &e)));
                self.counters.finished += 1;
                self.free(s);
            } else {
                i += 1;
            }
        }
    }
}

/// How a sequence ended in a step.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Eog,
    StopText,
    Length,
    ContextFull,
}

/// The log-softmax of `logits` at `id` and its `k` largest entries. NaN counts as -inf, as in
/// the sampler.
fn token_logprob(logits: &[f32], id: u32, k: usize) -> TokenLogprob {
    let clean = |l: f32| if l.is_nan() { f32::NEG_INFINITY } else { l };
    let max = logits
        .iter()
        .fold(f32::NEG_INFINITY, |m, &l| m.max(clean(l)));
    let sum: f64 = logits
        .iter()
        .map(|&l| f64::from(clean(l) - max).exp())
        .sum();
    let lse = f64::from(max) + sum.ln();
    let lp = |l: f32| (f64::from(clean(l)) - lse) as f32;
    // k is small: keep the best k sorted, inserting where a logit beats the last.
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    if k > 0 {
        for (i, &l) in logits.iter().enumerate() {
            let l = clean(l);
            if top.len() == k && l <= top[k - 1].1 {
                continue;
            }
            let at = top.partition_point(|&(_, t)| t >= l);
            top.insert(at, (i as u32, l));
            top.truncate(k);
        }
    }
    for t in &mut top {
        t.1 = lp(t.1);
    }
    TokenLogprob {
        logprob: logits
            .get(id as usize)
            .map_or(f32::NEG_INFINITY, |&l| lp(l)),
        top,
    }
}

/// Sends the text of a new token, holding back what may start a stop string. Returns whether a
/// stop string was completed (the text before it is sent, the rest dropped).
fn emit(s: &mut Seq, id: u32, text: String, logprob: Option<TokenLogprob>) -> bool {
    if s.stop.is_empty() {
        let _ = s.tx.send(Event::Token { id, text, logprob });
        return false;
    }
    s.held.push_str(&text);
    if let Some(at) = s
        .stop
        .iter()
        .filter_map(|stop| s.held.find(stop.as_str()))
        .min()
    {
        s.held.truncate(at);
        let text = std::mem::take(&mut s.held);
        let _ = s.tx.send(Event::Token { id, text, logprob });
        return true;
    }
    // Keep the longest tail that is a prefix of some stop string.
    let keep = s
        .stop
        .iter()
        .map(|stop| {
            (1..stop.len().min(s.held.len() + 1))
                .rev()
                .find(|&k| {
                    s.held.is_char_boundary(s.held.len() - k)
                        && stop.starts_with(&s.held[s.held.len() - k..])
                })
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    let text = s.held[..s.held.len() - keep].to_string();
    s.held.drain(..s.held.len() - keep);
    let _ = s.tx.send(Event::Token { id, text, logprob });
    false
}

fn finish(s: &Seq, reason: FinishReason) -> Finish {
    let now = Instant::now();
    let admitted = s.admitted.unwrap_or(now);
    let first = s.first_token.unwrap_or(now);
    Finish {
        reason,
        error: None,
        prompt_tokens: s.n_prompt,
        cached_tokens: s.cached_tokens,
        completion_tokens: s.generated,
        prompt_time: first.duration_since(admitted),
        gen_time: now.duration_since(first),
    }
}

fn error_finish(s: &Seq, e: &ModelError) -> Finish {
    Finish {
        error: Some(e.to_string()),
        ..finish(s, FinishReason::Error)
    }
}

/// Commands from handles to the engine thread.
enum Command {
    Submit(
        Request,
        events::UnboundedSender<Event>,
        oneshot::Sender<Result<(), SubmitError>>,
    ),
    Shutdown,
}

/// The engine's answer to a submit, still to come.
type Reply = oneshot::Receiver<Result<(), SubmitError>>;

/// A handle to an engine running on its own thread: submit requests from any thread or async
/// task. The engine stops when every handle is dropped and its requests have finished, or at
/// [`EngineHandle::shutdown`].
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    counters: Arc<Mutex<Counters>>,
    queued: Arc<AtomicUsize>,
    max_waiting: usize,
    n_ctx: usize,
}

impl EngineHandle {
    /// Starts `engine` on a thread of its own.
    pub fn spawn(mut engine: Engine) -> EngineHandle {
        let (tx, rx) = mpsc::channel::<Command>();
        let counters = Arc::new(Mutex::new(engine.counters()));
        let queued = engine.queued.clone();
        let handle = EngineHandle {
            tx,
            counters: counters.clone(),
            queued,
            max_waiting: engine.cfg.max_waiting,
            n_ctx: engine.model.n_ctx(),
        };
        std::thread::Builder::new()
            .name("rustorch-engine".into())
            .spawn(move || loop {
                // Idle: wait for work (or for every handle to go); busy: take what has come.
                let first = if engine.idle() {
                    match rx.recv() {
                        Ok(c) => Some(c),
                        Err(_) => return,
                    }
                } else {
                    None
                };
                for cmd in first.into_iter().chain(rx.try_iter()) {
                    match cmd {
                        Command::Submit(req, events, reply) => {
                            let _ = reply.send(engine.enqueue(req, events));
                        }
                        Command::Shutdown => {
                            engine.shut_down();
                            *counters.lock().unwrap_or_else(|p| p.into_inner()) = engine.counters();
                            // Returning drops the receiver: the commands behind this one are
                            // dropped unanswered and later sends fail, both refused as
                            // `Stopped`.
                            return;
                        }
                    }
                }
                engine.step();
                *counters.lock().unwrap_or_else(|p| p.into_inner()) = engine.counters();
            })
            .expect("spawning the engine thread");
        handle
    }

    /// Queues a request; its tokens arrive on the returned stream. Refused at once when the
    /// queue is full or the request is invalid. Waits for the engine to finish its current
    /// step: from async code, use [`EngineHandle::submit_async`].
    pub fn submit(&self, req: Request) -> Result<Stream, SubmitError> {
        let (stream, reply) = self.send(req)?;
        let answer = reply.blocking_recv();
        answer.unwrap_or(Err(SubmitError::Stopped)).map(|()| stream)
    }

    /// [`EngineHandle::submit`] for async code: awaits the engine's answer rather than blocking
    /// the runtime's thread while the engine finishes its step.
    pub async fn submit_async(&self, req: Request) -> Result<Stream, SubmitError> {
        let (stream, reply) = self.send(req)?;
        let answer = reply.await;
        answer.unwrap_or(Err(SubmitError::Stopped)).map(|()| stream)
    }

    /// Sends a request to the engine thread: the stream it will use if accepted, and the
    /// engine's answer to come.
    fn send(&self, req: Request) -> Result<(Stream, Reply), SubmitError> {
        // A full queue is refused here without waiting for the engine's step (the engine checks
        // again: this count is as of its last change).
        let q = self.queued.load(Ordering::Relaxed);
        if q >= self.max_waiting {
            return Err(SubmitError::QueueFull { waiting: q });
        }
        let (etx, erx) = events::unbounded_channel();
        let (rtx, rrx) = oneshot::channel();
        if self.tx.send(Command::Submit(req, etx, rtx)).is_err() {
            return Err(SubmitError::Stopped);
        }
        Ok((Stream { rx: erx }, rrx))
    }

    /// Asks the engine thread to end every running and waiting request now, after its current
    /// step: each stream gets the text it held back, then [`Event::Done`] with
    /// [`FinishReason::Shutdown`]. Later submits (from any handle) are refused with
    /// [`SubmitError::Stopped`], and the engine and its model are dropped. Does not wait.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }

    /// The counters as of the last step.
    pub fn counters(&self) -> Counters {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Positions one sequence may reach.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }
}

#[cfg(test)]
mod pace_tests {
    use super::*;

    #[test]
    fn paced_rows_follow_the_measured_costs() {
        let mut p = Pace::default();
        assert_eq!(p.prompt_rows(), PACE_FIRST);
        // A long prompt alone: 512 rows in 1 s gives the first cost of a row (2 ms).
        p.observe(512, 512, 1.0);
        // Decode steps of 10 ms: 0.8 * 10 / 2 = 4 rows.
        p.observe(4, 0, 0.010);
        assert_eq!(p.prompt_rows(), 4);
        // Rows beside decode rows cost more than in a long step: the chunks shrink.
        for _ in 0..40 {
            p.observe(8, 4, 0.010 + 4.0 * 0.004);
        }
        assert_eq!(p.prompt_rows(), 2);
        // A row that costs nothing measurable: no limit from the pace.
        for _ in 0..80 {
            p.observe(8, 4, 0.009);
        }
        assert!(p.prompt_rows() > 1000);
    }
}
