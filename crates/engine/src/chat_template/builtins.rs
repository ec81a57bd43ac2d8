//! minijinja's filters, tests and Python methods, each behind a guard: the guard charges the
//! work of reading its arguments, refuses a call whose result would be too large before the
//! work is done (`replace`, `join`, `indent`, `batch`, `slice`, `format`, `string`, `pprint`,
//! `split`, ...), and admits the result (measured, charged, lazy views collected) with
//! [`Budget::admit`]. Filters called by name (`map('indent', ...)`, `select('eq', ...)`) go
//! through the same guards.

use std::borrow::Cow;

use minijinja::value::{Rest, Value, ValueKind};
use minijinja::{filters, tests, AutoEscape, Environment, Error, State};

use super::json::tojson;
use super::limits::{self, display_len, Budget, Limit, ITEM_WORK, MAX_VALUE, SLOT};

/// Registers the guarded filters and tests, and the method callback.
pub(super) fn register(env: &mut Environment<'static>) {
    env.set_unknown_method_callback(method);
    for (name, f) in builtin_filters() {
        env.add_filter(name, move |state: &State, args: Rest<Value>| {
            let budget = Budget::of(state)?;
            budget.charge_args(&args)?;
            if !NO_WALK_FILTERS.contains(&name) {
                if let Some(x) = args.first() {
                    budget.touch(x)?;
                }
            }
            check_filter(&budget, state, name, &args)?;
            budget.admit(f.call(state, &args)?)
        });
    }
    for (name, f) in builtin_tests() {
        let compares = COMPARING_TESTS.contains(&name);
        env.add_test(name, move |state: &State, args: Rest<Value>| {
            let budget = Budget::of(state)?;
            budget.charge_args(&args)?;
            if compares {
                for a in args.iter() {
                    budget.touch(a)?;
                }
            }
            Ok::<bool, Error>(f.call(state, &args)?.is_true())
        });
    }
}

/// minijinja's built-in filters (2.24, features `builtins`, no `json` or `urlencode`), with
/// our Python-style `tojson`.
fn builtin_filters() -> Vec<(&'static str, Value)> {
    vec![
        ("safe", Value::from_function(filters::safe)),
        ("escape", Value::from_function(filters::escape)),
        ("e", Value::from_function(filters::escape)),
        ("lower", Value::from_function(filters::lower)),
        ("upper", Value::from_function(filters::upper)),
        ("title", Value::from_function(filters::title)),
        ("capitalize", Value::from_function(filters::capitalize)),
        ("replace", Value::from_function(filters::replace)),
        ("length", Value::from_function(filters::length)),
        ("count", Value::from_function(filters::length)),
        ("dictsort", Value::from_function(filters::dictsort)),
        ("items", Value::from_function(filters::items)),
        ("reverse", Value::from_function(filters::reverse)),
        ("trim", Value::from_function(filters::trim)),
        ("join", Value::from_function(filters::join)),
        ("split", Value::from_function(filters::split)),
        ("lines", Value::from_function(filters::lines)),
        ("default", Value::from_function(filters::default)),
        ("d", Value::from_function(filters::default)),
        ("round", Value::from_function(filters::round)),
        ("abs", Value::from_function(filters::abs)),
        ("int", Value::from_function(filters::int)),
        ("float", Value::from_function(filters::float)),
        ("attr", Value::from_function(filters::attr)),
        ("first", Value::from_function(filters::first)),
        ("last", Value::from_function(filters::last)),
        ("min", Value::from_function(filters::min)),
        ("max", Value::from_function(filters::max)),
        ("sort", Value::from_function(filters::sort)),
        ("list", Value::from_function(filters::list)),
        ("string", Value::from_function(filters::string)),
        ("bool", Value::from_function(filters::bool)),
        ("batch", Value::from_function(filters::batch)),
        ("slice", Value::from_function(filters::slice)),
        ("sum", Value::from_function(filters::sum)),
        ("indent", Value::from_function(filters::indent)),
        ("select", Value::from_function(filters::select)),
        ("reject", Value::from_function(filters::reject)),
        ("selectattr", Value::from_function(filters::selectattr)),
        ("rejectattr", Value::from_function(filters::rejectattr)),
        ("map", Value::from_function(filters::map)),
        ("groupby", Value::from_function(filters::groupby)),
        ("unique", Value::from_function(filters::unique)),
        ("chain", Value::from_function(filters::chain)),
        ("zip", Value::from_function(filters::zip)),
        ("pprint", Value::from_function(filters::pprint)),
        ("format", Value::from_function(filters::format)),
        ("tojson", Value::from_function(tojson)),
    ]
}

/// minijinja's built-in tests (2.24).
fn builtin_tests() -> Vec<(&'static str, Value)> {
    vec![
        ("undefined", Value::from_function(tests::is_undefined)),
        ("defined", Value::from_function(tests::is_defined)),
        ("none", Value::from_function(tests::is_none)),
        ("safe", Value::from_function(tests::is_safe)),
        ("escaped", Value::from_function(tests::is_safe)),
        ("boolean", Value::from_function(tests::is_boolean)),
        ("odd", Value::from_function(tests::is_odd)),
        ("even", Value::from_function(tests::is_even)),
        ("divisibleby", Value::from_function(tests::is_divisibleby)),
        ("number", Value::from_function(tests::is_number)),
        ("integer", Value::from_function(tests::is_integer)),
        ("int", Value::from_function(tests::is_integer)),
        ("float", Value::from_function(tests::is_float)),
        ("string", Value::from_function(tests::is_string)),
        ("sequence", Value::from_function(tests::is_sequence)),
        ("iterable", Value::from_function(tests::is_iterable)),
        ("mapping", Value::from_function(tests::is_mapping)),
        ("startingwith", Value::from_function(tests::is_startingwith)),
        ("endingwith", Value::from_function(tests::is_endingwith)),
        ("lower", Value::from_function(tests::is_lower)),
        ("upper", Value::from_function(tests::is_upper)),
        ("sameas", Value::from_function(tests::is_sameas)),
        ("eq", Value::from_function(tests::is_eq)),
        ("equalto", Value::from_function(tests::is_eq)),
        ("==", Value::from_function(tests::is_eq)),
        ("ne", Value::from_function(tests::is_ne)),
        ("!=", Value::from_function(tests::is_ne)),
        ("lt", Value::from_function(tests::is_lt)),
        ("lessthan", Value::from_function(tests::is_lt)),
        ("<", Value::from_function(tests::is_lt)),
        ("le", Value::from_function(tests::is_le)),
        ("<=", Value::from_function(tests::is_le)),
        ("gt", Value::from_function(tests::is_gt)),
        ("greaterthan", Value::from_function(tests::is_gt)),
        (">", Value::from_function(tests::is_gt)),
        ("ge", Value::from_function(tests::is_ge)),
        (">=", Value::from_function(tests::is_ge)),
        ("in", Value::from_function(tests::is_in)),
        ("true", Value::from_function(tests::is_true)),
        ("false", Value::from_function(tests::is_false)),
        ("filter", Value::from_function(tests::is_filter)),
        ("test", Value::from_function(tests::is_test)),
    ]
}

/// Filters that read at most one item of their input, or a string once: the others walk
/// it (print, copy, sort, iterate it) and charge that first.
const NO_WALK_FILTERS: &[&str] = &[
    "length", "count", "first", "default", "d", "attr", "bool", "abs", "round", "int", "float",
];

/// Tests that compare or scan their arguments: they charge the bytes they read.
const COMPARING_TESTS: &[&str] = &[
    "startingwith",
    "endingwith",
    "lower",
    "upper",
    "eq",
    "equalto",
    "==",
    "ne",
    "!=",
    "lt",
    "lessthan",
    "<",
    "le",
    "<=",
    "gt",
    "greaterthan",
    ">",
    "ge",
    ">=",
    "in",
];

// ---------------------------------------------------------------------------------------------
// Sizes of results, computed before the work.

/// The positional arguments and the keyword arguments (the last argument, if it is them).
fn split_kwargs(args: &[Value]) -> (&[Value], Option<&Value>) {
    match args.split_last() {
        Some((last, pos)) if last.is_kwargs() => (pos, Some(last)),
        _ => (args, None),
    }
}

fn kwarg(kwargs: Option<&Value>, name: &str) -> Option<Value> {
    kwargs
        .and_then(|k| k.get_item(&Value::from(name)).ok())
        .filter(|v| !v.is_undefined())
}

/// The text a filter taking a string sees: the string, or what the value prints.
fn text<'v>(budget: &Budget, v: &'v Value) -> Result<Cow<'v, str>, Error> {
    match v.as_str() {
        Some(s) => Ok(Cow::Borrowed(s)),
        None => {
            budget.check_size(display_len(v, MAX_VALUE))?;
            Ok(Cow::Owned(v.to_string()))
        }
    }
}

/// Bytes of `s.replace(from, to)` (at most `count` replacements).
fn replaced_len(s: &str, from: &str, to: &str, count: Option<usize>) -> Option<usize> {
    let n = if from.is_empty() {
        s.chars().count() + 1
    } else {
        s.matches(from).count()
    };
    let n = count.map_or(n, |c| n.min(c));
    (s.len() - n * from.len()).checked_add(n.checked_mul(to.len())?)
}

/// Bytes of the items of `v` printed and joined by `sep`, and the items read; `(0, 0)`
/// when `v` cannot be iterated (the filter reports that).
fn joined_len(v: &Value, sep: &str) -> (Option<usize>, usize) {
    if let Some(s) = v.as_str() {
        let n = s.chars().count();
        let len = n
            .saturating_sub(1)
            .checked_mul(sep.len())
            .and_then(|seps| s.len().checked_add(seps));
        return (len, n);
    }
    let Ok(iter) = v.try_iter() else {
        return (Some(0), 0);
    };
    let mut total = 0usize;
    let mut items = 0usize;
    for item in iter {
        items += 1;
        let room = MAX_VALUE.saturating_sub(total);
        let len = match display_len(&item, room) {
            Some(len) if items == 1 => Some(len),
            Some(len) => len.checked_add(sep.len()),
            None => None,
        };
        match len.and_then(|len| total.checked_add(len)) {
            Some(t) if t <= MAX_VALUE => total = t,
            _ => return (None, items),
        }
    }
    (Some(total), items)
}

/// Bytes of `s` with its case changed: one Unicode character can become three.
fn recased_len(s: &str) -> Option<usize> {
    if s.is_ascii() {
        Some(s.len())
    } else {
        s.len().checked_mul(3)
    }
}

/// Pieces of `s.split(sep, maxsplit)`, Python's and minijinja's way.
fn split_pieces(s: &str, sep: Option<&str>, maxsplit: Option<&Value>) -> usize {
    let pieces = match sep {
        None => s.split_whitespace().count(),
        Some("") => s.chars().count() + 2,
        Some(sep) => s.matches(sep).count() + 1,
    };
    match maxsplit.and_then(|m| i64::try_from(m.clone()).ok()) {
        Some(m) if m >= 0 => pieces.min(usize::try_from(m).unwrap_or(usize::MAX).saturating_add(1)),
        _ => pieces,
    }
}

/// A list of `pieces` new strings copied out of `s`.
fn pieces_size(s: &str, pieces: usize) -> Option<usize> {
    pieces
        .checked_add(1)?
        .checked_mul(SLOT)?
        .checked_add(s.len())
}

/// Bound on `fmt.format(args)` / `fmt|format(args)`: each `{` or `%` field prints at most the
/// widest argument padded to the largest number in the format or the arguments (a width or a
/// precision), plus a float's digits.
fn formatted_len(fmt: &str, args: &[Value]) -> Option<usize> {
    let fields = fmt.matches(['{', '%']).count();
    let mut widest = 0usize;
    let mut largest = 0usize;
    for a in args {
        widest = widest.max(display_len(a, MAX_VALUE)?);
        if let Some(n) = a.as_usize() {
            largest = largest.max(n);
        }
    }
    let mut number = 0usize;
    for c in fmt.chars() {
        match c.to_digit(10) {
            Some(d) => {
                number = number.saturating_mul(10).saturating_add(d as usize);
                largest = largest.max(number);
            }
            None => number = 0,
        }
    }
    let field = widest.checked_add(largest)?.checked_add(512)?;
    fmt.len().checked_add(fields.checked_mul(field)?)
}

/// Items of `v`, counted (strings count their characters).
fn item_count(v: &Value) -> Option<usize> {
    match v.as_str() {
        Some(s) => Some(s.chars().count()),
        None => v.len().or_else(|| {
            v.try_iter()
                .ok()
                .map(|it| it.take(MAX_VALUE / SLOT + 1).count())
        }),
    }
}

/// Refuses a filter call whose result would be too large, and charges the work of those
/// that sort or scan.
fn check_filter(budget: &Budget, state: &State, name: &str, args: &[Value]) -> Result<(), Error> {
    let (pos, kwargs) = split_kwargs(args);
    let undefined = Value::UNDEFINED;
    let x = pos.first().unwrap_or(&undefined);
    let arg = |i: usize| pos.get(i).filter(|v| !v.is_none() && !v.is_undefined());
    let escaping = !matches!(state.auto_escape(), AutoEscape::None);
    let escaped = |n: Option<usize>| if escaping { n?.checked_mul(6) } else { n };
    match name {
        "replace" => {
            let s = text(budget, x)?;
            budget.charge_work(s.len())?;
            let from = arg(1)
                .map(|v| text(budget, v))
                .transpose()?
                .unwrap_or_default();
            let to = arg(2)
                .map(|v| text(budget, v))
                .transpose()?
                .unwrap_or_default();
            budget.check_size(escaped(replaced_len(&s, &from, &to, None)))
        }
        "join" => {
            let sep = arg(1)
                .map(|v| text(budget, v))
                .transpose()?
                .unwrap_or_default();
            let (len, items) = joined_len(x, &sep);
            budget.charge_work(items.saturating_mul(ITEM_WORK))?;
            budget.will_build(escaped(len))
        }
        "indent" => {
            let s = text(budget, x)?;
            let width = arg(1)
                .cloned()
                .or_else(|| kwarg(kwargs, "width"))
                .and_then(|w| w.as_usize())
                .unwrap_or(4);
            let lines = s.split('\n').count();
            budget.check_size(
                lines
                    .checked_mul(width.saturating_add(1))
                    .and_then(|n| n.checked_add(s.len())),
            )
        }
        "batch" | "slice" => {
            let Some(count) = arg(1).and_then(Value::as_usize) else {
                return Ok(());
            };
            let n = item_count(x).unwrap_or(0);
            let fill = if arg(2).is_some() { count } else { 0 };
            // Both reserve `count` slots up front; `slice` also makes `count` lists.
            let lists = if name == "batch" {
                n / count.max(1) + 1
            } else {
                count
            };
            let slots = [count, n, lists, fill]
                .iter()
                .try_fold(0usize, |acc, x| acc.checked_add(*x));
            budget.check_size(slots.and_then(|s| s.checked_mul(SLOT)))
        }
        "list" => budget.check_size(item_count(x).and_then(|n| n.checked_mul(SLOT))),
        "split" => {
            let Some(s) = x.as_str() else {
                return Ok(());
            };
            budget.charge_work(s.len())?;
            let pieces = split_pieces(s, arg(1).and_then(Value::as_str), arg(2));
            budget.check_size(pieces_size(s, pieces))
        }
        "lines" => {
            let Some(s) = x.as_str() else {
                return Ok(());
            };
            budget.charge_work(s.len())?;
            budget.check_size(pieces_size(s, s.lines().count()))
        }
        "string" | "safe" | "trim" => budget.will_build(escaped(display_len(x, MAX_VALUE))),
        "reverse" => match x.as_str() {
            Some(s) => budget.check_size(Some(s.len())),
            None => Ok(()),
        },
        "escape" | "e" => {
            budget.will_build(display_len(x, MAX_VALUE).and_then(|n| n.checked_mul(6)))
        }
        "lower" | "upper" | "title" | "capitalize" => {
            let s = text(budget, x)?;
            budget.check_size(recased_len(&s))
        }
        "pprint" => budget.will_build(limits::debug_len(x, MAX_VALUE)),
        "format" => {
            let Some(fmt) = x.as_str() else {
                return Ok(());
            };
            budget.will_build(formatted_len(fmt, args.get(1..).unwrap_or_default()))
        }
        // Sorting and hashing read every item, comparisons about log2(n) times.
        "sort" | "dictsort" | "groupby" | "unique" | "min" | "max" | "sum" => {
            let size =
                limits::measure(x, budget.work_left()).map_err(|_| budget.exceeded(Limit::Work))?;
            let rounds = (usize::BITS - size.slots.leading_zeros()) as usize;
            budget.charge_work(size.work().saturating_mul(rounds.max(1)))
        }
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Methods: Python's `str` and `dict` methods from minijinja-contrib's pycompat, guarded.

/// Work charged a byte of a string a search method goes through, on top of the byte itself.
const MATCH_WORK: usize = 32;

fn method(state: &State, value: &Value, name: &str, args: &[Value]) -> Result<Value, Error> {
    let budget = Budget::of(state)?;
    check_method(&budget, value, name, args)?;
    let rv = minijinja_contrib::pycompat::unknown_method_callback(state, value, name, args)?;
    budget.admit(rv)
}

fn check_method(budget: &Budget, value: &Value, name: &str, args: &[Value]) -> Result<(), Error> {
    // Every method reads its receiver once (`list.count` compares every item) and may
    // compare or hash its arguments.
    budget.charge_args(std::slice::from_ref(value))?;
    if value.kind() == ValueKind::Seq && name == "count" {
        budget.touch(value)?;
    }
    for a in args {
        budget.touch(a)?;
    }
    let Some(s) = value.as_str() else {
        return Ok(());
    };
    // A search can match at every byte, and each match costs much more than scanning a byte
    // (`'y' * 100000).count('y')` a million times took 20 s at one byte charged a byte).
    if matches!(
        name,
        "count"
            | "find"
            | "rfind"
            | "index"
            | "rindex"
            | "replace"
            | "split"
            | "rsplit"
            | "splitlines"
    ) {
        budget.charge_work(s.len().saturating_mul(MATCH_WORK))?;
    }
    let (pos, _) = split_kwargs(args);
    let arg = |i: usize| pos.get(i).filter(|v| !v.is_none() && !v.is_undefined());
    match name {
        "upper" | "lower" | "title" | "capitalize" => budget.check_size(recased_len(s)),
        "replace" => {
            let (Some(from), Some(to)) = (
                arg(0).and_then(Value::as_str),
                arg(1).and_then(Value::as_str),
            ) else {
                return Ok(());
            };
            let count = arg(2)
                .and_then(|c| i64::try_from(c.clone()).ok())
                .filter(|c| *c >= 0)
                .map(|c| usize::try_from(c).unwrap_or(usize::MAX));
            budget.check_size(replaced_len(s, from, to, count))
        }
        "split" => {
            let pieces = split_pieces(s, arg(0).and_then(Value::as_str), arg(1));
            budget.check_size(pieces_size(s, pieces))
        }
        "splitlines" => budget.check_size(pieces_size(s, s.lines().count())),
        "format" => budget.check_size(formatted_len(s, args)),
        "join" => {
            let (len, items) = joined_len(arg(0).unwrap_or(&Value::UNDEFINED), s);
            budget.charge_work(items.saturating_mul(ITEM_WORK))?;
            budget.will_build(len)
        }
        _ => Ok(()),
    }
}
