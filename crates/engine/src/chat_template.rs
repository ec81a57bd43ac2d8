//! Chat templates: the Jinja source in a GGUF's `tokenizer.chat_template`, rendered with
//! minijinja in the environment Hugging Face's `apply_chat_template` builds (and llama.cpp's
//! jinja engine imitates): `trim_blocks` and `lstrip_blocks` on, loop controls, the globals
//! `raise_exception` and `strftime_now`, a Python-style `tojson`, and Python string / dict
//! methods (`.strip()`, `.startswith()`, `.items()`, ...) through minijinja-contrib's pycompat.
//!
//! The rendered text is what the model was trained on, so any difference from Hugging Face's
//! output is a bug, however small (a newline, a space).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State};
use serde::{Deserialize, Serialize};

const TEMPLATE_NAME: &str = "chat_template";
/// Context variable carrying a fixed clock for `strftime_now` (tests, reproducible prompts).
const NOW_VAR: &str = "__rustorch_now";

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("chat template does not compile: {0}")]
    Syntax(#[source] Error),
    /// The template called `raise_exception(msg)`: the conversation breaks one of its rules
    /// (for example roles that do not alternate).
    #[error("chat template rejected the conversation: {0}")]
    Raised(String),
    #[error("chat template failed to render: {0}")]
    Render(#[source] Error),
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

/// A compiled chat template with the special-token strings it may print.
pub struct ChatTemplate {
    env: Environment<'static>,
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

/// Marks an error as coming from `raise_exception`, so `render` can tell it from a bug in
/// the template.
#[derive(Debug)]
struct RaisedException(String);

impl std::fmt::Display for RaisedException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg.clone()).with_source(RaisedException(msg)))
}

fn strftime_now(state: &State, fmt: String) -> Result<String, Error> {
    let now = match state.lookup(NOW_VAR).and_then(|v| i64::try_from(v).ok()) {
        Some(t) => t,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    };
    Ok(strftime_utc(&fmt, now))
}

impl ChatTemplate {
    /// Compiles `source` once; `bos_token` / `eos_token` are the strings the template may
    /// print for them (the vocabulary's text of those tokens).
    pub fn new(
        source: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<ChatTemplate, TemplateError> {
        let mut env = Environment::new();
        // Hugging Face: ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        // with the loopcontrols extension; Jinja2's default drops one trailing newline.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(TemplateError::Syntax)?;
        Ok(ChatTemplate {
            env,
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
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(TemplateError::Render)?;
        // `tools` and `documents` are None rather than undefined, as Hugging Face passes them:
        // templates test `tools is not none`.
        let ctx = minijinja::context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
            tools => Value::from(()),
            documents => Value::from(()),
            __rustorch_now => self.fixed_now,
        };
        tmpl.render(ctx).map_err(classify)
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

/// Tells `raise_exception` apart from other failures by the marker in the source chain.
fn classify(err: Error) -> TemplateError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(raised) = e.downcast_ref::<RaisedException>() {
            return TemplateError::Raised(raised.0.clone());
        }
        source = e.source();
    }
    TemplateError::Render(err)
}

// ---------------------------------------------------------------------------------------------
// tojson: Python's json.dumps as Hugging Face calls it (ensure_ascii=False, sort_keys=False,
// ", " and ": " separators). minijinja's own tojson escapes <, >, & and ' for HTML and prints
// compact separators, which would change the prompt.

struct JsonStyle {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<String, Error> {
    let indent = match kwargs.get::<Option<Value>>("indent")?.or(indent) {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(match v.kind() {
            ValueKind::Number => " ".repeat(usize::try_from(v).unwrap_or(0)),
            _ => v.to_string(),
        }),
    };
    let (item_sep, key_sep) = match kwargs.get::<Option<Vec<String>>>("separators")? {
        Some(seps) if seps.len() == 2 => (seps[0].clone(), seps[1].clone()),
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be a pair (item, key)",
            ))
        }
        // Python drops the space after ',' when indenting (it would trail each line).
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let style = JsonStyle {
        indent,
        item_sep,
        key_sep,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&mut out, value, &style, 0)?;
    Ok(out)
}

fn write_json(out: &mut String, v: &Value, style: &JsonStyle, depth: usize) -> Result<(), Error> {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number if v.is_integer() => {
            let _ = write!(out, "{v}");
        }
        ValueKind::Number => {
            out.push_str(&python_float(f64::try_from(v.clone()).unwrap_or(f64::NAN)));
        }
        ValueKind::String => {
            write_json_str(out, v.as_str().unwrap_or_default(), style.ensure_ascii)
        }
        ValueKind::Bytes => write_json_str(
            out,
            &String::from_utf8_lossy(v.as_bytes().unwrap_or_default()),
            style.ensure_ascii,
        ),
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if style.sort_keys {
                keys.sort();
            }
            write_container(out, '{', '}', keys.len(), style, depth, |out, i| {
                let key = &keys[i];
                match key.as_str() {
                    Some(s) => write_json_str(out, s, style.ensure_ascii),
                    // Python turns non-string keys into their JSON text, quoted.
                    None => {
                        let mut k = String::new();
                        write_json(&mut k, key, style, depth + 1)?;
                        write_json_str(out, &k, style.ensure_ascii);
                    }
                }
                out.push_str(&style.key_sep);
                write_json(out, &v.get_item(key)?, style, depth + 1)
            })?;
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            write_container(out, '[', ']', items.len(), style, depth, |out, i| {
                write_json(out, &items[i], style, depth + 1)
            })?;
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialize a {} value", v.kind()),
            ))
        }
    }
    Ok(())
}

fn write_container(
    out: &mut String,
    open: char,
    close: char,
    n: usize,
    style: &JsonStyle,
    depth: usize,
    mut item: impl FnMut(&mut String, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if n == 0 {
        out.push(close);
        return Ok(());
    }
    for i in 0..n {
        if i > 0 {
            out.push_str(&style.item_sep);
        }
        if let Some(ind) = &style.indent {
            out.push('\n');
            out.push_str(&ind.repeat(depth + 1));
        }
        item(out, i)?;
    }
    if let Some(ind) = &style.indent {
        out.push('\n');
        out.push_str(&ind.repeat(depth));
    }
    out.push(close);
    Ok(())
}

fn write_json_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: shortest round-trip digits, `.0` on integral values, exponent form
/// (`1e-05`, `1e+16`) outside [1e-4, 1e16), JSON's spellings of the non-finite values.
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let s = format!("{f}");
    if s.contains('.') {
        s
    } else {
        s + ".0"
    }
}

// ---------------------------------------------------------------------------------------------
// strftime_now: Python's datetime.now().strftime(fmt). This prints UTC (Hugging Face and
// llama.cpp print local time): a server's prompt should not depend on the host's time zone,
// and UTC needs no time-zone database. Templates use it for the date in the system prompt.

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    // Howard Hinnant's `civil_from_days`: shift to eras of 400 years starting in March.
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

/// Formats Unix time `t` (UTC) with the C / Python `strftime` directives templates use.
/// Unknown directives are copied through, as glibc does.
pub fn strftime_utc(fmt: &str, t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let wd = (days + 3).rem_euclid(7) as usize;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum[mo as usize - 1] + d + u32::from(mo > 2 && is_leap(y));
    let h12 = if h % 12 == 0 { 12 } else { h % 12 };

    let mut out = String::with_capacity(fmt.len() * 2);
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(spec) = chars.next() else {
            out.push('%');
            break;
        };
        let _ = match spec {
            'Y' => write!(out, "{y}"),
            'y' => write!(out, "{:02}", y.rem_euclid(100)),
            'C' => write!(out, "{:02}", y.div_euclid(100)),
            'm' => write!(out, "{mo:02}"),
            'd' => write!(out, "{d:02}"),
            'e' => write!(out, "{d:2}"),
            'j' => write!(out, "{yday:03}"),
            'H' => write!(out, "{h:02}"),
            'I' => write!(out, "{h12:02}"),
            'M' => write!(out, "{mi:02}"),
            'S' => write!(out, "{s:02}"),
            'p' => write!(out, "{}", if h < 12 { "AM" } else { "PM" }),
            'B' => write!(out, "{}", MONTHS[mo as usize - 1]),
            'b' | 'h' => write!(out, "{}", &MONTHS[mo as usize - 1][..3]),
            'A' => write!(out, "{}", WEEKDAYS[wd]),
            'a' => write!(out, "{}", &WEEKDAYS[wd][..3]),
            'u' => write!(out, "{}", wd + 1),
            'w' => write!(out, "{}", (wd + 1) % 7),
            'F' => write!(out, "{y}-{mo:02}-{d:02}"),
            'D' => write!(out, "{mo:02}/{d:02}/{:02}", y.rem_euclid(100)),
            'T' => write!(out, "{h:02}:{mi:02}:{s:02}"),
            'R' => write!(out, "{h:02}:{mi:02}"),
            's' => write!(out, "{t}"),
            'Z' => write!(out, "UTC"),
            'z' => write!(out, "+0000"),
            'n' => writeln!(out),
            't' => write!(out, "\t"),
            '%' => write!(out, "%"),
            other => write!(out, "%{other}"),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_known_dates() {
        // 2024-07-26 00:00:00 UTC, a Friday (Llama 3.1's default date).
        let t = 1_721_952_000;
        assert_eq!(strftime_utc("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(
            strftime_utc("%A %B %e %j %F %T %%", t),
            "Friday July 26 208 2024-07-26 00:00:00 %"
        );
        // 2000-02-29 13:05:09, leap day.
        let t = 951_829_509;
        assert_eq!(
            strftime_utc("%Y-%m-%d %H:%M:%S %I%p %a %j %y", t),
            "2000-02-29 13:05:09 01PM Tue 060 00"
        );
        assert_eq!(strftime_utc("%F", 0), "1970-01-01");
        assert_eq!(strftime_utc("%F %T", -1), "1969-12-31 23:59:59");
        assert_eq!(strftime_utc("%Q %", 0), "%Q %");
    }

    #[test]
    fn python_float_repr() {
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(0.1), "0.1");
        assert_eq!(python_float(-2.5), "-2.5");
        assert_eq!(python_float(1e-5), "1e-05");
        assert_eq!(python_float(1.5e16), "1.5e+16");
        assert_eq!(python_float(123456789.0), "123456789.0");
        assert_eq!(python_float(0.0), "0.0");
    }
}
