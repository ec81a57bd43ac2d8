//! What one rendering may spend, and the meters that enforce it.
//!
//! A chat template is code from a downloaded file, so rendering it is bounded four ways:
//!
//! - **steps**: minijinja's fuel counts VM instructions ([`FUEL`]);
//! - **time spent inside one step**: a step can compare, hash, scan or walk a large value,
//!   and a filter can call another once an item, so the guards charge what they touch to a
//!   work meter ([`MAX_WORK`]);
//! - **memory**: every operation that builds a value (string concatenation, a filter's
//!   result, a list literal, text captured by `{% set %}` or a macro) checks the size of its
//!   result *before* building it where that size is not bounded by its inputs, keeps each
//!   value under [`MAX_VALUE`], and charges what it built to a meter ([`MAX_BUILT`]);
//!   the text the template outputs has its own cap ([`MAX_OUTPUT`]);
//! - **nesting**: values nest at most [`MAX_DEPTH`] levels (printing, comparing and dropping
//!   recurse), and a value stored in a namespace is a copy of plain data, so no value can
//!   contain itself. Macro recursion keeps minijinja's own limit.
//!
//! [`Budget`] is the per-rendering meter, reached from the guards through the context.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use minijinja::value::{DynObject, Object, ObjectRepr, Value, ValueKind};
use minijinja::{AutoEscape, Error, ErrorKind, Output, State};

/// Bytes of template source. Real chat templates are a few KiB, the largest about 30 KiB.
pub const MAX_SOURCE: usize = 1 << 20;
/// Tokens in one `{{ }}` or `{% %}` tag (real templates use a few dozen; minijinja's
/// compiler panics on a call with 65,536 arguments).
pub const MAX_TAG_TOKENS: usize = 10_000;
/// Operators, filters, attribute and item look-ups, calls and brackets in one tag: a bound on
/// how deep its expression nests. The parser builds chains (`a + b + ...`, `x|f|g`) without
/// recursion, but compiling and dropping them recurses once a link (real templates use a few
/// dozen; 500 fit a 2 MiB stack unoptimized).
pub const MAX_TAG_OPERATORS: usize = 500;
/// VM instructions one rendering may run. Real templates need 25 to 60 a message (with the
/// guards of this module), so 1,000 messages take at most 60,000; a hostile loop stops
/// within about a second.
pub const FUEL: u64 = 10_000_000;
/// Bytes of rendered text (a 16 MiB prompt is millions of tokens).
pub const MAX_OUTPUT: usize = 16 << 20;
/// Estimated bytes of one value (string bytes plus [`SLOT`] a list item or map entry).
pub const MAX_VALUE: usize = 16 << 20;
/// Bytes of values built during one rendering, freed or not: a bound on its peak memory.
pub const MAX_BUILT: usize = 256 << 20;
/// Bytes compared, hashed, scanned or walked during one rendering, with [`CALL_WORK`] for
/// each guarded call (about a second of work).
pub const MAX_WORK: usize = 1 << 30;
/// Work charged for one call of a filter, test or method: what a call costs, in bytes
/// scanned. Filters such as `select` and `map` make one a list item without using fuel.
pub const CALL_WORK: usize = 256;
/// Work charged for each list item or map entry a walk visits (measuring, printing,
/// comparing, copying a value): a visit costs as much as scanning this many bytes.
pub const ITEM_WORK: usize = 128;
/// Levels of lists and maps inside each other (real conversations nest 4 or 5).
pub const MAX_DEPTH: usize = 32;
/// What a list item or a map entry costs, whatever it holds: one `Value`.
pub const SLOT: usize = std::mem::size_of::<Value>();

/// The limit a template exceeded; [`TemplateError::Limit`](super::TemplateError::Limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// More than [`MAX_SOURCE`] bytes of source.
    Source,
    /// A tag over [`MAX_TAG_TOKENS`] tokens or [`MAX_TAG_OPERATORS`] operators.
    Tag,
    /// More than [`FUEL`] instructions.
    Steps,
    /// More than [`MAX_WORK`] bytes compared, hashed or scanned.
    Work,
    /// More than [`MAX_OUTPUT`] bytes of output.
    Output,
    /// More than [`MAX_BUILT`] bytes of values built.
    Memory,
    /// A value over [`MAX_VALUE`] bytes.
    ValueSize,
    /// Values nested deeper than [`MAX_DEPTH`].
    Depth,
    /// minijinja's limit on nested macro calls, loops and blocks.
    Recursion,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Source => write!(
                f,
                "chat template exceeds its source size limit ({})",
                Bytes(MAX_SOURCE)
            ),
            Limit::Tag => write!(
                f,
                "chat template has a tag over its limits ({MAX_TAG_TOKENS} tokens, \
                 {MAX_TAG_OPERATORS} operators)"
            ),
            Limit::Steps => write!(f, "chat template ran too long (over {FUEL} steps)"),
            Limit::Work => write!(
                f,
                "chat template ran too long (over {} of values compared, copied or scanned)",
                Bytes(MAX_WORK)
            ),
            Limit::Output => write!(
                f,
                "chat template exceeded its output limit ({})",
                Bytes(MAX_OUTPUT)
            ),
            Limit::Memory => write!(
                f,
                "chat template exceeded its memory limit ({} of values built)",
                Bytes(MAX_BUILT)
            ),
            Limit::ValueSize => write!(
                f,
                "chat template built a value over its size limit ({})",
                Bytes(MAX_VALUE)
            ),
            Limit::Depth => write!(
                f,
                "chat template nested values deeper than its limit ({MAX_DEPTH} levels)"
            ),
            Limit::Recursion => write!(
                f,
                "chat template exceeded its recursion limit (nested macro calls and loops)"
            ),
        }
    }
}

/// A byte count in KiB, MiB or GiB.
struct Bytes(usize);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            n if n >= 1 << 30 && n % (1 << 30) == 0 => write!(f, "{} GiB", n >> 30),
            n if n >= 1 << 20 && n % (1 << 20) == 0 => write!(f, "{} MiB", n >> 20),
            n => write!(f, "{} KiB", n >> 10),
        }
    }
}

/// Context variable holding the [`Budget`]: `~` cannot start a Jinja identifier, so no
/// template can read or shadow it.
pub(super) const BUDGET_VAR: &str = "~budget";

/// The meters of one rendering, and the clock `strftime_now` reads.
#[derive(Debug)]
pub(super) struct Budget {
    built: AtomicUsize,
    work: AtomicUsize,
    output: AtomicUsize,
    /// The first limit exceeded: the error the rendering reports, whatever minijinja
    /// wrapped it in.
    hit: Mutex<Option<Limit>>,
    /// Unix seconds for `strftime_now`; `None` reads the system clock.
    pub now: Option<i64>,
}

impl Object for Budget {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }
}

impl Budget {
    pub fn new(now: Option<i64>) -> Budget {
        Budget {
            built: AtomicUsize::new(0),
            work: AtomicUsize::new(0),
            output: AtomicUsize::new(0),
            hit: Mutex::new(None),
            now,
        }
    }

    /// The budget of the rendering `state` belongs to.
    pub fn of(state: &State) -> Result<Arc<Budget>, Error> {
        state
            .lookup(BUDGET_VAR)
            .and_then(|v| v.downcast_object::<Budget>())
            .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "rendering has no budget"))
    }

    /// The first limit exceeded, if any.
    pub fn hit(&self) -> Option<Limit> {
        *self.hit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `limit` as exceeded and returns the error that stops the rendering.
    pub fn exceeded(&self, limit: Limit) -> Error {
        self.hit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(limit);
        Error::new(ErrorKind::InvalidOperation, limit.to_string())
    }

    fn charge(&self, meter: &AtomicUsize, n: usize, max: usize, limit: Limit) -> Result<(), Error> {
        let before = meter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                Some(m.saturating_add(n))
            })
            .unwrap_or(usize::MAX);
        if before.saturating_add(n) > max {
            Err(self.exceeded(limit))
        } else {
            Ok(())
        }
    }

    pub fn charge_built(&self, n: usize) -> Result<(), Error> {
        self.charge(&self.built, n, MAX_BUILT, Limit::Memory)
    }

    pub fn charge_work(&self, n: usize) -> Result<(), Error> {
        self.charge(&self.work, n, MAX_WORK, Limit::Work)
    }

    pub fn charge_output(&self, n: usize) -> Result<(), Error> {
        self.charge(&self.output, n, MAX_OUTPUT, Limit::Output)
    }

    pub fn built_left(&self) -> usize {
        MAX_BUILT.saturating_sub(self.built.load(Ordering::Relaxed))
    }

    pub fn work_left(&self) -> usize {
        MAX_WORK.saturating_sub(self.work.load(Ordering::Relaxed))
    }

    fn output_left(&self) -> usize {
        MAX_OUTPUT.saturating_sub(self.output.load(Ordering::Relaxed))
    }

    /// Fails unless a value of `n` bytes may be built: under [`MAX_VALUE`] and what is left
    /// of [`MAX_BUILT`]. Called before work whose result its inputs do not bound.
    pub fn check_size(&self, n: Option<usize>) -> Result<(), Error> {
        match n {
            Some(n) if n <= MAX_VALUE && n <= self.built_left() => Ok(()),
            Some(n) if n <= MAX_VALUE => Err(self.exceeded(Limit::Memory)),
            _ => Err(self.exceeded(Limit::ValueSize)),
        }
    }

    /// Charges the work of a call ([`CALL_WORK`]) that may read each of `args` once: a
    /// string's bytes, a [`SLOT`] a list item or map entry (not what they hold). Cheap:
    /// nothing is walked.
    pub fn charge_args(&self, args: &[Value]) -> Result<(), Error> {
        let n = args
            .iter()
            .fold(CALL_WORK, |n, a| n.saturating_add(shallow(a)));
        self.charge_work(n)
    }

    /// [`check_size`](Self::check_size), and charges the work of building that many bytes.
    pub fn will_build(&self, n: Option<usize>) -> Result<(), Error> {
        self.check_size(n)?;
        self.charge_work(n.unwrap_or(0))
    }

    /// The error for a result that does not fit: over [`MAX_VALUE`], or over what is left
    /// of [`MAX_BUILT`].
    pub fn too_big(&self) -> Error {
        if self.built_left() < MAX_VALUE {
            self.exceeded(Limit::Memory)
        } else {
            self.exceeded(Limit::ValueSize)
        }
    }

    /// Charges the work of touching `v`: walking, comparing, hashing or scanning it.
    pub fn touch(&self, v: &Value) -> Result<(), Error> {
        match measure(v, self.work_left()) {
            Ok(size) => self.charge_work(size.work()),
            Err(Over::Size) => Err(self.exceeded(Limit::Work)),
            Err(Over::Depth) => Err(self.exceeded(Limit::Depth)),
        }
    }

    /// Admits a value some operation built: a lazy sequence or map becomes a list or map
    /// (so no chain of lazy views, each iterating the next, can grow), the value is measured
    /// against [`MAX_VALUE`] and [`MAX_DEPTH`], and what was built is charged: every list
    /// item and map entry in it (a filter can build lists of lists).
    pub fn admit(&self, v: Value) -> Result<Value, Error> {
        self.admit_as(v, false)
    }

    /// [`admit`](Self::admit) for a value of which only the outer list or map is new (a
    /// literal, a slice, `+` or `*` of lists): its items are shared, not built.
    pub fn admit_outer(&self, v: Value) -> Result<Value, Error> {
        self.admit_as(v, true)
    }

    fn admit_as(&self, v: Value, outer_only: bool) -> Result<Value, Error> {
        let v = materialize(v).map_err(|over| self.exceeded(over.limit()))?;
        let size = measure(&v, MAX_VALUE).map_err(|over| self.exceeded(over.limit()))?;
        // Building it read about as much (a map literal hashes its keys, a slice copies).
        self.charge_work(size.work())?;
        let built = match v.as_str() {
            Some(s) => s.len(),
            None if outer_only => v.len().unwrap_or(0).saturating_add(1) * SLOT,
            None => size.slots * SLOT,
        };
        self.charge_built(built)?;
        Ok(v)
    }
}

/// How a measured value broke a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Over {
    Size,
    Depth,
}

impl Over {
    pub fn limit(self) -> Limit {
        match self {
            Over::Size => Limit::ValueSize,
            Over::Depth => Limit::Depth,
        }
    }
}

/// A measured value: `bytes` counts string bytes plus a [`SLOT`] for every value, shared
/// ones as often as they occur (that is what printing or comparing it costs); `slots`
/// counts the values.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Size {
    pub bytes: usize,
    pub slots: usize,
}

impl Size {
    /// The work of walking the value once: its bytes, and [`ITEM_WORK`] a value visited.
    pub fn work(&self) -> usize {
        self.bytes
            .saturating_add(self.slots.saturating_mul(ITEM_WORK))
    }
}

/// What reading `v` once costs without walking it: its bytes, or a [`SLOT`] an item.
fn shallow(v: &Value) -> usize {
    let own = match (v.as_str(), v.as_bytes()) {
        (Some(s), _) => s.len(),
        (None, Some(b)) => b.len(),
        _ => v.len().unwrap_or(0).saturating_mul(SLOT),
    };
    own.saturating_add(SLOT)
}

/// Measures `v`, walking lists and maps at most [`MAX_DEPTH`] deep and stopping as soon as
/// `bytes` passes `cap`, so the walk costs at most `cap / SLOT` steps.
pub(super) fn measure(v: &Value, cap: usize) -> Result<Size, Over> {
    let mut size = Size::default();
    walk(v, 0, cap, &mut size)?;
    Ok(size)
}

fn walk(v: &Value, depth: usize, cap: usize, size: &mut Size) -> Result<(), Over> {
    let own = match v.kind() {
        ValueKind::String => v.as_str().map_or(0, str::len),
        ValueKind::Bytes => v.as_bytes().map_or(0, <[u8]>::len),
        _ => 0,
    };
    size.slots += 1;
    size.bytes = size.bytes.saturating_add(SLOT).saturating_add(own);
    if size.bytes > cap {
        return Err(Over::Size);
    }
    let Some(obj) = v.as_object() else {
        return Ok(());
    };
    if class(obj) == Class::Opaque {
        return Ok(());
    }
    if depth >= MAX_DEPTH {
        return Err(Over::Depth);
    }
    match obj.repr() {
        ObjectRepr::Seq | ObjectRepr::Iterable => {
            for item in obj.try_iter().into_iter().flatten() {
                walk(&item, depth + 1, cap, size)?;
            }
        }
        ObjectRepr::Map => {
            for (key, value) in obj.try_iter_pairs().into_iter().flatten() {
                walk(&key, depth + 1, cap, size)?;
                walk(&value, depth + 1, cap, size)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// What an object is to the meters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// A list, map or lazy sequence: walked, copied, materialized.
    Data,
    /// `namespace()`: mutable, the only object `{% set ns.x = ... %}` writes into.
    Namespace,
    /// A loop, macro, closure or function: not data, never walked (they print a summary).
    Opaque,
}

/// minijinja keeps these types private; their type names identify them.
pub(super) fn class(obj: &DynObject) -> Class {
    let name = obj.type_name();
    if name.ends_with("::Namespace") {
        Class::Namespace
    } else if obj.repr() == ObjectRepr::Plain
        || name.ends_with("::Loop")
        || name.ends_with("::Macro")
        || name.ends_with("::Closure")
    {
        Class::Opaque
    } else {
        Class::Data
    }
}

/// The type name of minijinja's own map, the one `{...}` literals and `dict()` build.
fn plain_map_type() -> &'static str {
    static NAME: OnceLock<&'static str> = OnceLock::new();
    NAME.get_or_init(|| {
        let map = Value::from_iter([(Value::from(0), Value::from(0))]);
        map.as_object().map_or("", DynObject::type_name)
    })
}

/// True for minijinja's own list and map, which no template can change: they can be shared.
pub(super) fn is_plain(obj: &DynObject) -> bool {
    obj.downcast_ref::<Vec<Value>>().is_some() || obj.type_name() == plain_map_type()
}

/// A list or map: a lazy view (`reverse`, `items`, `chain`, `zip`, ...) is collected into
/// one, item by item, measured as it goes.
fn materialize(v: Value) -> Result<Value, Over> {
    let Some(obj) = v.as_object() else {
        return Ok(v);
    };
    if class(obj) != Class::Data || is_plain(obj) {
        return Ok(v);
    }
    let mut size = Size::default();
    match obj.repr() {
        ObjectRepr::Seq | ObjectRepr::Iterable => {
            let mut items = Vec::new();
            for item in obj.try_iter().into_iter().flatten() {
                walk(&item, 1, MAX_VALUE, &mut size)?;
                items.push(item);
            }
            Ok(Value::from(items))
        }
        ObjectRepr::Map => {
            let mut pairs = Vec::new();
            for (key, value) in obj.try_iter_pairs().into_iter().flatten() {
                walk(&key, 1, MAX_VALUE, &mut size)?;
                walk(&value, 1, MAX_VALUE, &mut size)?;
                pairs.push((key, value));
            }
            Ok(Value::from_iter(pairs))
        }
        _ => Ok(v),
    }
}

/// Counts what is written, failing once the count passes `cap`.
struct Counter {
    n: usize,
    cap: usize,
}

impl fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.n = self.n.saturating_add(s.len());
        if self.n > self.cap {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// Bytes of `{v}`, or `None` past `cap` (printing stops there).
pub(super) fn display_len(v: &Value, cap: usize) -> Option<usize> {
    if let Some(s) = v.as_str() {
        return (s.len() <= cap).then_some(s.len());
    }
    let mut c = Counter { n: 0, cap };
    fmt::write(&mut c, format_args!("{v}")).ok().map(|()| c.n)
}

/// Bytes of `{v:#?}` (the `pprint` filter), or `None` past `cap`.
pub(super) fn debug_len(v: &Value, cap: usize) -> Option<usize> {
    let mut c = Counter { n: 0, cap };
    fmt::write(&mut c, format_args!("{v:#?}"))
        .ok()
        .map(|()| c.n)
}

/// A string that refuses to grow past `cap` bytes.
pub(super) struct Bounded {
    text: String,
    cap: usize,
}

impl Bounded {
    pub fn new(cap: usize) -> Bounded {
        Bounded {
            text: String::new(),
            cap,
        }
    }

    pub fn left(&self) -> usize {
        self.cap - self.text.len()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn into_string(self) -> String {
        self.text
    }
}

impl fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if s.len() > self.left() {
            return Err(fmt::Error);
        }
        self.text.push_str(s);
        Ok(())
    }
}

/// Charges printing `value`: walking it (a list prints an item at a time) and the bytes it
/// prints, in the current auto-escape mode, to `meter` (`None`: past `cap`).
fn charge_print(
    budget: &Budget,
    state: &State,
    value: &Value,
    cap: usize,
    meter: impl FnOnce(usize) -> Result<(), Error>,
    limit: Limit,
) -> Result<(), Error> {
    if value.as_str().is_none() {
        budget.touch(value)?;
    }
    match printed_len(state, value, cap) {
        Some(n) => meter(n),
        None => Err(budget.exceeded(limit)),
    }
}

/// Bytes that printing `value` writes in the current auto-escape mode (HTML escaping makes
/// a character at most six), or `None` past `cap`.
fn printed_len(state: &State, value: &Value, cap: usize) -> Option<usize> {
    let escaping = !matches!(state.auto_escape(), AutoEscape::None) && !value.is_safe();
    if escaping {
        display_len(value, cap / 6).map(|n| n * 6)
    } else {
        display_len(value, cap)
    }
}

/// The environment's formatter: every `{{ }}` and every piece of template text, printed or
/// captured, is charged to [`MAX_BUILT`] before it is written.
pub(super) fn format(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    let budget = Budget::of(state)?;
    let left = budget.built_left();
    charge_print(
        &budget,
        state,
        value,
        left,
        |n| budget.charge_built(n),
        Limit::Memory,
    )?;
    minijinja::escape_formatter(out, state, value)
}

/// `~captured(value)`: wraps what the template prints inside captures (set blocks, macros,
/// call and filter blocks), charging it to [`MAX_BUILT`] once more than the formatter does:
/// a captured string grows by doubling, so its buffer can take twice its length.
pub(super) fn captured(state: &State, value: Value) -> Result<Value, Error> {
    let budget = Budget::of(state)?;
    let left = budget.built_left();
    charge_print(
        &budget,
        state,
        &value,
        left,
        |n| budget.charge_built(n),
        Limit::Memory,
    )?;
    Ok(value)
}

/// `~out(value)`: wraps what the template prints outside captures (set blocks, macros, call
/// and filter blocks), charging it to [`MAX_OUTPUT`] before the formatter writes it.
pub(super) fn out(state: &State, value: Value) -> Result<Value, Error> {
    let budget = Budget::of(state)?;
    let left = budget.output_left();
    charge_print(
        &budget,
        state,
        &value,
        left,
        |n| budget.charge_output(n),
        Limit::Output,
    )?;
    Ok(value)
}
