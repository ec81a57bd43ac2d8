//! Chat templates: the Jinja source in a GGUF's `tokenizer.chat_template`, rendered with
//! minijinja in the environment Hugging Face's `apply_chat_template` builds (and llama.cpp's
//! jinja engine imitates): `trim_blocks` and `lstrip_blocks` on, loop controls, the globals
//! `raise_exception` and `strftime_now`, a Python-style `tojson`, and Python string / dict
//! methods (`.strip()`, `.startswith()`, `.items()`, ...) through minijinja-contrib's pycompat.
//!
//! The rendered text is what the model was trained on, so any difference from Hugging Face's
//! output is a bug, however small (a newline, a space).
//!
//! The template comes from a downloaded file, so rendering is bounded in steps, time, memory,
//! output and nesting (`limits.rs`): minijinja parses it, `rewrite.rs` routes every operation
//! that can build a large value or spend long on one through a guard (`guards.rs`), and the
//! result is compiled and run by minijinja's VM with a fuel limit. A limit hit is
//! [`TemplateError::Limit`].

mod builtins;
mod guards;
mod json;
pub mod known;
mod limits;
mod rewrite;
mod strftime;

use minijinja::machinery::{make_string_output, parse, CodeGenerator, Vm, WhitespaceConfig};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

pub use limits::{
    Limit, CALL_WORK, FUEL, ITEM_WORK, MAX_BUILT, MAX_DEPTH, MAX_OUTPUT, MAX_SOURCE,
    MAX_TAG_OPERATORS, MAX_TAG_TOKENS, MAX_VALUE, MAX_WORK,
};
pub use strftime::strftime_utc;

use guards::RaisedException;
use limits::{Budget, BUDGET_VAR};

const TEMPLATE_NAME: &str = "chat_template";

/// Hugging Face: `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)`;
/// Jinja2's default drops one trailing newline.
const WHITESPACE: WhitespaceConfig = WhitespaceConfig {
    keep_trailing_newline: false,
    lstrip_blocks: true,
    trim_blocks: true,
};

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("chat template does not compile: {0}")]
    Syntax(Error),
    /// The template called `raise_exception(msg)`: the conversation breaks one of its rules
    /// (for example roles that do not alternate).
    #[error("chat template rejected the conversation: {0}")]
    Raised(String),
    #[error("chat template failed to render: {0}")]
    Render(Error),
    /// The template would have run too long, printed or built too much, or nested too deep.
    #[error("{0}")]
    Limit(Limit),
    /// `render_delta`: the new rendering does not start with the previous one, so the tokens
    /// already in the KV cache are not a prefix of the new prompt; re-encode it whole.
    #[error("chat template: the new conversation does not extend the previous rendering (they differ from byte {at})")]
    NotAPrefix { at: usize },
}

/// One message of a conversation. `role` is whatever the template expects, usually
/// `system`, `user` or `assistant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A chat template, checked for syntax, with the special-token strings it may print.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The Jinja source. Each rendering parses, rewrites and compiles it again (tens of
    /// microseconds): the compiled form borrows the source, and keeping both in one struct
    /// would take a self-referential type.
    source: String,
    bos_token: String,
    eos_token: String,
    /// Unix seconds for `strftime_now`; `None` reads the system clock at each render.
    fixed_now: Option<i64>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Checks `source` (its size, the size of its tags, its syntax); `bos_token` /
    /// `eos_token` are the strings the template may print for them (the vocabulary's text
    /// of those tokens).
    pub fn new(
        source: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<ChatTemplate, TemplateError> {
        if source.len() > MAX_SOURCE {
            return Err(TemplateError::Limit(Limit::Source));
        }
        rewrite::check_tags(source, WHITESPACE).map_err(TemplateError::Limit)?;
        parse(source, TEMPLATE_NAME, SyntaxConfig, WHITESPACE).map_err(TemplateError::Syntax)?;
        // Only what `guards` registers exists: an operation nobody guarded is unknown.
        let mut env = Environment::empty();
        env.set_fuel(Some(FUEL));
        // No variable snapshots in errors: they would copy whatever the template built.
        env.set_debug(false);
        guards::register(&mut env);
        Ok(ChatTemplate {
            env,
            source: source.to_owned(),
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            fixed_now: None,
        })
    }

    /// Pins the clock `strftime_now` reads (Unix seconds), for reproducible prompts and tests.
    pub fn with_fixed_time(mut self, unix_secs: i64) -> Self {
        self.fixed_now = Some(unix_secs);
        self
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// Renders the conversation; with `add_generation_prompt` the text ends with the header
    /// of the assistant's turn, ready for generation.
    ///
    /// Many templates print `bos_token` themselves. When the vocabulary also adds BOS while
    /// tokenizing, strip a leading `bos_token` from the result first (llama.cpp does), or the
    /// prompt starts with two.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let ast = parse(&self.source, TEMPLATE_NAME, SyntaxConfig, WHITESPACE)
            .map_err(TemplateError::Syntax)?;
        let mut codegen = CodeGenerator::new(TEMPLATE_NAME, &self.source);
        codegen.compile_stmt(&rewrite::template(&ast));
        let (instructions, blocks) = codegen.finish();

        let budget = std::sync::Arc::new(Budget::new(self.fixed_now));
        // `tools` and `documents` are None rather than undefined, as Hugging Face passes them:
        // templates test `tools is not none`.
        let ctx = Value::from_iter([
            ("messages", Value::from_serialize(messages)),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("bos_token", Value::from(self.bos_token.as_str())),
            ("eos_token", Value::from(self.eos_token.as_str())),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
            (BUDGET_VAR, Value::from_dyn_object(budget.clone())),
        ]);
        let mut text = String::new();
        let result = Vm::new(&self.env).eval(
            &instructions,
            ctx,
            &blocks,
            &mut make_string_output(&mut text),
            AutoEscape::None,
        );
        match result {
            // A guard's error stops the rendering; were one swallowed on the way out, the
            // limit still holds. Every printed value passed `~out`: the length check only
            // restates that limit.
            Ok(_) => match budget.hit() {
                Some(limit) => Err(TemplateError::Limit(limit)),
                None if text.len() > MAX_OUTPUT => Err(TemplateError::Limit(Limit::Output)),
                None => Ok(text),
            },
            Err(err) => Err(classify(err, &budget)),
        }
    }

    /// The text `new` adds after the rendering of `prev`, for keeping the KV cache of an
    /// interactive chat: `prev` is the conversation already in the cache (its last message,
    /// usually the assistant's reply, complete, so rendered without the generation prompt, as
    /// llama.cpp's `common_chat_format_single` does), `new` is `prev` plus the new messages.
    ///
    /// Errors with [`TemplateError::NotAPrefix`] when the template renders earlier turns
    /// differently once more follow (some drop old reasoning, or place the system prompt in
    /// the last user turn): the caller must then re-encode the whole conversation.
    ///
    /// The cache may hold less than the rendering of `prev`: generation usually stops at the
    /// end-of-turn token, before any newline the template prints after it. The caller owns
    /// that difference.
    pub fn render_delta(
        &self,
        prev: &[ChatMessage],
        new: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let old = if prev.is_empty() {
            String::new()
        } else {
            self.render(prev, false)?
        };
        let mut full = self.render(new, add_generation_prompt)?;
        if !full.starts_with(&old) {
            let at = old
                .bytes()
                .zip(full.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            return Err(TemplateError::NotAPrefix { at });
        }
        Ok(full.split_off(old.len()))
    }
}

/// Where each message's content lies in `rendered` (its rendering), in order: the ranges a
/// tokenizer should keep as text ([`rustorch_tokenizer::Tokenizer::encode_with_literals`]), so
/// that a message cannot forge the template's special tokens. Each content is looked for as
/// is, else trimmed (templates often strip it), after the previous one's range; blank contents
/// have no range. `None` when some content is not found (a template that rewrites it): the
/// caller then cannot tell the user's text from the template's.
pub fn literal_ranges(
    rendered: &str,
    messages: &[ChatMessage],
) -> Option<Vec<std::ops::Range<usize>>> {
    let mut ranges = Vec::with_capacity(messages.len());
    let mut from = 0;
    for m in messages {
        let trimmed = m.content.trim();
        if trimmed.is_empty() {
            continue;
        }
        let rest = &rendered[from..];
        let (at, len) = match rest.find(m.content.as_str()) {
            Some(at) => (at, m.content.len()),
            None => (rest.find(trimmed)?, trimmed.len()),
        };
        ranges.push(from + at..from + at + len);
        from += at + len;
    }
    Some(ranges)
}

/// Tells limits and `raise_exception` apart from other failures: a limit is recorded in the
/// budget when hit, whatever error minijinja then wraps it in; `raise_exception` leaves its
/// marker in the source chain.
fn classify(err: Error, budget: &Budget) -> TemplateError {
    if let Some(limit) = budget.hit() {
        return TemplateError::Limit(limit);
    }
    match err.kind() {
        ErrorKind::OutOfFuel => return TemplateError::Limit(Limit::Steps),
        ErrorKind::InvalidOperation if err.detail() == Some("recursion limit exceeded") => {
            return TemplateError::Limit(Limit::Recursion)
        }
        _ => {}
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(raised) = e.downcast_ref::<RaisedException>() {
            return TemplateError::Raised(raised.0.clone());
        }
        source = e.source();
    }
    TemplateError::Render(err)
}
