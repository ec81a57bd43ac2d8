//! Token sampling: llama.cpp's default chain (commit 0c1e570, `common/sampling.cpp`).
//!
//! With llama.cpp's defaults the chain is
//! `logit-bias → penalties → dry → top-n-σ → top-k → typical → top-p → min-p → xtc →
//! temperature → dist`, where dry, top-n-σ, typical and xtc are disabled, so only the stages
//! below run. Each stage
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
    #[error("--presence-penalty must be in [-2, 2] (0 = off), got {0}")]
    PresencePenalty(f32),
    #[error("--frequency-penalty must be in [-2, 2] (0 = off), got {0}")]
    FrequencyPenalty(f32),
    #[error("--logit-bias for token {0} must be a number < +inf (-inf or <= -100 bans the token), got {1}")]
    LogitBias(u32, f32),
}

/// A logit bias at or below this bans the token, as OpenAI's `logit_bias` documents for -100.
pub const BAN_BIAS: f32 = -100.0;

/// Sampling parameters. `top_k == 0` and `repeat_last_n == 0` switch those stages off, as do
/// `top_p == 1`, `min_p == 0`, `repeat_penalty == 1`, zero presence and frequency penalties and
/// an empty `logit_bias`.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; `0` means greedy (argmax after the penalty).
    pub temp: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    /// How many of the most recent tokens of the history the penalties look at.
    pub repeat_last_n: usize,
    /// Subtracted once from the logit of every token of the penalty window (OpenAI's
    /// `presence_penalty`, llama.cpp's `penalty_present`).
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per occurrence in the penalty window (OpenAI's
    /// `frequency_penalty`, llama.cpp's `penalty_freq`).
    pub frequency_penalty: f32,
    /// Added to the logits of these tokens before the penalties; a bias of -inf or at most
    /// [`BAN_BIAS`] bans the token (also under greedy). Ids outside the vocabulary are skipped:
    /// the caller checks them against its model.
    pub logit_bias: Vec<(u32, f32)>,
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
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
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
        // OpenAI's range; a larger penalty only says "never repeat" less clearly than a bias.
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return Err(SamplerError::PresencePenalty(self.presence_penalty));
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return Err(SamplerError::FrequencyPenalty(self.frequency_penalty));
        }
        // +inf would make every probability NaN (inf - inf in the softmax).
        if let Some(&(id, b)) = self
            .logit_bias
            .iter()
            .find(|(_, b)| b.is_nan() || *b == f32::INFINITY)
        {
            return Err(SamplerError::LogitBias(id, b));
        }
        Ok(())
    }

    /// Whether the penalty stage changes any logit.
    fn penalizes(&self) -> bool {
        self.repeat_last_n != 0
            && (self.repeat_penalty != 1.0
                || self.frequency_penalty != 0.0
                || self.presence_penalty != 0.0)
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
    /// (n_vocab) occurrences of each token in the penalty window; all zero between calls.
    counts: Vec<u32>,
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
            counts: vec![0; n_vocab],
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
    /// penalties use its last `repeat_last_n`. Empty logits give token 0.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        if logits.is_empty() {
            return 0;
        }
        if self.cfg.temp <= 0.0 && !self.cfg.penalizes() && self.cfg.logit_bias.is_empty() {
            // Greedy without a penalty or bias: the first largest logit (NaN as -inf), as the
            // candidate path picks it, without building the candidates.
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

    /// Copies the logits into the candidate list and applies the bias and the penalties.
    fn load(&mut self, logits: &[f32], history: &[u32]) {
        if logits.len() > self.counts.len() {
            self.counts.resize(logits.len(), 0);
        }
        self.cands.clear();
        self.cands
            .extend(logits.iter().enumerate().map(|(i, &l)| TokenData {
                id: i as u32,
                logit: if l.is_nan() { f32::NEG_INFINITY } else { l },
                p: 0.0,
            }));
        self.sorted = false;
        self.bias();
        self.penalize(history);
    }

    /// llama.cpp's `logit-bias` stage (each entry added, in order), except that a ban is -inf
    /// whatever the logit, so no logit outweighs it.
    fn bias(&mut self) {
        for &(id, b) in &self.cfg.logit_bias {
            if let Some(c) = self.cands.get_mut(id as usize) {
                if b <= BAN_BIAS {
                    c.logit = f32::NEG_INFINITY;
                } else {
                    c.logit += b;
                }
            }
        }
    }

    /// llama.cpp's `llama_sampler_penalties`: each distinct token of the window once, its
    /// positive logit divided by the repeat penalty and a negative one multiplied (so a penalty
    /// > 1 always makes the token less likely), then `count * frequency + presence` subtracted.
    fn penalize(&mut self, history: &[u32]) {
        if !self.cfg.penalizes() {
            return;
        }
        let (repeat, freq, present) = (
            self.cfg.repeat_penalty,
            self.cfg.frequency_penalty,
            self.cfg.presence_penalty,
        );
        let window = &history[history.len().saturating_sub(self.cfg.repeat_last_n)..];
        let n = self.cands.len();
        // Ids outside the vocabulary cannot be candidates; skip rather than panic.
        for &t in window.iter().filter(|&&t| (t as usize) < n) {
            self.counts[t as usize] += 1;
        }
        // The second pass meets each distinct token with its count and clears it, so the
        // counts are all zero again after.
        for &t in window.iter().filter(|&&t| (t as usize) < n) {
            let count = std::mem::take(&mut self.counts[t as usize]);
            if count == 0 {
                continue;
            }
            let c = &mut self.cands[t as usize];
            if c.logit <= 0.0 {
                c.logit *= repeat;
            } else {
                c.logit /= repeat;
            }
            c.logit -= count as f32 * freq + present;
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

    /// Temperature 1 and no filters: `candidates` lists every token in id order with its logit
    /// after the bias and penalties.
    fn unfiltered() -> SamplerConfig {
        SamplerConfig {
            temp: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplerConfig::default()
        }
    }

    #[test]
    fn penalties_follow_llama_cpp() {
        let cfg = SamplerConfig {
            repeat_penalty: 1.5,
            frequency_penalty: 0.25,
            presence_penalty: 0.5,
            repeat_last_n: 5,
            ..unfiltered()
        };
        let logits = [1.0f32, -1.0, 2.0, 0.5, 3.0];
        // The window is the last five: 0 twice, 1 and 2 once; 7 is outside the vocabulary.
        let history = [2, 2, 0, 1, 2, 0, 7];
        let mut s = Sampler::new(cfg, logits.len());
        for _ in 0..2 {
            // Twice: the counts must be cleared after each call.
            let got: Vec<f32> = s
                .candidates(&logits, &history)
                .iter()
                .map(|c| c.logit)
                .collect();
            let want = [
                1.0 / 1.5 - (2.0 * 0.25 + 0.5),
                -1.5 - (0.25 + 0.5),
                2.0 / 1.5 - (0.25 + 0.5),
                0.5,
                3.0,
            ];
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
            }
        }
        // Greedy sees the penalties too: once in the window, token 2 falls below token 3.
        let logits = [0.0f32, 0.0, 2.0, 1.9];
        let greedy = SamplerConfig {
            repeat_penalty: 1.0,
            presence_penalty: 0.2,
            ..SamplerConfig::greedy()
        };
        assert_eq!(Sampler::new(greedy.clone(), 4).sample(&logits, &[]), 2);
        assert_eq!(Sampler::new(greedy, 4).sample(&logits, &[2]), 3);
    }

    #[test]
    fn banned_tokens_are_never_chosen() {
        let logits = [0.0f32, 1.0, 9.0, 8.5, 0.5];
        let bias = vec![(2, BAN_BIAS), (3, f32::NEG_INFINITY)];
        let greedy = SamplerConfig {
            logit_bias: bias.clone(),
            ..SamplerConfig::greedy()
        };
        assert_eq!(Sampler::new(greedy, 5).sample(&logits, &[]), 1);
        for seed in 0..200 {
            let cfg = SamplerConfig {
                temp: 5.0,
                seed,
                logit_bias: bias.clone(),
                ..unfiltered()
            };
            let mut s = Sampler::new(cfg, 5);
            for _ in 0..10 {
                let id = s.sample(&logits, &[]);
                assert!(id != 2 && id != 3, "seed {seed}: drew banned token {id}");
            }
        }
        // Above -100 a bias is only added.
        let cfg = SamplerConfig {
            logit_bias: vec![(2, -99.0)],
            ..unfiltered()
        };
        let c = Sampler::new(cfg, 5).candidates(&logits, &[])[2];
        assert_eq!(c.logit, 9.0 - 99.0);
    }

    #[test]
    fn a_large_bias_forces_a_token() {
        let mut rng = Mt19937::new(3);
        let logits: Vec<f32> = (0..1000)
            .map(|_| (rng.next_f64() * 16.0 - 8.0) as f32)
            .collect();
        let bias = vec![(7, 100.0)];
        let greedy = SamplerConfig {
            logit_bias: bias.clone(),
            ..SamplerConfig::greedy()
        };
        assert_eq!(Sampler::new(greedy, 1000).sample(&logits, &[]), 7);
        let cfg = SamplerConfig {
            temp: 1.0,
            seed: 11,
            logit_bias: bias,
            ..SamplerConfig::default()
        };
        let mut s = Sampler::new(cfg, 1000);
        for _ in 0..200 {
            assert_eq!(s.sample(&logits, &[]), 7);
        }
    }

    #[test]
    fn validate_checks_penalties_and_bias() {
        let ok = |cfg: SamplerConfig| cfg.validate().is_ok();
        let d = SamplerConfig::default;
        assert!(ok(SamplerConfig {
            presence_penalty: -2.0,
            frequency_penalty: 2.0,
            logit_bias: vec![(1, f32::NEG_INFINITY), (2, 100.0)],
            ..d()
        }));
        for bad in [2.5, -2.01, f32::NAN, f32::INFINITY] {
            assert!(!ok(SamplerConfig {
                presence_penalty: bad,
                ..d()
            }));
            assert!(!ok(SamplerConfig {
                frequency_penalty: bad,
                ..d()
            }));
        }
        for bad in [f32::NAN, f32::INFINITY] {
            assert!(!ok(SamplerConfig {
                logit_bias: vec![(1, bad)],
                ..d()
            }));
        }
    }
}
