//! `tojson`: Python's `json.dumps` as Hugging Face calls it (`ensure_ascii=False`,
//! `sort_keys=False`, `", "` and `": "` separators). minijinja's own tojson escapes `<`, `>`, `&`
//! and `'` for HTML and prints compact separators, which would change the prompt.
//!
//! The text is written into a [`Bounded`] buffer and nesting is counted, so neither an
//! `indent=10**12` nor a value nested a million deep can exhaust memory or the stack.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Error, ErrorKind, State};

use super::limits::{Bounded, Budget, Limit, MAX_DEPTH, MAX_VALUE};

struct JsonStyle {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

/// The `tojson` filter: `value|tojson(indent=None, separators=None, sort_keys=False,
/// ensure_ascii=False)`.
pub(super) fn tojson(
    state: &State,
    value: &Value,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let budget = Budget::of(state)?;
    let cap = budget.built_left().min(MAX_VALUE);
    let too_big = || budget.exceeded(Limit::ValueSize);
    let indent = match kwargs.get::<Option<Value>>("indent")?.or(indent) {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(match v.kind() {
            ValueKind::Number => {
                let width = usize::try_from(v).unwrap_or(0);
                if width > cap {
                    return Err(too_big());
                }
                " ".repeat(width)
            }
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
    let mut out = Bounded::new(cap);
    match write_json(&mut out, value, &style, 0) {
        Ok(()) => Ok(Value::from(out.into_string())),
        Err(Stop::Full) => Err(too_big()),
        Err(Stop::Deep) => Err(budget.exceeded(Limit::Depth)),
        Err(Stop::Error(e)) => Err(e),
    }
}

/// Why writing stopped.
enum Stop {
    /// The text outgrew its cap.
    Full,
    /// The value nests deeper than [`MAX_DEPTH`].
    Deep,
    Error(Error),
}

impl From<std::fmt::Error> for Stop {
    fn from(_: std::fmt::Error) -> Stop {
        Stop::Full
    }
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Error(e)
    }
}

fn write_json(out: &mut Bounded, v: &Value, style: &JsonStyle, depth: usize) -> Result<(), Stop> {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.write_str("null")?,
        ValueKind::Bool => out.write_str(if v.is_true() { "true" } else { "false" })?,
        ValueKind::Number if v.is_integer() => write!(out, "{v}")?,
        ValueKind::Number => {
            out.write_str(&python_float(f64::try_from(v.clone()).unwrap_or(f64::NAN)))?
        }
        ValueKind::String => {
            write_json_str(out, v.as_str().unwrap_or_default(), style.ensure_ascii)?
        }
        ValueKind::Bytes => write_json_str(
            out,
            &String::from_utf8_lossy(v.as_bytes().unwrap_or_default()),
            style.ensure_ascii,
        )?,
        ValueKind::Map => {
            if depth >= MAX_DEPTH {
                return Err(Stop::Deep);
            }
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if style.sort_keys {
                keys.sort();
            }
            write_container(out, '{', '}', keys.len(), style, depth, |out, i| {
                let key = &keys[i];
                match key.as_str() {
                    Some(s) => write_json_str(out, s, style.ensure_ascii)?,
                    // Python turns non-string keys into their JSON text, quoted.
                    None => {
                        let mut k = Bounded::new(out.left());
                        write_json(&mut k, key, style, depth + 1)?;
                        write_json_str(out, k.as_str(), style.ensure_ascii)?;
                    }
                }
                out.write_str(&style.key_sep)?;
                write_json(out, &v.get_item(key)?, style, depth + 1)
            })?;
        }
        ValueKind::Seq | ValueKind::Iterable => {
            if depth >= MAX_DEPTH {
                return Err(Stop::Deep);
            }
            let items: Vec<Value> = v.try_iter()?.collect();
            write_container(out, '[', ']', items.len(), style, depth, |out, i| {
                write_json(out, &items[i], style, depth + 1)
            })?;
        }
        _ => {
            return Err(Stop::Error(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialize a {} value", v.kind()),
            )))
        }
    }
    Ok(())
}

fn write_container(
    out: &mut Bounded,
    open: char,
    close: char,
    n: usize,
    style: &JsonStyle,
    depth: usize,
    mut item: impl FnMut(&mut Bounded, usize) -> Result<(), Stop>,
) -> Result<(), Stop> {
    out.write_char(open)?;
    if n == 0 {
        out.write_char(close)?;
        return Ok(());
    }
    for i in 0..n {
        if i > 0 {
            out.write_str(&style.item_sep)?;
        }
        if let Some(ind) = &style.indent {
            out.write_char('\n')?;
            for _ in 0..=depth {
                out.write_str(ind)?;
            }
        }
        item(out, i)?;
    }
    if let Some(ind) = &style.indent {
        out.write_char('\n')?;
        for _ in 0..depth {
            out.write_str(ind)?;
        }
    }
    out.write_char(close)?;
    Ok(())
}

fn write_json_str(out: &mut Bounded, s: &str, ensure_ascii: bool) -> std::fmt::Result {
    out.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            '\u{8}' => out.write_str("\\b")?,
            '\u{c}' => out.write_str("\\f")?,
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    write!(out, "\\u{unit:04x}")?;
                }
            }
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
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

#[cfg(test)]
mod tests {
    use super::*;

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
