//! Writes the seed inputs of the tokenizer, chat_template and model_loader targets into
//! `fuzz/seeds/<target>/` (the gguf_reader seeds are small files written by gguf-py).
//!
//! The tokenizer seeds are small vocabularies cut from the test models (a few hundred tokens,
//! with the merges among them), so the fuzzer starts from real token texts, types and scores; the
//! chat_template seeds are the real templates (the models' and those of the engine's tests) with a
//! few conversations, and the engine's hostile templates; the model_loader seeds are the tiny model and some variations it must load.
//!
//! `cargo run --release -p rustorch-fuzz-harness --example make_seeds` (needs
//! `scripts/fetch-models.sh`; `RUSTORCH_MODELS` overrides the model folder).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use rustorch_engine::chat_template::ChatMessage;
use rustorch_fuzz_harness::chat_template::ChatTemplateCase;
use rustorch_fuzz_harness::model_loader::{ModelCase, Slot, KEYS};
use rustorch_fuzz_harness::tokenizer::{self as tk, ModelKey, Token, TokenizerCase};
use rustorch_gguf::GgufFile;

/// The engine's hostile templates (each must end in a limit or an error, quickly).
#[path = "../../engine/tests/hostile_templates/mod.rs"]
mod hostile;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    let models = std::env::var_os("RUSTORCH_MODELS").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/rustorch/models"),
        PathBuf::from,
    );
    let smollm = GgufFile::open(models.join("SmolLM2-135M-Instruct.Q4_1.gguf"))
        .expect("SmolLM2 (run scripts/fetch-models.sh)");
    let gemma = GgufFile::open(models.join("gemma-3-270m-q4_k_m.gguf"))
        .expect("Gemma 3 (run scripts/fetch-models.sh)");

    let mut out = Seeds::new(&root.join("tokenizer"));
    tokenizer_seeds(&smollm, &gemma, &mut out);
    let mut out = Seeds::new(&root.join("chat_template"));
    chat_template_seeds(&smollm, &mut out);
    let mut out = Seeds::new(&root.join("model_loader"));
    model_loader_seeds(&mut out);
}

struct Seeds {
    dir: PathBuf,
}

impl Seeds {
    fn new(dir: &Path) -> Seeds {
        std::fs::create_dir_all(dir).expect("creating the seed folder");
        Seeds {
            dir: dir.to_owned(),
        }
    }

    fn write(&mut self, name: &str, bytes: &[u8]) {
        assert!(
            bytes.len() < 100_000,
            "seed {name} is {} bytes",
            bytes.len()
        );
        std::fs::write(self.dir.join(name), bytes).expect("writing a seed");
        println!("{}/{name}: {} bytes", self.dir.display(), bytes.len());
    }
}

const TEXT: &str = "Hello, world! It's 3.14 \u{2014} \u{fc}n\u{ef}c\u{f6}d\u{e9} \u{65e5}\u{672c}\u{8a9e} \u{1F642}\n  two  spaces\tand a tab\n\n";

/// SmolLM2's first tokens (specials and bytes), grown by its merges in rank order while both
/// halves are already in: a byte-level BPE vocabulary of `max` tokens that merges like the real one.
fn small_bpe(f: &GgufFile, max: usize) -> (Vec<Token>, Vec<String>, HashMap<u32, u16>) {
    let texts = f.get_str_array("tokenizer.ggml.tokens").expect("tokens");
    let types = f.get_i32_array("tokenizer.ggml.token_type").expect("types");
    let merges = f.get_str_array("tokenizer.ggml.merges").expect("merges");
    let id_of: HashMap<&str, u32> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let mut keep: BTreeSet<u32> = (0..300).collect();
    let mut kept_merges = Vec::new();
    for m in merges {
        if keep.len() >= max {
            break;
        }
        let Some((l, r)) = m.split_once(' ') else {
            continue;
        };
        let (Some(&li), Some(&ri)) = (id_of.get(l), id_of.get(r)) else {
            continue;
        };
        if let Some(&joined) = id_of.get(format!("{l}{r}").as_str()) {
            if keep.contains(&li) && keep.contains(&ri) {
                keep.insert(joined);
                kept_merges.push(m.clone());
            }
        }
    }
    let new_id: HashMap<u32, u16> = keep
        .iter()
        .enumerate()
        .map(|(new, &old)| (old, new as u16))
        .collect();
    let tokens = keep
        .iter()
        .map(|&id| Token {
            ty: types[id as usize] as u8,
            score: tk::score_byte(0.0),
            text: texts[id as usize].clone(),
        })
        .collect();
    (tokens, kept_merges, new_id)
}

/// Gemma 3's control and byte tokens and its `n` best-scored short pieces: a SentencePiece
/// vocabulary whose scores keep the real order.
fn small_spm(f: &GgufFile, n: usize) -> (Vec<Token>, HashMap<u32, u16>) {
    let texts = f.get_str_array("tokenizer.ggml.tokens").expect("tokens");
    let types = f.get_i32_array("tokenizer.ggml.token_type").expect("types");
    let scores = f.get_f32_array("tokenizer.ggml.scores").expect("scores");
    let mut keep: BTreeSet<u32> = (0..texts.len() as u32)
        .filter(|&i| matches!(types[i as usize], 2 | 3 | 6))
        .take(400)
        .collect();
    let mut normal: Vec<u32> = (0..texts.len() as u32)
        .filter(|&i| types[i as usize] == 1 && texts[i as usize].chars().count() <= 6)
        .collect();
    normal.sort_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]));
    keep.extend(normal.iter().take(n));
    // scores by rank, highest first, into the score bytes' ordinary range
    let rank: HashMap<u32, usize> = normal
        .iter()
        .take(n)
        .enumerate()
        .map(|(r, &i)| (i, r))
        .collect();
    let new_id = keep
        .iter()
        .enumerate()
        .map(|(new, &old)| (old, new as u16))
        .collect();
    let tokens = keep
        .iter()
        .map(|&id| Token {
            ty: types[id as usize] as u8,
            score: rank.get(&id).map_or(tk::score_byte(0.0), |&r| {
                tk::score_byte(150.0 - (r * 250 / n) as f32)
            }),
            text: texts[id as usize].clone(),
        })
        .collect();
    (tokens, new_id)
}

/// Special ids of `f`, renumbered into the small vocabulary (absent when cut out).
fn special_ids(f: &GgufFile, new_id: &HashMap<u32, u16>) -> [u16; 6] {
    let keys = [
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id",
    ];
    keys.map(|k| {
        f.opt_u32(k)
            .ok()
            .flatten()
            .and_then(|id| new_id.get(&id).copied())
            .unwrap_or(0xFFFF)
    })
}

fn tokenizer_seeds(smollm: &GgufFile, gemma: &GgufFile, out: &mut Seeds) {
    let (tokens, merges, new_id) = small_bpe(smollm, 700);
    let bpe = TokenizerCase {
        model: ModelKey::Gpt2,
        flags_a: 0,
        flags_b: tk::B_PARSE_SPECIAL | tk::B_NO_SCORES,
        special: special_ids(smollm, &new_id),
        text: format!("<|im_start|>user\n{TEXT}<|im_end|>\n"),
        pre: smollm
            .get_str("tokenizer.ggml.pre")
            .expect("pre")
            .to_string(),
        tokens,
        merges,
        extra_ids: vec![0, 1, 2, 300, u32::MAX],
    };
    out.write("smollm2_bpe", &bpe.to_bytes());
    for pre in [
        "default",
        "llama3",
        "qwen2",
        "gpt-4o",
        "deepseek-llm",
        "falcon",
        "tekken",
        "command-r",
        "",
    ] {
        let case = TokenizerCase {
            pre: pre.to_string(),
            flags_a: tk::A_ADD_BOS_SET | tk::A_ADD_BOS,
            flags_b: tk::B_PARSE_SPECIAL | tk::B_DECODE_SPECIAL,
            ..bpe.clone()
        };
        out.write(
            &format!("bpe_pre_{}", if pre.is_empty() { "empty" } else { pre }),
            &case.to_bytes(),
        );
    }
    let gemma4 = TokenizerCase {
        model: ModelKey::Gemma4,
        ..bpe.clone()
    };
    out.write("bpe_gemma4", &gemma4.to_bytes());

    let (tokens, new_id) = small_spm(gemma, 300);
    let spm = TokenizerCase {
        model: ModelKey::Llama,
        flags_a: 0,
        flags_b: tk::B_PARSE_SPECIAL,
        special: special_ids(gemma, &new_id),
        text: format!("<start_of_turn>user\n{TEXT}<end_of_turn>\n"),
        pre: "default".into(),
        tokens,
        merges: Vec::new(),
        extra_ids: vec![0, 1, 2, 3, 250, u32::MAX],
    };
    out.write("gemma3_spm", &spm.to_bytes());
    let no_prefix = TokenizerCase {
        flags_a: tk::A_PREFIX_SET | tk::A_ADD_EOS_SET | tk::A_ADD_EOS | tk::A_SCORES_I32,
        flags_b: tk::B_DECODE_SPECIAL | tk::B_NO_MERGES,
        ..spm.clone()
    };
    out.write("gemma3_spm_no_prefix", &no_prefix.to_bytes());
}

/// The `const NAME: &str = ...;` string literals of a Rust source (plain with `\n`, `\"`, `\\`
/// escapes, or raw `r#"..."#`).
fn rust_str_consts(src: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(at) = rest.find("\nconst ") {
        rest = &rest[at + 7..];
        let Some((name, after)) = rest.split_once(": &str = ") else {
            continue;
        };
        let value = if let Some(raw) = after.strip_prefix("r#\"") {
            raw.split_once("\"#;").map(|(v, _)| v.to_string())
        } else if let Some(s) = after.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = s.chars();
            loop {
                match chars.next() {
                    Some('"') | None => break,
                    Some('\\') => match chars.next() {
                        Some('n') => v.push('\n'),
                        Some('t') => v.push('\t'),
                        Some(c) => v.push(c),
                        None => break,
                    },
                    Some(c) => v.push(c),
                }
            }
            Some(v)
        } else {
            None
        };
        if let Some(v) = value {
            out.push((name.to_lowercase(), v));
        }
    }
    out
}

fn chat_template_seeds(smollm: &GgufFile, out: &mut Seeds) {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/chat_template.rs");
    let src = std::fs::read_to_string(&tests).expect("the engine's chat template tests");
    let mut templates = rust_str_consts(&src);
    templates.push((
        "smollm2_gguf".into(),
        smollm
            .get_str("tokenizer.chat_template")
            .expect("SmolLM2's template")
            .to_string(),
    ));
    let conversations = [
        vec![
            ChatMessage::system("You are terse."),
            ChatMessage::user("Hi! <|im_end|> {{ not a tag }}"),
            ChatMessage::assistant("Hello.\n"),
            ChatMessage::user("  What is 2+2?  "),
        ],
        vec![ChatMessage::user("one"), ChatMessage::assistant("two")],
    ];
    for (name, template) in templates {
        for (i, messages) in conversations.iter().enumerate() {
            let case = ChatTemplateCase {
                add_generation_prompt: i == 0,
                n_prev: 2,
                template: template.clone(),
                bos_token: "<s>".into(),
                eos_token: "</s>".into(),
                messages: messages.clone(),
            };
            out.write(&format!("{name}_{i}"), &case.to_bytes());
        }
    }
    for (i, h) in hostile::cases().into_iter().enumerate() {
        let case = ChatTemplateCase {
            add_generation_prompt: true,
            n_prev: 1,
            template: h.source,
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
            messages: conversations[1].clone(),
        };
        out.write(&format!("hostile_{i:03}"), &case.to_bytes());
    }
}

fn model_loader_seeds(out: &mut Seeds) {
    let key = |name: &str| {
        KEYS.iter()
            .position(|(k, _)| k.ends_with(name))
            .expect("a key of the model loader")
    };
    let tiny = ModelCase::tiny();
    out.write("tiny", &tiny.to_bytes());
    let with = |changes: &[(&str, Slot)], geometry: &[(usize, u8)]| {
        let mut c = tiny.clone();
        for &(k, s) in changes {
            c.slots[key(k)] = s;
        }
        for &(i, b) in geometry {
            c.geometry[i] = b;
        }
        c.to_bytes()
    };
    let absent = Slot {
        mode: 5,
        value: [0; 8],
    };
    let interesting = |i: u8| Slot {
        mode: 3,
        value: [i, 0, 0, 0, 0, 0, 0, 0],
    };
    // geometry byte 0: bit 1 untied head; byte 7: matrix type (low nibble), norm type (high)
    out.write("untied_q8_0", &with(&[], &[(0, 2), (7, 2)]));
    out.write("q4_0", &with(&[], &[(7, 3)]));
    out.write("f16_norms_f16", &with(&[], &[(7, 0x11)]));
    out.write(
        "defaults_absent",
        &with(
            &[
                ("head_count_kv", absent),
                ("rope.dimension_count", absent),
                ("rope.freq_base", absent),
            ],
            &[],
        ),
    );
    out.write(
        "too_many_layers",
        &with(&[("block_count", interesting(4))], &[]),
    );
    out.write("eps_nan", &with(&[("rms_epsilon", interesting(4))], &[]));
    out.write(
        "rope_scaling",
        &with(
            &[
                ("rope.scaling.type", interesting(5)),
                (
                    "rope.scaling.factor",
                    Slot {
                        mode: 7,
                        value: [0, 0, 0x80, 0x40, 0, 0, 0, 0],
                    },
                ),
            ],
            &[],
        ),
    );
    // bit 0: widths from bytes 1-5 (one layer, width 32 = DIMS[5], ff 64, kv 16, vocab 256)
    out.write(
        "one_layer_narrow",
        &with(&[], &[(0, 1), (1, 1), (2, 5), (3, 8), (4, 3), (5, 11)]),
    );
}
