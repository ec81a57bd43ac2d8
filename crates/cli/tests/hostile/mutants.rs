//! The mutants of a valid GGUF file: truncations at every structural boundary (and one byte either
//! side), boundary values in every number of the header, the kv pairs and the tensor infos, seeded
//! byte flips, hostile hyper-parameters and tokenizer arrays, control characters in strings, and
//! hostile chat templates.

use super::layout::*;

/// A small seeded generator (SplitMix64): the same seed gives the same mutants on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// How a mutant's bytes differ from its base file.
#[derive(Clone)]
pub enum Body {
    /// Bytes written over the base at these offsets (the length is unchanged).
    Patch(Vec<(usize, Vec<u8>)>),
    /// The base's first bytes.
    Truncate(usize),
    /// The base's structure edited and encoded again (a string of another length, a kv pair
    /// added), with the base's tensor data.
    Whole(std::sync::Arc<Layout>),
}

/// Which commands a mutant is worth running beyond the usual four.
#[derive(Clone, Copy, Default)]
pub struct Extra {
    /// `run -c 0`: the context length from the file (hyper-parameters, metadata values).
    pub model_ctx: bool,
    /// `chat` with a message and with stdin closed (chat templates).
    pub chat: bool,
    /// `inspect --metadata` and `inspect --json` (strings that reach the terminal).
    pub inspect_all: bool,
}

#[derive(Clone)]
pub struct Mutant {
    pub family: &'static str,
    pub id: String,
    pub body: Body,
    pub extra: Extra,
}

impl Mutant {
    fn patch(family: &'static str, id: String, at: usize, bytes: Vec<u8>, extra: Extra) -> Self {
        Mutant {
            family,
            id,
            body: Body::Patch(vec![(at, bytes)]),
            extra,
        }
    }
}

/// Boundary values for a number of this kind, encoded little-endian at its width. `old` is the
/// value in the file, so that one more and one less are tried too.
pub fn boundary_values(kind: Kind, old: &[u8]) -> Vec<(String, Vec<u8>)> {
    fn u(v: &[u64], w: usize) -> Vec<(String, Vec<u8>)> {
        v.iter()
            .map(|x| (format!("{x}"), x.to_le_bytes()[..w].to_vec()))
            .collect()
    }
    fn i(v: &[i64], w: usize) -> Vec<(String, Vec<u8>)> {
        v.iter()
            .map(|x| (format!("{x}"), x.to_le_bytes()[..w].to_vec()))
            .collect()
    }
    let old_u = {
        let mut b = [0u8; 8];
        b[..old.len()].copy_from_slice(old);
        u64::from_le_bytes(b)
    };
    let mut v = match kind {
        Kind::Size => u(
            &[
                0,
                1,
                old_u.wrapping_add(1),
                old_u.wrapping_sub(1),
                1 << 31,
                (1 << 32) - 1,
                1 << 32,
                (1 << 32) + 1,
                1 << 62,
                1 << 63, // i64::MIN as a u64
                u64::MAX - 1,
                u64::MAX,
            ],
            8,
        ),
        Kind::Id => u(
            &[
                0,
                1,
                2,
                4,
                5,
                old_u.wrapping_add(1),
                13,
                39,
                255,
                1 << 31,
                u32::MAX as u64,
            ],
            4,
        ),
        Kind::Value(T_U8) | Kind::Value(T_I8) | Kind::Value(T_BOOL) => {
            u(&[0, 1, 2, 0x7f, 0x80, 0xff], 1)
        }
        Kind::Value(T_U16) | Kind::Value(T_I16) => u(&[0, 1, 0x7fff, 0x8000, 0xffff], 2),
        Kind::Value(T_U32) => u(
            &[
                0,
                1,
                old_u.wrapping_add(1),
                old_u.wrapping_sub(1) & 0xffff_ffff,
                1 << 16,
                (1 << 31) - 1,
                1 << 31,
                u32::MAX as u64 - 1,
                u32::MAX as u64,
            ],
            4,
        ),
        Kind::Value(T_I32) => i(&[0, 1, -1, i32::MIN as i64, i32::MAX as i64], 4),
        Kind::Value(T_U64) => u(
            &[0, 1, 1 << 31, 1 << 32, (1 << 32) + 1, 1 << 63, u64::MAX],
            8,
        ),
        Kind::Value(T_I64) => i(&[0, -1, i64::MIN, i64::MAX, 1 << 32], 8),
        Kind::Value(T_F32) => [
            0.0,
            -0.0,
            1.0,
            -1.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            4294967296.0,
        ]
        .iter()
        .map(|x: &f32| (format!("{x:e}"), x.to_le_bytes().to_vec()))
        .collect(),
        Kind::Value(T_F64) => [0.0, -1.0, f64::NAN, f64::INFINITY, f64::MAX, 1e300]
            .iter()
            .map(|x: &f64| (format!("{x:e}"), x.to_le_bytes().to_vec()))
            .collect(),
        Kind::Value(t) => panic!("no boundary values for value type {t}"),
    };
    v.retain(|(_, b)| b != old);
    v.dedup_by(|a, b| a.1 == b.1);
    v
}

/// Truncations at every structural boundary, one byte before and one after.
pub fn truncations(base: &[u8], l: &Layout) -> Vec<Mutant> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (name, at) in &l.boundaries {
        for (tag, len) in [("-1", at.wrapping_sub(1)), ("", *at), ("+1", at + 1)] {
            if len < base.len() && seen.insert(len) {
                out.push(Mutant {
                    family: "truncate",
                    id: format!("truncate at {name}{tag} ({len} bytes)"),
                    body: Body::Truncate(len),
                    extra: Extra::default(),
                });
            }
        }
    }
    out
}

/// Every number of the header, the kv pairs and the tensor infos set to each boundary value.
pub fn field_values(base: &[u8], l: &Layout) -> Vec<Mutant> {
    let mut out = Vec::new();
    for f in &l.fields {
        let old = &base[f.at..f.at + f.width()];
        let extra = Extra {
            model_ctx: matches!(f.kind, Kind::Value(_)),
            ..Extra::default()
        };
        for (shown, bytes) in boundary_values(f.kind, old) {
            out.push(Mutant::patch(
                "field",
                format!("{} = {shown} (at {})", f.name, f.at),
                f.at,
                bytes,
                extra,
            ));
        }
    }
    out
}

/// `n` mutants of one to eight flipped bytes each, half of them inside the header, metadata and
/// tensor infos (where a flip changes structure), half anywhere.
pub fn flips(base: &[u8], l: &Layout, rng: &mut Rng, n: usize) -> Vec<Mutant> {
    (0..n)
        .map(|i| {
            let region = if i % 2 == 0 { l.data_start } else { base.len() };
            let k = 1 + rng.below(8);
            let mut patches: Vec<(usize, Vec<u8>)> = (0..k)
                .map(|_| {
                    let at = rng.below(region);
                    let x = 1 + rng.below(255) as u8;
                    (at, vec![base[at] ^ x])
                })
                .collect();
            patches.sort_by_key(|p| p.0);
            patches.dedup_by_key(|p| p.0);
            let shown: Vec<String> = patches
                .iter()
                .map(|(at, b)| format!("{at}:{:02x}->{:02x}", base[*at], b[0]))
                .collect();
            Mutant {
                family: "flip",
                id: format!("flip #{i} [{}]", shown.join(" ")),
                body: Body::Patch(patches),
                extra: Extra::default(),
            }
        })
        .collect()
}

/// Hostile hyper-parameters (in place, at each key's own type) and hostile types for known keys and
/// tokenizer arrays (re-encoded).
pub fn hyper_parameters(l: &Layout) -> Vec<Mutant> {
    let arch = l
        .kv("general.architecture")
        .map(|kv| String::from_utf8_lossy(&kv.value[8..]).to_string())
        .unwrap_or_else(|| "llama".into());
    let k = |s: &str| format!("{arch}.{s}");
    let u32s: Vec<(String, Vec<u64>)> = vec![
        (
            k("block_count"),
            vec![0, 1, 29, 31, 1 << 20, u32::MAX as u64],
        ),
        (k("context_length"), vec![0, 1, 2, 1 << 31, u32::MAX as u64]),
        (
            k("embedding_length"),
            vec![0, 1, 575, 577, 1 << 20, 1 << 31, u32::MAX as u64],
        ),
        (
            k("feed_forward_length"),
            vec![0, 1, 1 << 31, u32::MAX as u64],
        ),
        (
            k("attention.head_count"),
            vec![0, 1, 7, 576, 1 << 31, u32::MAX as u64],
        ),
        (
            k("attention.head_count_kv"),
            vec![0, 2, 4, 9, 10, u32::MAX as u64],
        ),
        (
            k("rope.dimension_count"),
            vec![0, 1, 63, 65, 1 << 20, u32::MAX as u64],
        ),
        (k("vocab_size"), vec![0, 1, 49151, 49153, u32::MAX as u64]),
        (k("attention.key_length"), vec![0, 1, u32::MAX as u64]),
        (k("attention.value_length"), vec![0, 1, u32::MAX as u64]),
        (
            "tokenizer.ggml.bos_token_id".into(),
            vec![49152, 262144, u32::MAX as u64],
        ),
        (
            "tokenizer.ggml.eos_token_id".into(),
            vec![49152, 262144, u32::MAX as u64],
        ),
        (
            "tokenizer.ggml.unknown_token_id".into(),
            vec![49152, u32::MAX as u64],
        ),
        (
            "tokenizer.ggml.padding_token_id".into(),
            vec![49152, u32::MAX as u64],
        ),
        ("general.alignment".into(), vec![0, 1, 3, 64, 1 << 31]),
        ("general.file_type".into(), vec![u32::MAX as u64, 1000]),
    ];
    let f32s: Vec<(String, Vec<f32>)> = vec![
        (
            k("rope.freq_base"),
            vec![0.0, -1.0, f32::NAN, f32::INFINITY, 1e-30],
        ),
        (
            k("attention.layer_norm_rms_epsilon"),
            vec![0.0, -1.0, f32::NAN, f32::INFINITY],
        ),
        (k("rope.scaling.factor"), vec![0.0, f32::NAN, -1.0]),
    ];
    let extra = Extra {
        model_ctx: true,
        ..Extra::default()
    };
    let mut out = Vec::new();
    let mut l2 = l.clone();
    let push_kv = |out: &mut Vec<Mutant>, id: String, key: &str, ty: u32, value: Vec<u8>| {
        let mut m = l.clone();
        let kv = Kv {
            key: key.to_string(),
            ty,
            value,
            span: 0..0,
        };
        match m.kvs.iter_mut().find(|x| x.key == key) {
            Some(x) => *x = kv,
            None => m.kvs.push(kv),
        }
        out.push(Mutant {
            family: "hyper",
            id,
            body: Body::Whole(m.into()),
            extra,
        });
    };
    for (key, values) in &u32s {
        for &v in values {
            match l.kv(key) {
                Some(kv) if scalar_width(kv.ty) == Some(4) => {
                    let at = kv.span.end - 4;
                    out.push(Mutant::patch(
                        "hyper",
                        format!("{key} = {v}"),
                        at,
                        (v as u32).to_le_bytes().to_vec(),
                        extra,
                    ))
                }
                // Absent from the file (or of another width): add / replace it as a u32.
                _ => push_kv(
                    &mut out,
                    format!("{key} = {v} (added)"),
                    key,
                    T_U32,
                    (v as u32).to_le_bytes().to_vec(),
                ),
            }
        }
    }
    for (key, values) in &f32s {
        for &v in values {
            match l.kv(key) {
                Some(kv) if kv.ty == T_F32 => out.push(Mutant::patch(
                    "hyper",
                    format!("{key} = {v}"),
                    kv.span.end - 4,
                    v.to_le_bytes().to_vec(),
                    extra,
                )),
                _ => push_kv(
                    &mut out,
                    format!("{key} = {v} (added)"),
                    key,
                    T_F32,
                    v.to_le_bytes().to_vec(),
                ),
            }
        }
    }
    // Known keys with another type than the model expects.
    let bc = k("block_count");
    push_kv(
        &mut out,
        format!("{bc} as the string \"30\""),
        &bc,
        T_STRING,
        gstr(b"30"),
    );
    push_kv(
        &mut out,
        format!("{bc} as u64 2^40"),
        &bc,
        T_U64,
        (1u64 << 40).to_le_bytes().to_vec(),
    );
    push_kv(
        &mut out,
        format!("{bc} as i32 -1"),
        &bc,
        T_I32,
        (-1i32).to_le_bytes().to_vec(),
    );
    push_kv(
        &mut out,
        format!("{bc} as f32 NaN"),
        &bc,
        T_F32,
        f32::NAN.to_le_bytes().to_vec(),
    );
    let mut arr = T_U32.to_le_bytes().to_vec();
    arr.extend(2u64.to_le_bytes());
    arr.extend([30u8, 0, 0, 0, 31, 0, 0, 0]);
    push_kv(
        &mut out,
        format!("{bc} as an array of u32"),
        &bc,
        T_ARRAY,
        arr,
    );
    let ctx = k("context_length");
    push_kv(
        &mut out,
        format!("{ctx} as i64 -1"),
        &ctx,
        T_I64,
        (-1i64).to_le_bytes().to_vec(),
    );
    push_kv(
        &mut out,
        format!("{ctx} as u64 MAX"),
        &ctx,
        T_U64,
        u64::MAX.to_le_bytes().to_vec(),
    );
    push_kv(
        &mut out,
        "tokenizer.ggml.bos_token_id as i32 -1".into(),
        "tokenizer.ggml.bos_token_id",
        T_I32,
        (-1i32).to_le_bytes().to_vec(),
    );
    push_kv(
        &mut out,
        "tokenizer.ggml.model = \"\\u{1b}[31mbogus\"".into(),
        "tokenizer.ggml.model",
        T_STRING,
        gstr(b"\x1b[31mbogus"),
    );
    push_kv(
        &mut out,
        "tokenizer.ggml.model = \"\"".into(),
        "tokenizer.ggml.model",
        T_STRING,
        gstr(b""),
    );

    // Tokenizer arrays that disagree with each other and with the embedding.
    let strings = |v: &[&[u8]]| {
        let mut p = T_STRING.to_le_bytes().to_vec();
        p.extend((v.len() as u64).to_le_bytes());
        for s in v {
            p.extend(gstr(s));
        }
        p
    };
    let tokens: Vec<&[u8]> = vec![b"<unk>", b"<s>", b"</s>", b"h", b"i", b"hi"];
    push_kv(
        &mut out,
        "tokenizer.ggml.tokens: 6 tokens".into(),
        "tokenizer.ggml.tokens",
        T_ARRAY,
        strings(&tokens),
    );
    push_kv(
        &mut out,
        "tokenizer.ggml.tokens: none".into(),
        "tokenizer.ggml.tokens",
        T_ARRAY,
        strings(&[]),
    );
    push_kv(
        &mut out,
        "tokenizer.ggml.tokens: all empty".into(),
        "tokenizer.ggml.tokens",
        T_ARRAY,
        strings(&[b"", b"", b""]),
    );
    push_kv(
        &mut out,
        "tokenizer.ggml.merges: [\"x\"]".into(),
        "tokenizer.ggml.merges",
        T_ARRAY,
        strings(&[b"x"]),
    );
    push_kv(
        &mut out,
        "tokenizer.ggml.merges: unknown pieces".into(),
        "tokenizer.ggml.merges",
        T_ARRAY,
        strings(&[b"zzzz qqqq", b" ", b"a b c"]),
    );
    let mut types = T_I32.to_le_bytes().to_vec();
    types.extend(3u64.to_le_bytes());
    types.extend([9u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0x80]);
    push_kv(
        &mut out,
        "tokenizer.ggml.token_type: 3 bogus types".into(),
        "tokenizer.ggml.token_type",
        T_ARRAY,
        types,
    );
    let mut scores = T_F32.to_le_bytes().to_vec();
    scores.extend(2u64.to_le_bytes());
    scores.extend(f32::NAN.to_le_bytes());
    scores.extend(f32::INFINITY.to_le_bytes());
    push_kv(
        &mut out,
        "tokenizer.ggml.scores: [NaN, inf]".into(),
        "tokenizer.ggml.scores",
        T_ARRAY,
        scores,
    );
    // Duplicate keys: the same key twice with different values.
    if let Some(kv) = l.kv(&bc).cloned() {
        let mut dup = kv.clone();
        dup.value = 1000u32.to_le_bytes().to_vec();
        l2.kvs.push(dup);
        out.push(Mutant {
            family: "hyper",
            id: format!("{bc} twice (30, then 1000)"),
            body: Body::Whole(l2.into()),
            extra,
        });
    }
    out
}

/// Control characters and terminal escapes in the strings a command prints: the architecture, the
/// name, a tensor name, a key, a template, a token.
pub fn hostile_strings(l: &Layout) -> Vec<Mutant> {
    const NASTY: &[(&str, &[u8])] = &[
        ("ANSI colour", b"llama\x1b[31mRED\x1b[0m"),
        ("OSC title", b"\x1b]0;pwned\x07"),
        ("carriage return", b"fine\rEVIL"),
        ("NUL", b"ll\x00ama"),
        ("backspaces", b"llama\x08\x08\x08\x08\x08"),
        ("C1 CSI", "x\u{9b}31m".as_bytes()),
        ("DEL", b"a\x7fb"),
        ("newline", b"two\nlines"),
    ];
    let extra = Extra {
        inspect_all: true,
        ..Extra::default()
    };
    let mut out = Vec::new();
    let mut push = |id: String, m: Layout| {
        out.push(Mutant {
            family: "string",
            id,
            body: Body::Whole(m.into()),
            extra,
        })
    };
    for (what, s) in NASTY {
        for key in ["general.architecture", "general.name"] {
            let mut m = l.clone();
            m.set_string(key, s);
            push(format!("{key} with {what}"), m);
        }
        let mut m = l.clone();
        let name = format!("{}{}", l.tensors[0].name, String::from_utf8_lossy(s));
        m.tensors[0].name = name;
        push(format!("tensor name with {what}"), m);
        let mut m = l.clone();
        let key = format!("general.x{}", String::from_utf8_lossy(s));
        m.set_string(&key, b"value");
        push(format!("a key with {what}"), m);
    }
    let mut m = l.clone();
    m.set_string("general.name", &vec![b'n'; 4 << 20]);
    push("general.name of 4 MiB".into(), m);
    let mut m = l.clone();
    m.set_string("tokenizer.ggml.pre", b"\x1b[2Jsmollm");
    push("tokenizer.ggml.pre with an escape".into(), m);
    out
}

/// Templates that recurse, allocate without bound, loop for ever, or fail with hostile text.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("macro recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
    ("recursive loop", "{% for m in messages recursive %}{{ loop(messages) }}{% endfor %}"),
    ("string repeat 10^10", "{{ 'a' * 10000000000 }}"),
    ("string repeat 2^31", "{{ 'abcdefgh' * 2147483648 }}"),
    ("doubling string", "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"),
    ("range 10^12", "{% for i in range(1000000000000) %}x{% endfor %}"),
    ("range list 10^10", "{{ range(10000000000) | list | length }}"),
    ("nested loops 10^5 x 10^5", "{% for a in range(100000) %}{% for b in range(100000) %}{{ a }}{% endfor %}{% endfor %}"),
    ("six nested loops", "{% for a in range(100) %}{% for b in range(100) %}{% for c in range(100) %}{% for d in range(100) %}{% for e in range(100) %}{% for f in range(100) %}.{% endfor %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}"),
    ("list repeat", "{% set l = [1, 2, 3] * 1000000000 %}{{ l | length }}"),
    ("messages repeat", "{% for m in messages * 1000000000 %}{{ m.content }}{% endfor %}"),
    ("tojson indent huge", "{{ messages | tojson(indent=1000000000) }}"),
    ("join of a huge range", "{{ range(100000000) | join(',') }}"),
    ("raise_exception with escapes", "{{ raise_exception('bad\x1b[31m red \x1b]0;title\x07 \r\n end') }}"),
    ("syntax error", "{% for %}{{ }"),
    ("undefined call", "{{ nope() }}"),
    ("include", "{% include 'other.jinja' %}"),
    ("extends", "{% extends '/etc/passwd' %}"),
    ("deep nesting 5000", ""),
    ("empty", ""),
    ("only text", "plain text, no message"),
    ("long prompt", "{% for i in range(100000) %}word {% endfor %}"),
    ("control characters in the prompt", "\x1b[31m{{ messages[0].content }}\x00\x07"),
    ("strftime garbage", "{{ strftime_now('%Q%%%') }}"),
    ("huge format width", "{{ '%999999999999d' | format(1) }}"),
    ("empty loop 10^10", "{% for i in range(10000000000) %}{% endfor %}"),
    ("replace blow-up", "{{ ('a' * 1000) | replace('a', 'a' * 1000) | replace('a', 'a' * 1000) }}"),
    ("indent 10^9", "{{ 'x\nx' | indent(1000000000) }}"),
    ("power overflow", "{{ 2 ** 100000000 }}{{ 10 ** 400 }}"),
    ("content repeat", "{{ messages[0].content * 4000000000 }}"),
    ("nested parentheses 100000", ""),
    ("nested lists 100000", ""),
    ("deep macro chain", ""),
];

/// One mutant a template, each `tokenizer.chat_template` replaced.
pub fn templates(l: &Layout) -> Vec<Mutant> {
    let extra = Extra {
        chat: true,
        ..Extra::default()
    };
    TEMPLATES
        .iter()
        .map(|(name, text)| {
            let text = match *name {
                "deep nesting 5000" => {
                    format!(
                        "{}x{}",
                        "{% if true %}".repeat(5000),
                        "{% endif %}".repeat(5000)
                    )
                }
                "nested parentheses 100000" => {
                    format!("{{{{ {}1{} }}}}", "(".repeat(100_000), ")".repeat(100_000))
                }
                "nested lists 100000" => {
                    format!("{{{{ {}1{} }}}}", "[".repeat(100_000), "]".repeat(100_000))
                }
                // Macro k calls macro k-1 twice: 2^40 calls from 40 short definitions.
                "deep macro chain" => {
                    let mut t = "{% macro m0() %}x{% endmacro %}".to_string();
                    for k in 1..=40 {
                        let j = k - 1;
                        t += &format!(
                            "{{% macro m{k}() %}}{{{{ m{j}() }}}}{{{{ m{j}() }}}}{{% endmacro %}}"
                        );
                    }
                    t + "{{ m40() }}"
                }
                _ => text.to_string(),
            };
            let mut m = l.clone();
            m.set_string("tokenizer.chat_template", text.as_bytes());
            Mutant {
                family: "template",
                id: format!("chat template: {name}"),
                body: Body::Whole(m.into()),
                extra,
            }
        })
        .collect()
}

/// Whole pieces missing or repeated: each kv pair removed, each tensor removed, a tensor name
/// repeated, two tensors sharing their data, the tensors in reverse order.
pub fn structure(l: &Layout) -> Vec<Mutant> {
    let mut out = Vec::new();
    let mut push = |id: String, m: Layout| {
        out.push(Mutant {
            family: "structure",
            id,
            body: Body::Whole(m.into()),
            extra: Extra::default(),
        })
    };
    for (i, kv) in l.kvs.iter().enumerate() {
        let mut m = l.clone();
        m.kvs.remove(i);
        push(format!("kv[{i}] {} removed", kv.key), m);
    }
    for (i, t) in l.tensors.iter().enumerate() {
        let mut m = l.clone();
        m.tensors.remove(i);
        push(format!("tensor[{i}] {} removed", t.name), m);
    }
    let mut m = l.clone();
    m.tensors[1].name = m.tensors[0].name.clone();
    push(
        format!(
            "tensor[1] renamed to tensor[0]'s name {}",
            l.tensors[0].name
        ),
        m,
    );
    // Two tensors of one shape and type pointing at the same bytes.
    if let Some(j) = (1..l.tensors.len()).find(|&j| {
        l.tensors[j].dims == l.tensors[1].dims && l.tensors[j].ty == l.tensors[1].ty && j != 1
    }) {
        let mut m = l.clone();
        m.tensors[j].offset = m.tensors[1].offset;
        push(format!("tensor[{j}] shares tensor[1]'s data"), m);
    }
    let mut m = l.clone();
    m.tensors.reverse();
    push("tensor infos in reverse order".into(), m);
    let mut m = l.clone();
    m.kvs.reverse();
    push("kv pairs in reverse order".into(), m);
    let mut m = l.clone();
    m.version = 2;
    push("version 2".into(), m);
    out
}
