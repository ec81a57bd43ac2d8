//! `/v1/chat/completions` and `/v1/completions`: requests to engine requests, engine events to
//! OpenAI's answers (whole, or streamed as server-sent events).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, BoxStream, SelectAll, StreamExt};
use rustorch_engine::engine::{
    Event, Finish, FinishReason, Request, Stream, SubmitError, TokenLogprob,
};
use rustorch_engine::sampler::SamplerConfig;
use serde_json::{json, Value};

use crate::api::{self, Prompt, Sampling, Stop};
use crate::chat::{self, Reasoning};
use crate::error::ApiError;
use crate::{body, App, Loaded};

/// Choices per request at most (`n`).
const MAX_N: u32 = 16;
/// Stop strings per request at most, and bytes per stop string (each token's text is checked
/// against every stop string's beginnings).
const MAX_STOP: usize = 16;
const MAX_STOP_BYTES: usize = 4096;
/// Alternatives per token at most (`top_logprobs`).
const MAX_TOP_LOGPROBS: u32 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

/// One request's engine work: a prompt (or several, for completions) times `n` choices.
struct Job {
    kind: Kind,
    id: String,
    model: String,
    created: u64,
    /// The prompt of each choice (choice `i` is prompt `i / n`).
    prompts: Vec<Vec<u32>>,
    n: usize,
    max_tokens: usize,
    /// Choice `j` of a prompt samples with seed `seed + j`.
    sampling: SamplerConfig,
    stop: Vec<String>,
    logprobs: Option<usize>,
    stream: bool,
    include_usage: bool,
    /// Split `<think>` blocks out; whether the prompt opened one.
    thinks: bool,
    opened: bool,
    arrived: Instant,
}

/// What both endpoints check first: the body, its endpoint fields and its sampling fields, the
/// model's name, fields not implemented, and the model being loaded.
fn accept<T: serde::de::DeserializeOwned>(
    app: &App,
    b: Result<Bytes, BytesRejection>,
    unsupported: fn(&T) -> Result<(), ApiError>,
) -> Result<(T, Sampling, Arc<Loaded>), ApiError> {
    let b = body(b)?;
    let req: T = api::parse(&b)?;
    let s: Sampling = api::parse(&b)?;
    app.check_model(s.model.as_deref())?;
    unsupported(&req)?;
    Ok((req, s, app.model()?))
}

pub async fn chat(
    State(app): State<Arc<App>>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let (req, s, l) = accept::<api::ChatRequest>(&app, b, api::ChatRequest::check_unsupported)?;
    let msgs = chat::messages(&req.messages)?;
    let logprobs = match (req.logprobs, req.top_logprobs) {
        (Some(true), k) => Some(k.unwrap_or(0)),
        (_, Some(k)) if k > 0 => {
            return Err(ApiError::field(
                "top_logprobs",
                "`top_logprobs` needs `logprobs: true`",
            ))
        }
        _ => None,
    };
    let lc = l.clone();
    let (text, ids) =
        tokio::task::spawn_blocking(move || chat::prompt(&lc.template, &lc.tok, &msgs))
            .await
            .map_err(internal)??;
    let thinks = chat::thinks(&l.tok);
    let opened = thinks && chat::opens_thinking(&text);
    let job = job(
        &app,
        &l,
        Kind::Chat,
        &s,
        vec![ids],
        logprobs,
        thinks,
        opened,
        arrived,
    )?;
    run(app, l, job).await
}

pub async fn completions(
    State(app): State<Arc<App>>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let (req, s, l) =
        accept::<api::CompletionRequest>(&app, b, api::CompletionRequest::check_unsupported)?;
    let lc = l.clone();
    let prompts = tokio::task::spawn_blocking(move || match req.prompt {
        Prompt::Text(t) => vec![lc.tok.encode(&t, true, true)],
        Prompt::Texts(ts) => ts.iter().map(|t| lc.tok.encode(t, true, true)).collect(),
        Prompt::Tokens(ids) => vec![ids],
        Prompt::TokenLists(l) => l,
    })
    .await
    .map_err(internal)?;
    if prompts.is_empty() || prompts.iter().any(|p| p.is_empty()) {
        return Err(ApiError::field("prompt", "`prompt` must not be empty"));
    }
    let job = job(
        &app,
        &l,
        Kind::Completion,
        &s,
        prompts,
        req.logprobs,
        false,
        false,
        arrived,
    )?;
    run(app, l, job).await
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// A seed nobody chose.
fn random_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

fn in_range(name: &str, v: Option<f32>, lo: f32, hi: f32) -> Result<Option<f32>, ApiError> {
    match v {
        Some(x) if !(x.is_finite() && x >= lo && x <= hi) => Err(ApiError::field(
            name,
            format!("`{name}` must be between {lo} and {hi}, got {x}"),
        )),
        _ => Ok(v),
    }
}

/// Checks the sampling fields and builds the job.
#[allow(clippy::too_many_arguments)]
fn job(
    app: &App,
    l: &Loaded,
    kind: Kind,
    s: &Sampling,
    prompts: Vec<Vec<u32>>,
    logprobs: Option<u32>,
    thinks: bool,
    opened: bool,
    arrived: Instant,
) -> Result<Job, ApiError> {
    let d = &app.cfg.sampling;
    let n_ctx = l.engine.n_ctx();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if longest + 1 > n_ctx {
        return Err(ApiError::field(
            if kind == Kind::Chat {
                "messages"
            } else {
                "prompt"
            },
            format!(
                "the prompt is {longest} tokens long, and the context holds {n_ctx} tokens \
                 (with at least one to generate)"
            ),
        ));
    }
    let n = s.n.unwrap_or(1);
    if n == 0 || n > MAX_N {
        return Err(ApiError::field(
            "n",
            format!("`n` must be between 1 and {MAX_N}"),
        ));
    }
    let asked = s.max_completion_tokens.or(s.max_tokens);
    if asked == Some(0) {
        let name = if s.max_completion_tokens.is_some() {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        return Err(ApiError::field(
            name,
            format!("`{name}` must be at least 1"),
        ));
    }
    // Beyond the context: clamped; the generation then ends with "length".
    let room = n_ctx - longest;
    let max_tokens = asked
        .map(|m| m as usize)
        .or(app.cfg.max_tokens)
        .unwrap_or(room)
        .min(room);
    let temp = in_range("temperature", s.temperature, 0.0, 100.0)?.unwrap_or(d.temp);
    let top_p = in_range("top_p", s.top_p, 0.0, 1.0)?.unwrap_or(d.top_p);
    if top_p == 0.0 {
        return Err(ApiError::field("top_p", "`top_p` must be above 0"));
    }
    let min_p = in_range("min_p", s.min_p, 0.0, 1.0)?.unwrap_or(d.min_p);
    let repeat_penalty =
        in_range("repeat_penalty", s.repeat_penalty, 0.0, 100.0)?.unwrap_or(d.repeat_penalty);
    if repeat_penalty == 0.0 {
        return Err(ApiError::field(
            "repeat_penalty",
            "`repeat_penalty` must be above 0",
        ));
    }
    let presence_penalty =
        in_range("presence_penalty", s.presence_penalty, -2.0, 2.0)?.unwrap_or(0.0);
    let frequency_penalty =
        in_range("frequency_penalty", s.frequency_penalty, -2.0, 2.0)?.unwrap_or(0.0);
    let top_k = match s.top_k {
        Some(k) => k.max(0) as usize,
        None => d.top_k,
    };
    let mut logit_bias = Vec::new();
    if let Some(bias) = &s.logit_bias {
        let n_vocab = l.tok.n_vocab();
        for (k, &v) in bias {
            let id: u32 = k
                .parse()
                .ok()
                .filter(|&i| (i as usize) < n_vocab)
                .ok_or_else(|| {
                    ApiError::field(
                        "logit_bias",
                        format!("`logit_bias` key {:?} is not a token id below {n_vocab}", k),
                    )
                })?;
            if !(v.is_finite() && (-100.0..=100.0).contains(&v)) {
                return Err(ApiError::field(
                    "logit_bias",
                    format!("`logit_bias` values must be between -100 and 100, got {v}"),
                ));
            }
            logit_bias.push((id, v));
        }
        logit_bias.sort_by_key(|b| b.0);
    }
    let stop = match &s.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    if stop.len() > MAX_STOP {
        return Err(ApiError::field(
            "stop",
            format!("at most {MAX_STOP} stop strings"),
        ));
    }
    if stop.iter().any(|s| s.len() > MAX_STOP_BYTES) {
        return Err(ApiError::field(
            "stop",
            format!("a stop string may be {MAX_STOP_BYTES} bytes long at most"),
        ));
    }
    if let Some(k) = logprobs {
        if k > MAX_TOP_LOGPROBS {
            let name = if kind == Kind::Chat {
                "top_logprobs"
            } else {
                "logprobs"
            };
            return Err(ApiError::field(
                name,
                format!("`{name}` must be at most {MAX_TOP_LOGPROBS}"),
            ));
        }
    }
    let seed = match s.seed {
        Some(v) => v as u64,
        None => app.cfg.seed.unwrap_or_else(random_seed),
    };
    let prefix = if kind == Kind::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    };
    Ok(Job {
        kind,
        id: format!("{prefix}-{:016x}", random_seed()),
        model: app.cfg.model_id.clone(),
        created: crate::unix_now(),
        prompts,
        n: n as usize,
        max_tokens,
        sampling: SamplerConfig {
            temp,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            repeat_last_n: d.repeat_last_n,
            presence_penalty,
            frequency_penalty,
            logit_bias,
            seed,
        },
        stop,
        logprobs: logprobs.map(|k| k as usize),
        stream: s.stream.unwrap_or(false),
        include_usage: s
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        thinks,
        opened,
        arrived,
    })
}

fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::QueueFull { .. } => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()).retry_after(1)
        }
        SubmitError::Stopped => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        SubmitError::PromptTooLong { .. } | SubmitError::EmptyPrompt | SubmitError::BadToken(_) => {
            ApiError::field("prompt", e.to_string())
        }
        SubmitError::Sampling(m) => ApiError::bad_request(m),
    }
}

/// Submits every choice, then answers whole or as a stream.
async fn run(app: Arc<App>, l: Arc<Loaded>, job: Job) -> Result<Response, ApiError> {
    let mut streams = Vec::with_capacity(job.prompts.len() * job.n);
    for (p, prompt) in job.prompts.iter().enumerate() {
        for j in 0..job.n {
            let mut sampling = job.sampling.clone();
            sampling.seed = sampling.seed.wrapping_add(j as u64);
            let req = Request {
                prompt: prompt.clone(),
                max_tokens: job.max_tokens,
                sampling,
                stop: job.stop.clone(),
                ignore_eos: false,
                logprobs: job.logprobs,
            };
            // Streams already submitted are dropped with an error here, which cancels them.
            let s = l.engine.submit_async(req).await.map_err(submit_error)?;
            streams.push((p * job.n + j, s));
        }
    }
    let prompt_tokens: usize = job.prompts.iter().map(Vec::len).sum();
    let state = Answer::new(app, l, job, prompt_tokens, streams);
    if state.job.stream {
        Ok(stream_response(state))
    } else {
        whole_response(state).await
    }
}

/// One choice as it is generated.
struct Choice {
    reasoning: Reasoning,
    text: String,
    thought: String,
    /// Chat: `{"token", "logprob", "bytes", "top_logprobs"}` entries; completions: the token
    /// strings, their logprobs and alternatives.
    logprobs: Vec<(u32, TokenLogprob)>,
    finish: Option<Finish>,
    last: Option<Instant>,
    /// A streamed choice sent its opening chunk (the role).
    opened: bool,
}

/// The state of a request's answer: the merged events of its choices.
struct Answer {
    app: Arc<App>,
    l: Arc<Loaded>,
    job: Job,
    prompt_tokens: usize,
    events: SelectAll<BoxStream<'static, (usize, Event)>>,
    choices: Vec<Choice>,
    /// SSE events ready to send.
    out: VecDeque<Sse>,
    done: bool,
}

fn events_of(i: usize, s: Stream) -> BoxStream<'static, (usize, Event)> {
    stream::unfold(s, move |mut s| async move {
        s.next().await.map(|e| ((i, e), s))
    })
    .boxed()
}

impl Answer {
    fn new(
        app: Arc<App>,
        l: Arc<Loaded>,
        job: Job,
        prompt_tokens: usize,
        streams: Vec<(usize, Stream)>,
    ) -> Answer {
        let choices = (0..streams.len())
            .map(|_| Choice {
                reasoning: Reasoning::new(job.thinks, job.opened),
                text: String::new(),
                thought: String::new(),
                logprobs: Vec::new(),
                finish: None,
                last: None,
                opened: false,
            })
            .collect();
        app.metrics.prompt(prompt_tokens);
        Answer {
            app,
            l,
            prompt_tokens,
            events: stream::select_all(streams.into_iter().map(|(i, s)| events_of(i, s))),
            choices,
            job,
            out: VecDeque::new(),
            done: false,
        }
    }

    /// Takes the next engine event; `None` when every choice has ended. Returns the choice,
    /// the reasoning and answer text it adds, and its token's logprobs.
    async fn next(&mut self) -> Option<(usize, String, String, Option<(u32, TokenLogprob)>)> {
        let (i, e) = self.events.next().await?;
        let c = &mut self.choices[i];
        let (think, text, lp) = match e {
            Event::Token { id, text, logprob } => {
                let now = Instant::now();
                match c.last {
                    None => self.app.metrics.first_token(now - self.job.arrived),
                    Some(t) => self.app.metrics.inter_token(now - t),
                }
                c.last = Some(now);
                let (a, b) = c.reasoning.push(&text);
                (a, b, logprob.map(|lp| (id, lp)))
            }
            Event::Text(t) => {
                let (a, b) = c.reasoning.push(&t);
                (a, b, None)
            }
            Event::Done(f) => {
                let (a, b) = c.reasoning.finish();
                self.app.metrics.generated(f.completion_tokens);
                c.finish = Some(f);
                (a, b, None)
            }
        };
        c.thought.push_str(&think);
        c.text.push_str(&text);
        if let Some(lp) = &lp {
            c.logprobs.push(lp.clone());
        }
        Some((i, think, text, lp))
    }

    fn usage(&self) -> Value {
        let completion: usize = self
            .choices
            .iter()
            .filter_map(|c| c.finish.as_ref())
            .map(|f| f.completion_tokens)
            .sum();
        let cached = self
            .choices
            .iter()
            .filter_map(|c| c.finish.as_ref())
            .map(|f| f.cached_tokens)
            .max()
            .unwrap_or(0);
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        })
    }

    fn piece(&self, id: u32) -> (String, Vec<u8>) {
        let bytes = self.l.tok.token_to_piece(id, false);
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    }

    /// OpenAI's logprobs object for these tokens.
    fn logprobs_json(&self, lps: &[(u32, TokenLogprob)]) -> Value {
        match self.job.kind {
            Kind::Chat => {
                let content: Vec<Value> = lps
                    .iter()
                    .map(|(id, lp)| {
                        let (token, bytes) = self.piece(*id);
                        let top: Vec<Value> = lp
                            .top
                            .iter()
                            .map(|&(t, p)| {
                                let (token, bytes) = self.piece(t);
                                json!({"token": token, "logprob": p, "bytes": bytes})
                            })
                            .collect();
                        json!({"token": token, "logprob": lp.logprob, "bytes": bytes, "top_logprobs": top})
                    })
                    .collect();
                json!({ "content": content })
            }
            Kind::Completion => {
                let mut tokens = Vec::new();
                let mut token_logprobs = Vec::new();
                let mut top = Vec::new();
                for (id, lp) in lps {
                    tokens.push(self.piece(*id).0);
                    token_logprobs.push(lp.logprob);
                    let m: serde_json::Map<String, Value> = lp
                        .top
                        .iter()
                        .map(|&(t, p)| (self.piece(t).0, json!(p)))
                        .collect();
                    top.push(Value::Object(m));
                }
                json!({"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top})
            }
        }
    }

    fn finish_reason(f: &Finish) -> &'static str {
        match f.reason {
            FinishReason::Length | FinishReason::ContextFull => "length",
            _ => "stop",
        }
    }

    /// A whole-answer or chunk envelope.
    fn envelope(&self, choices: Vec<Value>, chunk: bool) -> Value {
        let object = match (self.job.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        };
        json!({
            "id": self.job.id,
            "object": object,
            "created": self.job.created,
            "model": self.job.model,
            "system_fingerprint": "rustorch",
            "choices": choices,
        })
    }

    /// The first error among the choices, if one failed.
    fn error(&self) -> Option<ApiError> {
        self.choices
            .iter()
            .filter_map(|c| c.finish.as_ref())
            .find(|f| f.reason == FinishReason::Error)
            .map(finish_error)
    }
}

async fn whole_response(mut a: Answer) -> Result<Response, ApiError> {
    while a.next().await.is_some() {}
    if let Some(e) = a.error() {
        return Err(e);
    }
    let choices: Vec<Value> = a
        .choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let reason = c.finish.as_ref().map(Answer::finish_reason).unwrap_or("stop");
            let logprobs = match a.job.logprobs {
                Some(_) => a.logprobs_json(&c.logprobs),
                None => Value::Null,
            };
            match a.job.kind {
                Kind::Chat => {
                    let mut message = json!({"role": "assistant", "content": c.text});
                    if !c.thought.is_empty() {
                        message["reasoning_content"] = json!(c.thought);
                    }
                    json!({"index": i, "message": message, "logprobs": logprobs, "finish_reason": reason})
                }
                Kind::Completion => {
                    json!({"index": i, "text": c.text, "logprobs": logprobs, "finish_reason": reason})
                }
            }
        })
        .collect();
    let mut v = a.envelope(choices, false);
    v["usage"] = a.usage();
    Ok(Json(v).into_response())
}

/// The error of a choice the model failed.
fn finish_error(f: &Finish) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        f.error.clone().unwrap_or_else(|| "the model failed".into()),
    )
}

fn sse_json(v: &Value) -> Sse {
    Sse::default().data(v.to_string())
}

/// The SSE events a choice's new text and token bring.
fn chunk_events(
    a: &mut Answer,
    i: usize,
    think: String,
    text: String,
    lp: Option<(u32, TokenLogprob)>,
) {
    let finish = a.choices[i].finish.clone();
    if a.job.kind == Kind::Chat && !a.choices[i].opened {
        a.choices[i].opened = true;
        let v = a.envelope(
            vec![json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null})],
            true,
        );
        a.out.push_back(sse_json(&v));
    }
    let logprobs = match lp {
        Some(lp) => a.logprobs_json(&[lp]),
        None => Value::Null,
    };
    if !think.is_empty() || !text.is_empty() || !logprobs.is_null() {
        let choice = match a.job.kind {
            Kind::Chat => {
                let mut delta = json!({});
                if !think.is_empty() {
                    delta["reasoning_content"] = json!(think);
                }
                if !text.is_empty() || think.is_empty() {
                    delta["content"] = json!(text);
                }
                json!({"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": null})
            }
            Kind::Completion => {
                json!({"index": i, "text": text, "logprobs": logprobs, "finish_reason": null})
            }
        };
        let v = a.envelope(vec![choice], true);
        a.out.push_back(sse_json(&v));
    }
    if let Some(f) = finish {
        if f.reason == FinishReason::Error {
            a.out.push_back(sse_json(&finish_error(&f).body()));
            return;
        }
        let reason = Answer::finish_reason(&f);
        let choice = match a.job.kind {
            Kind::Chat => {
                json!({"index": i, "delta": {}, "logprobs": null, "finish_reason": reason})
            }
            Kind::Completion => {
                json!({"index": i, "text": "", "logprobs": null, "finish_reason": reason})
            }
        };
        let v = a.envelope(vec![choice], true);
        a.out.push_back(sse_json(&v));
    }
}

fn stream_response(a: Answer) -> Response {
    type Item = Result<Sse, Infallible>;
    let s = stream::unfold(a, |mut a| async move {
        loop {
            if let Some(e) = a.out.pop_front() {
                return Some((Ok::<Sse, Infallible>(e), a));
            }
            if a.done {
                return None;
            }
            match a.next().await {
                Some((i, think, text, lp)) => chunk_events(&mut a, i, think, text, lp),
                None => {
                    if a.job.include_usage {
                        let mut v = a.envelope(Vec::new(), true);
                        v["usage"] = a.usage();
                        a.out.push_back(sse_json(&v));
                    }
                    a.out.push_back(Sse::default().data("[DONE]"));
                    a.done = true;
                }
            }
        }
    });
    let s: Pin<Box<dyn futures_util::Stream<Item = Item> + Send>> = Box::pin(s);
    axum::response::Sse::new(s)
        .keep_alive(KeepAlive::default())
        .into_response()
}
