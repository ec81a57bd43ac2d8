//! The guards the rewritten template calls (`rewrite.rs`): `+`, `~` and `*`, which check the
//! size of their result before building it, and the guards of comparisons, literals, slices,
//! namespace assignments and printing; and the global functions. With the filters, tests and
//! methods (`builtins.rs`) they are all a template can call: they are registered in an
//! otherwise empty environment, so an operation nobody guarded does not exist.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{ObjectRepr, Rest, Value, ValueKind};
use minijinja::{functions, Environment, Error, ErrorKind, State};

use super::builtins;
use super::limits::{self, class, Bounded, Budget, Class, Limit, Size, MAX_DEPTH, MAX_VALUE, SLOT};
use super::strftime::strftime_utc;

/// Registers the guards, the filters, tests and functions of a Hugging Face environment, and
/// the formatter and method callback.
pub(super) fn register(env: &mut Environment<'static>) {
    env.set_formatter(limits::format);

    env.add_function("~add", add);
    env.add_function("~concat", concat);
    env.add_function("~mul", mul);
    env.add_function("~touch", touch);
    env.add_function("~indexed", indexed);
    env.add_function("~admit", admit);
    env.add_function("~slice", slice);
    env.add_function("~store", store);
    env.add_filter("~store", store);
    env.add_function("~out", limits::out);
    env.add_function("~captured", limits::captured);
    env.add_filter("~out", limits::out);
    builtins::register(env);

    // Jinja2's globals less `lipsum`, `cycler` and `joiner` (minijinja has none of them) and
    // minijinja's `debug` (Hugging Face has no debug extension; it prints the whole context).
    for (name, f) in [
        ("range", Value::from_function(functions::range)),
        ("dict", Value::from_function(functions::dict)),
    ] {
        env.add_function(name, move |state: &State, args: Rest<Value>| {
            Budget::of(state)?.admit(f.call(state, &args)?)
        });
    }
    env.add_function("namespace", namespace);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
}

// ---------------------------------------------------------------------------------------------
// Operators. `+`, `~` and `*` are computed here rather than by minijinja (whose versions are
// private), with its semantics: the same results, and lists where it builds lazy views.

fn is_seq(v: &Value) -> bool {
    matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable)
}

/// The items of a list or iterable, refusing more than a value may hold.
fn items(budget: &Budget, v: &Value) -> Result<Vec<Value>, Error> {
    let mut items = Vec::new();
    for item in v.try_iter()? {
        if (items.len() + 1) * SLOT > MAX_VALUE {
            return Err(budget.exceeded(Limit::ValueSize));
        }
        items.push(item);
    }
    Ok(items)
}

/// `a + b`: numbers, strings, or lists.
fn add(state: &State, a: Value, b: Value) -> Result<Value, Error> {
    let budget = Budget::of(state)?;
    if is_seq(&a) && is_seq(&b) {
        let mut joined = items(&budget, &a)?;
        let rest = items(&budget, &b)?;
        budget.check_size((joined.len() + rest.len()).checked_mul(SLOT))?;
        joined.extend(rest);
        return budget.admit_outer(Value::from(joined));
    }
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        budget.check_size(x.len().checked_add(y.len()))?;
        return budget.admit(Value::from([x, y].concat()));
    }
    arith(&a, &b, "+", i128::checked_add, |x, y| x + y)
}

/// `a ~ b`: both printed, one after the other.
fn concat(state: &State, a: Value, b: Value) -> Result<Value, Error> {
    let budget = Budget::of(state)?;
    // Printing a list walks it.
    for v in [&a, &b] {
        if v.as_str().is_none() {
            budget.touch(v)?;
        }
    }
    let mut text = Bounded::new(budget.built_left().min(MAX_VALUE));
    if write!(text, "{a}{b}").is_err() {
        return Err(budget.too_big());
    }
    budget.admit(Value::from(text.into_string()))
}

/// `a * b`: numbers, a string repeated, or a list repeated.
fn mul(state: &State, a: Value, b: Value) -> Result<Value, Error> {
    let budget = Budget::of(state)?;
    if let Some((s, n)) = a
        .as_str()
        .map(|s| (s, &b))
        .or_else(|| b.as_str().map(|s| (s, &a)))
    {
        let n = n.as_usize().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                "strings can only be multiplied with integers",
            )
        })?;
        budget.check_size(s.len().checked_mul(n))?;
        return budget.admit(Value::from(s.repeat(n)));
    }
    let seq = match (a.as_object(), b.as_object()) {
        (Some(_), _) => Some((&a, &b)),
        (None, Some(_)) => Some((&b, &a)),
        (None, None) => None,
    };
    if let Some((seq, n)) = seq.filter(|(seq, _)| is_seq(seq)) {
        let n = n.as_usize().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                "sequences and iterables can only be multiplied with integers",
            )
        })?;
        let one = items(&budget, seq)?;
        if one.is_empty() {
            return Ok(Value::from(one));
        }
        let once = limits::measure(seq, MAX_VALUE)
            .map_err(|over| budget.exceeded(over.limit()))?
            .bytes;
        budget.check_size(once.checked_mul(n))?;
        let mut repeated = Vec::with_capacity(one.len() * n);
        for _ in 0..n {
            repeated.extend(one.iter().cloned());
        }
        return budget.admit_outer(Value::from(repeated));
    }
    arith(&a, &b, "*", i128::checked_mul, |x, y| x * y)
}

/// Arithmetic on numbers (and booleans) as minijinja does it: floats if either side is one,
/// otherwise 128-bit integers, narrowed back to 64 bits when they fit.
fn arith(
    a: &Value,
    b: &Value,
    op: &str,
    int: fn(i128, i128) -> Option<i128>,
    float: fn(f64, f64) -> f64,
) -> Result<Value, Error> {
    let is_float = |v: &Value| v.kind() == ValueKind::Number && !v.is_integer();
    let as_f64 = |v: &Value| match v.kind() {
        ValueKind::Bool => Some(if v.is_true() { 1.0 } else { 0.0 }),
        ValueKind::Number => f64::try_from(v.clone()).ok(),
        _ => None,
    };
    if is_float(a) || is_float(b) {
        if let (Some(x), Some(y)) = (as_f64(a), as_f64(b)) {
            return Ok(Value::from(float(x, y)));
        }
    } else if let (Ok(x), Ok(y)) = (i128::try_from(a.clone()), i128::try_from(b.clone())) {
        return match int(x, y) {
            Some(r) => Ok(i64::try_from(r).map_or(Value::from(r), Value::from)),
            None => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("unable to calculate {a} {op} {b}"),
            )),
        };
    }
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "tried to use {op} operator on unsupported types {} and {}",
            a.kind(),
            b.kind()
        ),
    ))
}

/// `~touch(x)`: an operand of a comparison or a subscript; charges the bytes it reads.
fn touch(state: &State, v: Value) -> Result<Value, Error> {
    Budget::of(state)?.touch(&v)?;
    Ok(v)
}

/// `~indexed(x)`: the value a subscript reads from. A string is indexed by characters, which
/// walks it (`s[-1]` reads all of `s`); a list or map is indexed in one step.
fn indexed(state: &State, v: Value) -> Result<Value, Error> {
    if let Some(s) = v.as_str() {
        Budget::of(state)?.charge_work(s.len())?;
    }
    Ok(v)
}

/// `~slice(x, start, stop, step)`: `x[start:stop:step]` with Python's semantics, for strings
/// (by characters) and lists; none or undefined slice to an empty list, as in minijinja. Not
/// minijinja's own: a negative step over an empty string or list panics there (`''[::-1]`,
/// `messages[::-1]` with no messages, found by fuzzing).
fn slice(state: &State, v: Value, start: Value, stop: Value, step: Value) -> Result<Value, Error> {
    let budget = Budget::of(state)?;
    let int = |x: &Value| -> Result<Option<i64>, Error> {
        if x.is_none() || x.is_undefined() {
            Ok(None)
        } else {
            i64::try_from(x.clone()).map(Some)
        }
    };
    let (start, stop, step) = (int(&start)?, int(&stop)?, int(&step)?.unwrap_or(1));
    if step == 0 {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "cannot slice by step size of 0",
        ));
    }
    budget.touch(&v)?;
    if v.is_none() || v.is_undefined() {
        return Ok(Value::from(Vec::<Value>::new()));
    }
    if let Some(s) = v.as_str() {
        let chars: Vec<char> = s.chars().collect();
        let picked: String = slice_indices(chars.len(), start, stop, step)
            .map(|i| chars[i])
            .collect();
        return budget.admit(Value::from(picked));
    }
    if !is_seq(&v) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("value of type {} cannot be sliced", v.kind()),
        ));
    }
    let all = items(&budget, &v)?;
    let picked: Vec<Value> = slice_indices(all.len(), start, stop, step)
        .map(|i| all[i].clone())
        .collect();
    budget.admit_outer(Value::from(picked))
}

/// The indices `[start:stop:step]` picks from `n` items, as Python's `slice.indices` gives them.
fn slice_indices(
    n: usize,
    start: Option<i64>,
    stop: Option<i64>,
    step: i64,
) -> impl Iterator<Item = usize> {
    let n = n as i128;
    let (step, lo) = (step as i128, if step < 0 { -1 } else { 0 });
    let hi = if step < 0 { n - 1 } else { n };
    let clamp = |v: i64| {
        let v = v as i128;
        if v < 0 {
            (v + n).max(lo)
        } else {
            v.min(hi)
        }
    };
    let first = start.map_or(if step < 0 { hi } else { lo }, clamp);
    let end = stop.map_or(if step < 0 { lo } else { hi }, clamp);
    let mut i = first;
    std::iter::from_fn(move || {
        let inside = if step > 0 { i < end } else { i > end };
        if !inside {
            return None;
        }
        let at = i as usize;
        i += step;
        Some(at)
    })
}

/// `~admit(x)`: a list or map literal, or a slice.
fn admit(state: &State, v: Value) -> Result<Value, Error> {
    Budget::of(state)?.admit_outer(v)
}

/// `~store(x)`: a value going into a namespace (or kept by `loop.changed`): plain data only
/// (strings, numbers, lists, maps, at most [`MAX_DEPTH`] deep), so no namespace can ever
/// reach itself. minijinja's lists and maps cannot change, so they are kept; anything else
/// list- or map-like is copied into them.
fn store(state: &State, v: Value) -> Result<Value, Error> {
    let budget = Budget::of(state)?;
    let mut size = Size::default();
    let plain = check_data(&v, 0, &mut size).map_err(|e| match e {
        NotData::Over(over) => budget.exceeded(over.limit()),
        NotData::Object(what) => Error::new(
            ErrorKind::InvalidOperation,
            format!("a namespace can hold only data (strings, numbers, lists, maps), not a {what}"),
        ),
    })?;
    budget.charge_work(size.work())?;
    if plain {
        return Ok(v);
    }
    budget.charge_built(size.slots * SLOT)?;
    Ok(copy_data(&v))
}

enum NotData {
    Over(limits::Over),
    Object(&'static str),
}

/// Checks that `v` is data; true when all its lists and maps are minijinja's own.
fn check_data(v: &Value, depth: usize, size: &mut Size) -> Result<bool, NotData> {
    size.slots += 1;
    size.bytes = size
        .bytes
        .saturating_add(SLOT)
        .saturating_add(v.as_str().map_or(0, str::len));
    if size.bytes > MAX_VALUE {
        return Err(NotData::Over(limits::Over::Size));
    }
    let Some(obj) = v.as_object() else {
        return Ok(true);
    };
    match class(obj) {
        Class::Namespace => return Err(NotData::Object("namespace")),
        Class::Opaque => return Err(NotData::Object("loop, macro or function")),
        Class::Data => {}
    }
    if depth >= MAX_DEPTH {
        return Err(NotData::Over(limits::Over::Depth));
    }
    let mut plain = limits::is_plain(obj);
    if obj.repr() == ObjectRepr::Map {
        for (key, value) in obj.try_iter_pairs().into_iter().flatten() {
            plain &= check_data(&key, depth + 1, size)?;
            plain &= check_data(&value, depth + 1, size)?;
        }
    } else {
        for item in obj.try_iter().into_iter().flatten() {
            plain &= check_data(&item, depth + 1, size)?;
        }
    }
    Ok(plain)
}

/// `v` with every list or map rebuilt as minijinja's own (after [`check_data`]).
fn copy_data(v: &Value) -> Value {
    match v.as_object() {
        Some(obj) if obj.repr() == ObjectRepr::Map => Value::from_iter(
            obj.try_iter_pairs()
                .into_iter()
                .flatten()
                .map(|(k, v)| (copy_data(&k), copy_data(&v))),
        ),
        Some(obj) => Value::from(
            obj.try_iter()
                .into_iter()
                .flatten()
                .map(|item| copy_data(&item))
                .collect::<Vec<_>>(),
        ),
        None => v.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Global functions.

/// `namespace(...)`: its initial attributes are stored copies, like later assignments.
fn namespace(state: &State, args: Rest<Value>) -> Result<Value, Error> {
    let copies = args
        .iter()
        .map(|a| store(state, a.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    Value::from_function(functions::namespace).call(state, &copies)
}

/// Marks an error as coming from `raise_exception`, so `render` can tell it from a bug in
/// the template.
#[derive(Debug)]
pub(super) struct RaisedException(pub String);

impl std::fmt::Display for RaisedException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg.clone()).with_source(RaisedException(msg)))
}

/// A `strftime` directive prints at most this many bytes for its two (`%s`: 20 digits).
const STRFTIME_GROWTH: usize = 11;

fn strftime_now(state: &State, fmt: String) -> Result<String, Error> {
    let budget = Budget::of(state)?;
    budget.check_size(fmt.len().checked_mul(STRFTIME_GROWTH))?;
    let now = match budget.now {
        Some(t) => t,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    };
    Ok(strftime_utc(&fmt, now))
}
