//! `/metrics`: the server's and the engine's counters in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use rustorch_engine::engine::Counters;

/// Bucket bounds in seconds.
const TTFT_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const ITL_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c;
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

#[derive(Debug)]
struct Inner {
    /// (endpoint, status) → requests.
    requests: BTreeMap<(String, u16), u64>,
    prompt_tokens: u64,
    generated_tokens: u64,
    ttft: Histogram,
    itl: Histogram,
}

/// What the HTTP side counts.
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            inner: Mutex::new(Inner {
                requests: BTreeMap::new(),
                prompt_tokens: 0,
                generated_tokens: 0,
                ttft: Histogram::new(&TTFT_BUCKETS),
                itl: Histogram::new(&ITL_BUCKETS),
            }),
        }
    }
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn request(&self, endpoint: &str, status: u16) {
        *self
            .lock()
            .requests
            .entry((endpoint.to_string(), status))
            .or_default() += 1;
    }

    pub fn first_token(&self, ttft: Duration) {
        self.lock().ttft.observe(ttft.as_secs_f64());
    }

    pub fn inter_token(&self, gap: Duration) {
        self.lock().itl.observe(gap.as_secs_f64());
    }

    /// A request's prompt tokens, counted when it is accepted.
    pub fn prompt(&self, tokens: usize) {
        self.lock().prompt_tokens += tokens as u64;
    }

    /// A choice's generated tokens, counted when it ends.
    pub fn generated(&self, tokens: usize) {
        self.lock().generated_tokens += tokens as u64;
    }

    /// The text of `/metrics`; `engine` is `None` while the model loads.
    pub fn render(&self, engine: Option<&Counters>) -> String {
        let m = self.lock();
        let mut out = String::new();
        out.push_str(
            "# HELP rustorch_requests_total HTTP requests by endpoint and status.\n\
             # TYPE rustorch_requests_total counter\n",
        );
        for ((endpoint, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "rustorch_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        counter(
            &mut out,
            "rustorch_prompt_tokens_total",
            "Prompt tokens of accepted requests.",
            m.prompt_tokens,
        );
        counter(
            &mut out,
            "rustorch_generated_tokens_total",
            "Tokens generated for finished requests.",
            m.generated_tokens,
        );
        m.ttft.write(
            &mut out,
            "rustorch_time_to_first_token_seconds",
            "From a request's arrival to its first generated token.",
        );
        m.itl.write(
            &mut out,
            "rustorch_inter_token_seconds",
            "Between consecutive generated tokens of a request.",
        );
        let _ = writeln!(
            out,
            "# HELP rustorch_model_loaded Whether the model is loaded.\n\
             # TYPE rustorch_model_loaded gauge\nrustorch_model_loaded {}",
            engine.is_some() as u8
        );
        if let Some(c) = engine {
            let counters = [
                ("rustorch_engine_steps_total", "Forward passes.", c.steps),
                (
                    "rustorch_engine_rows_total",
                    "Rows (tokens) evaluated.",
                    c.rows,
                ),
                (
                    "rustorch_engine_preempted_total",
                    "Sequences preempted for lack of blocks.",
                    c.preempted,
                ),
                (
                    "rustorch_engine_cancelled_total",
                    "Requests cancelled by their client.",
                    c.cancelled,
                ),
                (
                    "rustorch_engine_finished_total",
                    "Requests finished.",
                    c.finished,
                ),
                (
                    "rustorch_prefix_cache_hits_total",
                    "Prompt blocks found in the prefix cache.",
                    c.prefix_hits,
                ),
                (
                    "rustorch_prefix_cache_misses_total",
                    "Prompt blocks not found in the prefix cache.",
                    c.prefix_misses,
                ),
                (
                    "rustorch_engine_cached_tokens_total",
                    "Prompt tokens taken from the prefix cache.",
                    c.cached_tokens,
                ),
            ];
            for (name, help, v) in counters {
                counter(&mut out, name, help, v);
            }
            let gauges = [
                (
                    "rustorch_engine_last_step_rows",
                    "Rows of the last forward pass.",
                    c.last_step_rows,
                ),
                (
                    "rustorch_sequences_running",
                    "Sequences being prefilled or generating.",
                    c.running,
                ),
                (
                    "rustorch_sequences_waiting",
                    "Requests waiting for a sequence (queue depth).",
                    c.waiting,
                ),
                (
                    "rustorch_kv_blocks_used",
                    "KV cache blocks held by sequences.",
                    c.blocks_used,
                ),
                (
                    "rustorch_kv_blocks_free",
                    "KV cache blocks free to take (cached ones included).",
                    c.blocks_free,
                ),
                (
                    "rustorch_kv_blocks_cached",
                    "Unreferenced KV cache blocks kept for the prefix cache.",
                    c.blocks_cached,
                ),
            ];
            for (name, help, v) in gauges {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
            }
        }
        out
    }
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}
