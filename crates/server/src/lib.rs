//! `rustorch serve`: the OpenAI API over the engine.
//!
//! The engine runs on its own thread ([`EngineHandle`]) and owns the model; the async side
//! (axum on tokio) only parses requests, renders chat templates, tokenizes, submits, and turns
//! each request's stream of engine events into a JSON answer or server-sent events. A client
//! that goes away drops its streams, which cancels its sequences before the engine's next step.
//!
//! The socket is bound and `/health` answers (503) before the model is loaded; the model loads
//! on a thread of its own. SIGTERM or Ctrl-C stops accepting connections, ends every running
//! request with a final event, and returns once the connections have closed.

mod api;
mod chat;
mod error;
mod generate;
mod metrics;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rustorch_engine::chat_template::ChatTemplate;
use rustorch_engine::engine::EngineHandle;
use rustorch_engine::sampler::SamplerConfig;
use rustorch_tokenizer::Tokenizer;
use serde_json::json;
use tokio::sync::Notify;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};

pub use error::ApiError;
use metrics::Metrics;

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 8 << 20;

/// How long the server waits, after a stop signal, for connections to close.
const DRAIN: Duration = Duration::from_secs(10);

/// What the server is told on the command line.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub host: String,
    pub port: u16,
    /// Requests must carry `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// The model's id in the API.
    pub model_id: String,
    /// An origin allowed to call the API from a browser (`*`: any).
    pub cors: Option<String>,
    /// Sampling when a request does not say (its seed is ignored: `seed` is).
    pub sampling: SamplerConfig,
    /// A fixed seed for requests without one (none: a random seed per request).
    pub seed: Option<u64>,
    /// Tokens to generate when a request does not say (none: up to the context).
    pub max_tokens: Option<usize>,
}

/// The loaded model: the engine's handle and what turns requests into tokens.
pub struct Loaded {
    pub engine: EngineHandle,
    pub tok: Arc<Tokenizer>,
    pub template: ChatTemplate,
}

/// What every handler sees.
pub(crate) struct App {
    cfg: ServeConfig,
    loaded: OnceLock<Arc<Loaded>>,
    metrics: Metrics,
    /// Set by a stop signal: new generations are refused.
    stopping: AtomicBool,
    created: u64,
}

impl App {
    /// The model, or 503 while it loads (or once the server is stopping).
    fn model(&self) -> Result<Arc<Loaded>, ApiError> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            ));
        }
        self.loaded.get().cloned().ok_or_else(|| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the model is loading").retry_after(1)
        })
    }

    /// Refuses a request for another model.
    fn check_model(&self, asked: Option<&str>) -> Result<(), ApiError> {
        match asked {
            Some(m) if !m.is_empty() && m != self.cfg.model_id => Err(ApiError {
                param: Some("model".into()),
                ..ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "the model `{}` does not exist: this server serves `{}`",
                        m.escape_debug(),
                        self.cfg.model_id
                    ),
                )
            }),
            _ => Ok(()),
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Binds, prints `listening on http://ADDR`, loads the model with `load` on a thread of its own,
/// and serves until SIGTERM or Ctrl-C. An error from `load` stops the server with that error.
pub fn serve(
    cfg: ServeConfig,
    load: Box<dyn FnOnce() -> anyhow::Result<Loaded> + Send>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rustorch-http")
        .enable_all()
        .build()?;
    rt.block_on(run(cfg, load))
}

async fn run(
    cfg: ServeConfig,
    load: Box<dyn FnOnce() -> anyhow::Result<Loaded> + Send>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind((cfg.host.as_str(), cfg.port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", cfg.host, cfg.port))?;
    let addr: SocketAddr = listener.local_addr()?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    let app = Arc::new(App {
        cfg,
        loaded: OnceLock::new(),
        metrics: Metrics::default(),
        stopping: AtomicBool::new(false),
        created: unix_now(),
    });

    // The model loads beside the server; a failure ends it.
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    {
        let app = app.clone();
        std::thread::Builder::new()
            .name("rustorch-load".into())
            .spawn(move || match load() {
                Ok(l) => {
                    let _ = app.loaded.set(Arc::new(l));
                    eprintln!("model loaded: serving {}", app.cfg.model_id);
                }
                Err(e) => {
                    let _ = failed_tx.send(e);
                }
            })?;
    }

    let router = router(app.clone());
    let stop = Arc::new(Notify::new());
    let failure: Arc<std::sync::Mutex<Option<anyhow::Error>>> = Default::default();
    let signal = {
        let (app, stop, failure) = (app.clone(), stop.clone(), failure.clone());
        async move {
            tokio::select! {
                _ = stop_signal() => eprintln!("stopping: finishing the running requests"),
                Ok(e) = failed_rx => {
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            }
            app.stopping.store(true, Ordering::Relaxed);
            if let Some(l) = app.loaded.get() {
                l.engine.shutdown();
            }
            stop.notify_one();
        }
    };
    let server = axum::serve(listener, router).with_graceful_shutdown(signal);
    tokio::select! {
        r = server => r?,
        _ = async { stop.notified().await; tokio::time::sleep(DRAIN).await } => {
            eprintln!("stopping: connections still open after {} s, closing them", DRAIN.as_secs());
        }
    }
    if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    Ok(())
}

/// SIGTERM or Ctrl-C.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn router(app: Arc<App>) -> Router {
    // Quick endpoints get a timeout; generations run as long as their client waits.
    let quick = Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/v1/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/metrics", get(metrics_text))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(60),
        ));
    let mut r = Router::new()
        .route("/v1/chat/completions", post(generate::chat))
        .route("/chat/completions", post(generate::chat))
        .route("/v1/completions", post(generate::completions))
        .route("/completions", post(generate::completions))
        .merge(quick)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), gate))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    if let Some(origin) = &app.cfg.cors {
        let allow = if origin == "*" {
            AllowOrigin::any()
        } else {
            match HeaderValue::from_str(origin) {
                Ok(v) => AllowOrigin::exact(v),
                Err(_) => AllowOrigin::list([]),
            }
        };
        r = r.layer(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        );
    }
    let trace = TraceLayer::new_for_http()
        .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO))
        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO))
        // A 503 while loading or a 429 is an answer, not a server fault: the response line
        // (RUSTORCH_LOG=info) has the status.
        .on_failure(());
    r.layer(trace).with_state(app)
}

/// Checks the API key and counts every answer by endpoint and status.
async fn gate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let open = matches!(endpoint.as_str(), "/" | "/health" | "/v1/health");
    let response = match &app.cfg.api_key {
        Some(key) if !open && req.method() != Method::OPTIONS => {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            match given {
                Some(g) if constant_time_eq(g.trim().as_bytes(), key.as_bytes()) => {
                    next.run(req).await
                }
                Some(_) => {
                    ApiError::new(StatusCode::UNAUTHORIZED, "invalid API key").into_response()
                }
                None => ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing API key: send `Authorization: Bearer KEY`",
                )
                .into_response(),
            }
        }
        _ => next.run(req).await,
    };
    app.metrics.request(&endpoint, response.status().as_u16());
    response
}

/// Compares without returning early, so the time taken says nothing about the key.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &x) in b.iter().enumerate() {
        diff |= (a.get(i).copied().unwrap_or(0) ^ x) as usize;
    }
    diff == 0
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

/// A body read whole, or the error (413 above the limit) in OpenAI's shape.
pub(crate) fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|e| {
        let status = e.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("the request body is larger than {} MiB", BODY_LIMIT >> 20)
        } else {
            format!("cannot read the request body: {e}")
        };
        ApiError::new(status, msg)
    })
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn health(State(app): State<Arc<App>>) -> Response {
    if app.loaded.get().is_some() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading"})),
        )
            .into_response()
    }
}

fn model_object(app: &App) -> serde_json::Value {
    let mut m = json!({
        "id": app.cfg.model_id,
        "object": "model",
        "created": app.created,
        "owned_by": "rustorch",
    });
    if let Some(l) = app.loaded.get() {
        m["meta"] = json!({"n_ctx": l.engine.n_ctx(), "n_vocab": l.tok.n_vocab()});
    }
    m
}

async fn models(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(json!({"object": "list", "data": [model_object(&app)]}))
}

async fn model(
    State(app): State<Arc<App>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    app.check_model(Some(&id))?;
    Ok(Json(model_object(&app)))
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    let counters = app.loaded.get().map(|l| l.engine.counters());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(counters.as_ref()),
    )
        .into_response()
}

async fn tokenize(
    State(app): State<Arc<App>>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let l = app.model()?;
    let req: api::TokenizeRequest = api::parse(&body(b)?)?;
    let ids = tokio::task::spawn_blocking(move || {
        l.tok
            .encode(&req.content, req.add_special, req.parse_special)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(json!({ "tokens": ids })))
}

async fn detokenize(
    State(app): State<Arc<App>>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let l = app.model()?;
    let req: api::DetokenizeRequest = api::parse(&body(b)?)?;
    let n_vocab = l.tok.n_vocab();
    if let Some(t) = req.tokens.iter().find(|&&t| t as usize >= n_vocab) {
        return Err(ApiError::field(
            "tokens",
            format!("token {t} is outside the vocabulary of {n_vocab}"),
        ));
    }
    Ok(Json(json!({ "content": l.tok.decode(&req.tokens, false) })))
}
