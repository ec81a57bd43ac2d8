//! Hostile chat templates, shared by `chat_template_limits.rs` (each must fail quickly with
//! the right error) and `chat_template_memory.rs` (all of them together stay under a memory
//! ceiling). On the renderer before limits, each of these aborted the process (stack
//! overflow, allocation failure), hung, or took minutes.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use rustorch_engine::chat_template::{ChatMessage, ChatTemplate, Limit, TemplateError};

/// What a hostile template must end in.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// This limit.
    Limit(Limit),
    /// One of these limits (which one comes first depends on the build's speed or on
    /// details of the accounting).
    AnyOf(&'static [Limit]),
    /// A syntax or rendering error whose message contains this.
    Error(&'static str),
}

pub struct Case {
    pub name: &'static str,
    pub source: String,
    pub expect: Expect,
}

fn case(name: &'static str, source: impl Into<String>, expect: Expect) -> Case {
    Case {
        name,
        source: source.into(),
        expect,
    }
}

use Expect::{AnyOf, Error};
use Limit::*;

const NOT_DATA: Expect = Error("a namespace can hold only data");
const BIG: Expect = AnyOf(&[ValueSize, Memory]);

/// 10 MB of `x`, bound to `s`.
const S10M: &str = "{% set s = 'x' * 10000000 %}";
/// 1 MB of `x`, bound to `s`.
const S1M: &str = "{% set s = 'x' * 1000000 %}";

pub fn cases() -> Vec<Case> {
    vec![
        // Self-referencing values: a namespace can hold only copies of plain data.
        case("namespace in itself, tojson", "{% set ns = namespace(a=1) %}{% set ns.a = ns %}{{ ns|tojson }}", NOT_DATA),
        case("namespace in itself, printed", "{% set ns = namespace(a=1) %}{% set ns.a = ns %}{{ ns }}", NOT_DATA),
        case("namespace in itself, string", "{% set ns = namespace(a=1) %}{% set ns.a = ns %}{{ ns|string }}", NOT_DATA),
        case("namespace in itself, compared", "{% set ns = namespace(a=1) %}{% set ns.a = ns %}{{ ns == ns }}", NOT_DATA),
        case("namespace in itself, pprint", "{% set ns = namespace() %}{% set ns.a = ns %}{{ ns|pprint }}", NOT_DATA),
        case("namespace in a list in itself", "{% set ns = namespace() %}{% set ns.l = [1, ns] %}{{ ns }}", NOT_DATA),
        case("namespace in a map in itself", "{% set ns = namespace() %}{% set ns.d = {'x': ns} %}{{ ns|tojson }}", NOT_DATA),
        case("namespace in a tuple assignment", "{% set ns = namespace() %}{% set x, ns.a = [1, ns] %}{{ ns }}", NOT_DATA),
        case("namespace through a set block's filter", "{% set ns = namespace() %}{% set ns.a | default(ns, true) %}{% endset %}{{ ns }}", NOT_DATA),
        case("namespace given to namespace()", "{% set a = namespace() %}{% set b = namespace(x=a) %}{% set a.b = b %}{{ a }}", NOT_DATA),
        case("two namespaces in each other", "{% set a = namespace() %}{% set b = namespace() %}{% set a.b = b %}{% set b.a = a %}{{ a }}", NOT_DATA),
        case("loop kept by loop.changed", "{% for x in [1, 2] %}{{ loop.changed(loop) }}{{ loop }}{% endfor %}", Error("a namespace can hold only data")),
        // Allocations sized by an argument.
        case("tojson indent=10**12", "{{ messages|tojson(indent=10**12) }}", Expect::Limit(ValueSize)),
        case("tojson indent=10**7", "{{ messages|tojson(indent=10**7) }}", Expect::Limit(ValueSize)),
        case("replace chain", "{% set s = 'aaaaaaaaaa' %}{{ s|replace('a', s)|replace('a', s)|replace('a', s)|replace('a', s)|replace('a', s)|replace('a', s)|replace('a', s)|replace('a', s)|replace('a', s) }}", BIG),
        case("replace method chain", "{% set s = 'a' * 1000 %}{{ s.replace('a', s).replace('a', s).replace('a', s) }}", BIG),
        case("replace with empty old", "{{ ('a' * 100000)|replace('', 'b' * 1000) }}", BIG),
        case("join with a huge separator", "{{ range(100000)|join('x' * 1000000) }}", BIG),
        case("join method with a huge separator", "{{ ('x' * 1000000).join(range(1000)) }}", BIG),
        case("join of many strings", "{{ range(100000)|map('string')|join('y' * 1000) }}", BIG),
        case("batch(10**12)", "{{ [1, 2]|batch(10**12) }}", BIG),
        case("batch with a filler", "{{ [1]|batch(1000000, 'x') }}", BIG),
        case("slice(10**12)", "{{ [1, 2]|slice(10**12) }}", BIG),
        case("indent(10**10)", "{{ 'a\\nb'|indent(10**10) }}", BIG),
        case("indent(width=10**10)", "{{ 'a\\nb'|indent(width=10**10, first=true) }}", BIG),
        case("printf width", "{{ '%1000000000s'|format('x') }}", BIG),
        case("format width", "{{ '{:>1000000000}'.format('x') }}", BIG),
        case("format precision", "{{ '{:.1000000000f}'.format(1.5) }}", BIG),
        case("strftime_now of a huge format", "{{ strftime_now('%A' * 5000000) }}", BIG),
        case("center(10**12)", "{{ 'a'.center(10**12) }}", Error("unknown method")),
        // Doubling.
        case("string doubling with ~", "{% set ns = namespace(s='a') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}", BIG),
        case("string doubling with +", "{% set ns = namespace(s='a') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}", BIG),
        case("list doubling with +", "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l }}", BIG),
        case("doubling through a recursive macro", "{% macro d(s, n) %}{% if n == 0 %}{{ s }}{% else %}{{ d(s ~ s, n - 1) }}{% endif %}{% endmacro %}{{ d('a', 64) }}", BIG),
        case("doubling through macro output", "{% macro d(n) %}{% if n > 0 %}{{ d(n - 1) }}{{ d(n - 1) }}{% else %}xxxxxxxxxxxxxxxx{% endif %}{% endmacro %}{{ d(40) }}", AnyOf(&[Steps, Memory, Output])),
        case("doubling through set blocks", "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set t %}{{ ns.s }}{{ ns.s }}{% endset %}{% set ns.s = t %}{% endfor %}{{ ns.s }}", BIG),
        // Repetition.
        case("string * 10**12", "{{ 'a' * 10**12 }}", BIG),
        case("10**12 * string", "{{ 10**12 * 'ab' }}", BIG),
        case("list * 10**12", "{{ [1] * 10**12 }}", BIG),
        case("list of lists repeated", "{{ [[1] * 1000] * 1000 }}", BIG),
        case("list of strings repeated", "{{ ['x' * 100000] * 1000 }}", BIG),
        case("join of a repeated list", "{{ (['x' * 1000] * 100000)|join }}", BIG),
        // Many values kept alive.
        case("big strings gathered in a list", "{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = ns.l + [('x' * 1000000) ~ i] %}{% endfor %}{{ ns.l|length }}", BIG),
        case("big strings in many variables", (0..40).map(|i| format!("{{% set v{i} = ('x' ~ {i}) * 5000000 %}}")).collect::<String>(), Expect::Limit(Memory)),
        case("a list of references printed", format!("{S1M}{{{{ [{}] }}}}", vec!["s"; 20].join(", ")), BIG),
        case("chain of many lists", "{% set l = range(100000)|list %}{{ l|chain(l, l, l, l, l, l, l)|list|length }}", BIG),
        case("a string split into characters", "{{ ('x' * 10000000)|list|length }}", BIG),
        case("split('')", "{{ ('x' * 10000000).split('')|length }}", BIG),
        case("split on whitespace", "{{ ('x ' * 5000000).split()|length }}", BIG),
        case("lines", "{{ ('x\\n' * 5000000)|lines|length }}", BIG),
        // Output.
        case("a big value printed 100k times", format!("{S1M}{{% for i in range(100000) %}}{{{{ s }}}}{{% endfor %}}"), Expect::Limit(Output)),
        case("big text printed 100k times", format!("{{% for i in range(100000) %}}{}{{% endfor %}}", "t".repeat(10_000)), Expect::Limit(Output)),
        case("a big value captured 100k times", format!("{S1M}{{% set t %}}{{% for i in range(100000) %}}{{{{ s }}}}{{% endfor %}}{{% endset %}}{{{{ t|length }}}}"), Expect::Limit(Memory)),
        case("big text captured 100k times", format!("{{% set t %}}{{% for i in range(100000) %}}{}{{% endfor %}}{{% endset %}}{{{{ t|length }}}}", "t".repeat(10_000)), Expect::Limit(Memory)),
        case("a filter block over a big output", format!("{S1M}{{% filter upper %}}{{% for i in range(100000) %}}{{{{ s }}}}{{% endfor %}}{{% endfilter %}}"), AnyOf(&[Memory, Output])),
        case("call blocks printing a big value", format!("{S1M}{{% macro m() %}}{{{{ caller() }}}}{{% endmacro %}}{{% for i in range(1000) %}}{{% call m() %}}{{{{ s }}}}{{% endcall %}}{{% endfor %}}"), AnyOf(&[Memory, Output])),
        // Time.
        case("two nested range(100000) loops", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", AnyOf(&[Steps, Memory])),
        case("three nested range loops", "{% for i in range(100000) %}{% for j in range(100000) %}{% for k in range(100000) %}{{ k }}{% endfor %}{% endfor %}{% endfor %}", AnyOf(&[Steps, Memory, Output])),
        case("a loop over a long string", "{% for c in 'x' * 10000000 %}{% endfor %}", Expect::Limit(Steps)),
        case("comparing big strings", format!("{S10M}{{% for i in range(100000) %}}{{% if s == s %}}{{% endif %}}{{% endfor %}}"), Expect::Limit(Work)),
        case("searching a big string", format!("{S10M}{{% for i in range(100000) %}}{{% if 'y' in s %}}{{% endif %}}{{% endfor %}}"), Expect::Limit(Work)),
        case("hashing a big key", format!("{S10M}{{% for i in range(100000) %}}{{% set d = {{s: 1}} %}}{{% endfor %}}"), Expect::Limit(Work)),
        case("looking up a big key", format!("{S10M}{{% set d = {{'a': 1}} %}}{{% for i in range(100000) %}}{{{{ d[s] }}}}{{% endfor %}}"), Expect::Limit(Work)),
        case("counting matches in a big string", "{% set a = 'y' * 100000 %}{% for i in range(1000) %}{% for j in range(1000) %}{{ a.count('y') }}{% endfor %}{% endfor %}", Expect::Limit(Work)),
        case("indexing a big string from the end", "{% set a = 'y' * 100000 %}{% for i in range(1000) %}{% for j in range(1000) %}{{ a[-1] }}{% endfor %}{% endfor %}", Expect::Limit(Work)),
        case("a long constant key", format!("{{% set a = {{'{k}': 1}} %}}{{% for i in range(1000) %}}{{% for j in range(1000) %}}{{{{ a['{k}'] }}}}{{% endfor %}}{{% endfor %}}", k = "k".repeat(100_000)), Expect::Limit(Work)),
        case("sorting big strings", "{% set l = ['x' * 100000] * 100 %}{% for i in range(100000) %}{% set m = l|sort %}{% endfor %}", Expect::Limit(Work)),
        case("string methods on a big string", format!("{S10M}{{% for i in range(100000) %}}{{{{ s.startswith('y') }}}}{{% endfor %}}"), Expect::Limit(Work)),
        case("tests on a big string", format!("{S10M}{{% for i in range(100000) %}}{{{{ s is startingwith('y') }}}}{{% endfor %}}"), Expect::Limit(Work)),
        case("a filter that calls a test per item", "{% set l = range(100000)|list %}{% for i in range(100000) %}{{ l|select('none')|list|length }}{% endfor %}", Expect::Limit(Work)),
        case("a filter that calls a filter per item", "{% set l = range(100000)|list %}{% for i in range(100000) %}{{ l|map('abs')|select('odd')|list|length }}{% endfor %}", AnyOf(&[Work, Memory])),
        case("joining empty strings", "{% set l = [''] * 300000 %}{% for i in range(100000) %}{{ l|join }}{% endfor %}", Expect::Limit(Work)),
        case("a splatted list", "{% set l = range(100000)|list %}{% for i in range(100000) %}{{ loop.cycle(*l) }}{% endfor %}", Expect::Limit(Work)),
        case("a big key looked up by a method", format!("{S10M}{{% set d = {{'a': 1}} %}}{{% for i in range(100000) %}}{{{{ d.get(s) }}}}{{% endfor %}}"), Expect::Limit(Work)),
        case("parsing a big number", "{% set s = '1' * 10000000 %}{% for i in range(100000) %}{{ s|float }}{% endfor %}", Expect::Limit(Work)),
        case("printing a long list into a capture", "{% set l = [''] * 300000 %}{% set t %}{% for i in range(100000) %}{{ l }}{% endfor %}{% endset %}", AnyOf(&[Work, Memory])),
        case("concatenating a long list", "{% set l = [''] * 300000 %}{% for i in range(100000) %}{% set t = l ~ '' %}{% endfor %}", AnyOf(&[Work, Memory])),
        // Recursion and nesting.
        case("a macro calling itself", "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", Expect::Limit(Recursion)),
        case("a recursive loop without end", "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}", Expect::Limit(Recursion)),
        case("deep nesting through a loop", "{% set ns = namespace(x=1) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}", Expect::Limit(Depth)),
        case("deep nesting of maps", "{% set ns = namespace(x=1) %}{% for i in range(100000) %}{% set ns.x = {'k': ns.x} %}{% endfor %}{{ ns.x }}", Expect::Limit(Depth)),
        case("tojson of a deep value", "{% macro m(x, n) %}{% if n > 0 %}{{ m([x], n - 1) }}{% else %}{{ x|tojson }}{% endif %}{% endmacro %}{{ m(1, 100) }}", Expect::Limit(Depth)),
        case("printing a deep value", "{% macro m(x, n) %}{% if n > 0 %}{{ m({'a': [x]}, n - 1) }}{% else %}{{ x }}{% endif %}{% endmacro %}{{ m(1, 100) }}", Expect::Limit(Depth)),
        case("a long chain of +", format!("{{{{ 1{} }}}}", "+1".repeat(100_000)), Expect::Limit(Tag)),
        case("a long filter chain", format!("{{{{ 'x'{} }}}}", "|e".repeat(100_000)), Expect::Limit(Tag)),
        case("a long attribute chain", format!("{{{{ x{} }}}}", ".a".repeat(100_000)), Expect::Limit(Tag)),
        case("a call with 70,000 arguments", format!("{{{{ range({}1) }}}}", "1,".repeat(70_000)), Expect::Limit(Tag)),
        case("deeply nested blocks", format!("{}{}", "{% if true %}".repeat(10_000), "{% endif %}".repeat(10_000)), Error("recursion")),
        case("deeply nested brackets", format!("{{{{ {}1{} }}}}", "[".repeat(400), "]".repeat(400)), Error("recursion")),
        case("a huge source", "x".repeat(rustorch_engine::chat_template::MAX_SOURCE + 1), Expect::Limit(Source)),
        // What Hugging Face's environment does not have.
        case("debug()", "{{ debug() }}", Error("unknown")),
        case("include", "{% include 'x' %}", Error("template")),
    ]
}

/// A conversation for the hostile templates to chew on.
pub fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("Be brief."),
        ChatMessage::user("Hi"),
        ChatMessage::assistant("Hello!"),
    ]
}

/// How long one hostile template may take (debug builds run the VM about ten times slower).
pub fn deadline() -> Duration {
    Duration::from_secs(if cfg!(debug_assertions) { 60 } else { 5 })
}

/// Compiles and renders `case`, checks it ends as expected, in time, and returns how long it
/// took.
pub fn check(case: &Case) -> Duration {
    let t0 = Instant::now();
    let result = ChatTemplate::new(&case.source, "<s>", "</s>")
        .and_then(|t| t.with_fixed_time(0).render(&conversation(), true));
    let took = t0.elapsed();
    let err = match result {
        Ok(text) => panic!("{}: rendered {} bytes", case.name, text.len()),
        Err(err) => err,
    };
    match (case.expect, &err) {
        (Expect::Limit(want), TemplateError::Limit(got)) => {
            assert_eq!(*got, want, "{}: {err}", case.name)
        }
        (Expect::AnyOf(want), TemplateError::Limit(got)) => {
            assert!(want.contains(got), "{}: {err}", case.name)
        }
        (Expect::Error(text), TemplateError::Render(_) | TemplateError::Syntax(_)) => {
            assert!(err.to_string().contains(text), "{}: {err}", case.name)
        }
        _ => panic!("{}: expected {:?}, got {err:?}", case.name, case.expect),
    }
    assert!(
        took < deadline(),
        "{}: took {took:?} to fail with: {err}",
        case.name
    );
    took
}
