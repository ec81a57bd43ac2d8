//! Token sampling: llama.cpp's default chain (commit 0c1e570, `common/sampling.cpp`).
//!
//! With llama.cpp's defaults the chain is
//! `penalties → dry → top-n-σ → top-k → typical → top-p → min-p → xtc → temperature → dist`,
//! where dry, top-n-σ, typical and xtc are disabled, so only the stages below run. Each stage
//! follows `src/llama-sampler.cpp` down to the float/double mix of its arithmetic and whether it
//! leaves the candidates sorted, because both decide which token a given random number picks.
//! The random numbers are `std::mt19937` seeded with the 32-bit seed, read through
//! `std::uniform_real_distribution<double>` as libstdc++ does, so a seed names the same stream
//! here and in llama.cpp.

use std::cmp::Ordering;

/// Invalid sampling parameters; each message names the command-line flag (llama.cpp's spelling).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplerError {
    #[error("--temp must be finite and >= 0 (0 = greedy), got {0}")]
    Temperature(f32),
    #[error("--top-p must be in (0, 1] (1 = off), got {0}")]
    TopP(f32),
    #[error("--min-p must be in [0, 1] (0 = off), got {0}")]
    MinP(f32),
    #[error("--repeat-penalty must be finite and > 0 (1 = off), got {0}")]
    RepeatPenalty(f32),
}

/// Sampling parameters. `top_k == 0` and `repeat_last_n == 0` switch those stages off, as do
/// `top_p == 1`, `min_p == 0` and `repeat_penalty == 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; `0` means greedy (argmax after the penalty).
    pub temp: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    /// How many of the most recent tokens of the history the penalty looks at.
    pub repeat_last_n: usize,
    /// llama.cpp seeds are 32-bit: only the low 32 bits are used, so `--seed N` with
    /// N < 2^32 draws the same random numbers as llama.cpp. llama.cpp's "random seed" value
    /// (0xFFFFFFFF) has no special meaning here: the caller picks a random seed.
    pub seed: u64,
}

impl Default for SamplerConfig {
    /// llama.cpp's `common_params_sampling` defaults.
    fn default() -> Self {
        SamplerConfig {
            temp: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding (`--temp 0`), everything else at its default.
    pub fn greedy() -> Self {
        SamplerConfig {
            temp: 0.0,
            ..SamplerConfig::default()
        }
    }

    /// Rejects values llama.cpp would accept but that make no sense (a negative temperature,
    /// a NaN probability), so a typo is an error rather than a silently greedy or empty chain.
    pub fn validate(&self) -> Result<(), SamplerError> {
        if !(self.temp.is_finite() && self.temp >= 0.0) {
            return Err(SamplerError::Temperature(self.temp));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplerError::TopP(self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(SamplerError::MinP(self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(SamplerError::RepeatPenalty(self.repeat_penalty));
        }
        Ok(())
    }
}

/// One candidate token: llama.cpp's `llama_token_data`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenData {
    pub id: u32,
    /// Logit after the stages that ran (penalty, temperature).
    pub logit: f32,
    /// Probability among the remaining candidates; only meaningful where documented.
    pub p: f32,
}

/// Descending logit, ties to the lower id: a total order, so sorting is deterministic and a
/// tie resolves like argmax (first index).
fn by_logit_desc(a: &TokenData, b: &TokenData) -> Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// Index of the first maximum, as llama.cpp's greedy sampler. NaN never wins (a broken kernel
/// must not look like a confident prediction); an empty slice gives 0.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_val = f32::NEG_INFINITY;
    let mut found = false;
    for (i, &l) in logits.iter().enumerate() {
        if !found && !l.is_nan() || l > best_val {
            best = i;
            best_val = l;
            found = true;
        }
    }
    best as u32
}

/// The sampler: configuration, random state and preallocated work buffers.
///
/// The penalty window is read from the `history` passed to each call, so the sampler keeps no
/// token state of its own; `reset` only restarts the random stream.
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Mt19937,
    /// (n_vocab) candidates; indexed by token id until the first filter cuts or sorts it.
    cands: Vec<TokenData>,
    /// Whether `cands` is in `by_logit_desc` order. Stages behave differently on sorted and
    /// unsorted input (min-p keeps the original order of an unsorted list, and the draw walks
    /// the list in its order), so this is part of the semantics, not only an optimisation.
    sorted: bool,
    /// (n_vocab) marks the distinct tokens of the penalty window; all false between calls.
    seen: Vec<bool>,
}

impl Sampler {
    /// `n_vocab` sizes the buffers; logits of another length still work (the buffers grow once).
    /// The configuration is not checked here: call [`SamplerConfig::validate`] on user input.
    pub fn new(cfg: SamplerConfig, n_vocab: usize) -> Sampler {
        let rng = Mt19937::new(cfg.seed as u32);
        Sampler {
            cfg,
            rng,
            cands: Vec::with_capacity(n_vocab),
            sorted: false,
            seen: vec![false; n_vocab],
        }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Restarts the random stream from the seed, as llama.cpp's `llama_sampler_reset`.
    pub fn reset(&mut self) {
        self.rng = Mt19937::new(self.cfg.seed as u32);
    }

    /// Picks the next token. `history` is every token so far (prompt and generated); the
    /// penalty uses its last `repeat_last_n`. Empty logits give token 0.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        if logits.is_empty() {
            return 0;
        }
        if self.cfg.temp <= 0.0 && (self.cfg.repeat_penalty == 1.0 || self.cfg.repeat_last_n == 0) {
            // Greedy without a penalty: the first largest logit (NaN as -inf), as the candidate
            // path picks it, without building the candidates.
            let mut best = (0, f32::NEG_INFINITY);
            for (i, &l) in logits.iter().enumerate() {
                if l > best.1 {
                    best = (i, l);
                }
            }
            return best.0 as u32;
        }
        self.load(logits, history);
        if self.cfg.temp <= 0.0 {
            return self.greedy_index() as u32;
        }
        self.filter();
        self.dist()
    }

    /// The candidates the draw would choose from, with their probabilities (summing to 1), in
    /// the order the draw walks them. Does not advance the random stream. With `temp == 0` this
    /// is the argmax alone. For tests and for showing top probabilities.
    pub fn candidates(&mut self, logits: &[f32], history: &[u32]) -> &[TokenData] {
        if logits.is_empty() {
            return &[];
        }
        self.load(logits, history);
        if self.cfg.temp <= 0.0 {
            let best = self.cands[self.greedy_index()];
            self.cands.clear();
            self.cands.push(TokenData { p: 1.0, ..best });
            return &self.cands;
        }
        self.filter();
        let max_l = self.max_logit();
        let mut sum = 0.0f64;
        for c in self.cands.iter_mut() {
            c.p = (c.logit - max_l).exp();
            sum += f64::from(c.p);
        }
        for c in self.cands.iter_mut() {
            c.p = (f64::from(c.p) / sum) as f32;
        }
        &self.cands
    }

    /// Copies the logits into the candidate list and applies the repetition penalty.
    fn load(&mut self, logits: &[f32], history: &[u32]) {
        if logits.len() > self.seen.len() {
            self.seen.resize(logits.len(), false);
        }
        self.cands.clear();
        self.cands
            .extend(logits.iter().enumerate().map(|(i, &l)| TokenData {
                id: i as u32,
                logit: if l.is_nan() { f32::NEG_INFINITY } else { l },
                p: 0.0,
            }));
        self.sorted = false;
        self.penalize(history);
    }

    /// llama.cpp's rule: each distinct token of the window once, positive logits divided by the
    /// penalty and the others multiplied, so a penalty > 1 always makes the token less likely.
    fn penalize(&mut self, history: &[u32]) {
        let penalty = self.cfg.repeat_penalty;
        if self.cfg.repeat_last_n == 0 || penalty == 1.0 {
            return;
        }
        let window = &history[history.len().saturating_sub(self.cfg.repeat_last_n)..];
        let n = self.cands.len();
        for &t in window {
            let t = t as usize;
            // Ids outside the vocabulary cannot be candidates; skip rather than panic.
            if t < n && !self.seen[t] {
                self.seen[t] = true;
                let c = &mut self.cands[t];
                if c.logit <= 0.0 {
                    c.logit *= penalty;
                } else {
                    c.logit /= penalty;
                }
            }
        }
        for &t in window {
            if let Some(s) = self.seen.get_mut(t as usize) {
                *s = false;
            }
        }
    }

    /// Position of the first maximum of the (unsorted, id-indexed) candidates.
    fn greedy_index(&self) -> usize {
        let mut best = 0;
        for (i, c) in self.cands.iter().enumerate() {
            if c.logit > self.cands[best].logit {
                best = i;
            }
        }
        best
    }

    /// top-k → top-p → min-p → temperature.
    fn filter(&mut self) {
        self.top_k();
        self.top_p();
        self.min_p();
        let temp = self.cfg.temp;
        for c in self.cands.iter_mut() {
            c.logit /= temp;
        }
    }

    /// Puts the `k` best candidates, sorted, at the front; the rest stay after them unsorted.
    fn sort_prefix(&mut self, k: usize) {
        let k = k.min(self.cands.len());
        if k == 0 {
            return;
        }
        if k < self.cands.len() {
            self.cands.select_nth_unstable_by(k - 1, by_logit_desc);
        }
        self.cands[..k].sort_unstable_by(by_logit_desc);
    }

    fn top_k(&mut self) {
        let k = self.cfg.top_k;
        if k == 0 {
            return;
        }
        // llama.cpp sorts even when k >= the number of candidates.
        let k = k.min(self.cands.len());
        if !self.sorted {
            self.sort_prefix(k);
        }
        self.cands.truncate(k);
        self.sorted = true;
    }

    fn max_logit(&self) -> f32 {
        if self.sorted {
            return self.cands[0].logit;
        }
        self.cands
            .iter()
            .fold(f32::NEG_INFINITY, |m, c| m.max(c.logit))
    }

    /// Keeps the smallest prefix (by probability) whose mass reaches `top_p`.
    fn top_p(&mut self) {
        let top_p = self.cfg.top_p;
        if top_p >= 1.0 || self.cands.is_empty() {
            return;
        }
        // Float softmax, as llama.cpp's `llama_sampler_softmax_impl`.
        let max_l = self.max_logit();
        let mut sum = 0.0f32;
        for c in self.cands.iter_mut() {
            c.p = (c.logit - max_l).exp();
            sum += c.p;
        }
        for c in self.cands.iter_mut() {
            c.p /= sum;
        }
        // Sorting a whole vocabulary per token is the expensive part; the mass is usually
        // reached within the first few hundred, so try those first as llama.cpp does.
        let mut sorted_len = self.cands.len();
        if !self.sorted {
            sorted_len = if self.cands.len() > 1024 {
                256
            } else {
                self.cands.len()
            };
            self.sort_prefix(sorted_len);
        }
        let mut keep = self.cands.len();
        let mut cum = 0.0f32;
        let mut i = 0;
        while i < self.cands.len() {
            if i == sorted_len {
                // The prefix did not reach top_p: sort the rest; the prefix stays as it is,
                // because the order is total.
                self.cands[sorted_len..].sort_unstable_by(by_logit_desc);
                sorted_len = self.cands.len();
            }
            cum += self.cands[i].p;
            if cum >= top_p {
                keep = i + 1;
                break;
            }
            i += 1;
        }
        self.cands.truncate(keep);
        self.sorted = true;
    }

    /// Keeps candidates whose probability is at least `min_p` times the largest, compared in
    /// logit space (`logit >= max + ln(min_p)`).
    fn min_p(&mut self) {
        let min_p = self.cfg.min_p;
        if min_p <= 0.0 || self.cands.is_empty() {
            return;
        }
        let min_logit = self.max_logit() + min_p.ln();
        if self.sorted {
            // The first candidate always stays.
            let keep = 1 + self.cands[1..]
                .iter()
                .take_while(|c| c.logit >= min_logit)
                .count();
            self.cands.truncate(keep);
        } else {
            // Unsorted input keeps its order, as llama.cpp's unsorted path.
            self.cands.retain(|c| c.logit >= min_logit);
        }
    }

    /// llama.cpp's `dist`: one uniform number per call (even for a single candidate), the
    /// first candidate in list order whose running mass reaches `u * total` wins.
    fn dist(&mut self) -> u32 {
        let u = self.rng.next_f64();
        if self.cands.len() == 1 {
            return self.cands[0].id;
        }
        let max_l = self.max_logit();
        let mut sum = 0.0f64;
        for c in self.cands.iter_mut() {
            c.p = (c.logit - max_l).exp();
            sum += f64::from(c.p);
        }
        let target = sum * u;
        let mut run = 0.0f64;
        for c in &self.cands {
            run += f64::from(c.p);
            if run >= target {
                return c.id;
            }
        }
        // Only reachable when the sum is NaN (every logit -inf): fall back as llama.cpp does.
        self.cands[self.cands.len() - 1].id
    }
}

/// `std::mt19937` (32-bit Mersenne Twister), so seeds mean the same as in llama.cpp.
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; 624],
    idx: usize,
}

impl Mt19937 {
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, idx: 624 }
    }

    fn twist(&mut self) {
        for i in 0..624 {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
            let mut v = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_b0df;
            }
            self.state[i] = v;
        }
        self.idx = 0;
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.idx >= 624 {
            self.twist();
        }
        let mut y = self.state[self.idx];
        self.idx += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `std::uniform_real_distribution<double>(0, 1)` over mt19937 as libstdc++ computes it
    /// (`generate_canonical<double, 53>`: two draws, the first the low word), in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        let lo = f64::from(self.next_u32());
        let hi = f64::from(self.next_u32());
        let r = (lo + hi * 4_294_967_296.0) / 18_446_744_073_709_551_616.0;
        if r >= 1.0 {
            // Rounding can reach 1.0; libstdc++ returns the largest double below it.
            1.0 - f64::EPSILON / 2.0
        } else {
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_std() {
        // The C++ standard fixes the 10000th output of a default-constructed std::mt19937.
        let mut rng = Mt19937::new(5489);
        let mut v = 0;
        for _ in 0..10000 {
            v = rng.next_u32();
        }
        assert_eq!(v, 4_123_659_995);
        // Printed by g++ 13 / libstdc++ with std::mt19937(42).
        let mut rng = Mt19937::new(42);
        let got: Vec<u32> = (0..4).map(|_| rng.next_u32()).collect();
        assert_eq!(got, [1608637542, 3421126067, 4083286876, 787846414]);
        let mut rng = Mt19937::new(42);
        let want = [
            0.796_542_984_287_846,
            0.183_434_787_893_368_48,
            0.779_690_997_612_661_3,
            0.596_850_161_580_056_5,
        ];
        for w in want {
            assert_eq!(rng.next_f64(), w);
        }
    }
}
