//! Small vocabularies built in memory: the algorithms' rules one at a time, llama.cpp's defaults
//! for absent metadata, and errors on bad metadata.

use rustorch_tokenizer::{MetaValue, MetadataMap, Tokenizer, TokenizerError};

fn strs(v: &[&str]) -> MetaValue {
    MetaValue::StrArray(v.iter().map(|s| s.to_string()).collect())
}

/// A SentencePiece vocabulary: `<unk> <s> </s>`, the 256 byte tokens, then `pieces` with scores.
fn spm(pieces: &[(&str, f32)], extra: &[(&str, MetaValue)]) -> Result<Tokenizer, TokenizerError> {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let mut scores = vec![0.0; tokens.len()];
    for &(p, s) in pieces {
        tokens.push(p.to_string());
        types.push(1);
        scores.push(s);
    }
    let mut m = MetadataMap::new();
    m.insert(
        "tokenizer.ggml.model".into(),
        MetaValue::Str("llama".into()),
    );
    m.insert("tokenizer.ggml.tokens".into(), MetaValue::StrArray(tokens));
    m.insert("tokenizer.ggml.scores".into(), MetaValue::F32Array(scores));
    m.insert(
        "tokenizer.ggml.token_type".into(),
        MetaValue::I32Array(types),
    );
    for (k, v) in extra {
        m.insert(k.to_string(), v.clone());
    }
    Tokenizer::from_metadata(&m)
}

/// A byte-level BPE vocabulary from tokens (already byte-encoded) and merges.
fn bpe_meta(tokens: &[&str], merges: &[&str], pre: Option<&str>) -> MetadataMap {
    let mut m = MetadataMap::new();
    m.insert("tokenizer.ggml.model".into(), MetaValue::Str("gpt2".into()));
    m.insert("tokenizer.ggml.tokens".into(), strs(tokens));
    m.insert("tokenizer.ggml.merges".into(), strs(merges));
    if let Some(p) = pre {
        m.insert("tokenizer.ggml.pre".into(), MetaValue::Str(p.into()));
    }
    m
}

fn id(t: &Tokenizer, text: &str) -> u32 {
    t.token_id(text)
        .unwrap_or_else(|| panic!("no token {text:?}"))
}

#[test]
fn spm_merges_the_best_scoring_pair_first() {
    let pieces = [
        ("▁", -5.0),
        ("a", -3.0),
        ("b", -3.0),
        ("c", -3.0),
        ("▁a", -2.0),
        ("ab", -1.0),
        ("bc", -0.5),
        ("▁abc", -4.0),
    ];
    let t = spm(&pieces, &[]).unwrap();
    // "▁abc": bc (-0.5) beats ab (-1) and ▁a (-2); then ▁a merges, and "▁abc" is a token
    assert_eq!(t.encode("abc", false, false), [id(&t, "▁abc")]);
    // without "▁abc" reachable: "▁ab" + "c" is not a path, so ▁a | bc
    let t = spm(&pieces[..7], &[]).unwrap();
    assert_eq!(t.encode("abc", false, false), [id(&t, "▁a"), id(&t, "bc")]);
}

#[test]
fn spm_defaults_and_byte_fallback() {
    let t = spm(&[("▁", -1.0), ("a", -1.0), ("▁a", -0.5)], &[]).unwrap();
    assert_eq!(t.kind(), "llama (SentencePiece)");
    // llama.cpp's SentencePiece defaults: <s> = 1, </s> = 2, <unk> = 0, BOS added, space prefix
    assert_eq!((t.bos(), t.eos(), t.unk()), (Some(1), Some(2), Some(0)));
    assert!(t.add_bos() && !t.add_eos());
    assert_eq!(t.encode("a", true, false), [1, id(&t, "▁a")]);
    // é is not a token: its two UTF-8 bytes
    assert_eq!(
        t.encode("é", false, false),
        [id(&t, "▁"), 3 + 0xC3, 3 + 0xA9]
    );
    assert_eq!(t.decode(&t.encode("é a", false, false), false), "é a");
    // the space prefix comes off the first token only, and not off BOS's empty piece... which
    // is llama.cpp's rule: BOS takes the strip, the word after it keeps its space
    assert_eq!(t.decode(&[id(&t, "▁a"), id(&t, "▁a")], false), "a a");
    assert_eq!(t.decode(&[1, id(&t, "▁a")], false), " a");
    // a space also goes in front of text that follows a special token
    assert_eq!(t.encode("<s>a", false, true), [1, id(&t, "▁a")]);
    assert_eq!(
        t.encode("a</s>a", false, true),
        [id(&t, "▁a"), 2, id(&t, "▁a")]
    );
}

#[test]
fn spm_metadata_overrides() {
    let extra = [
        ("tokenizer.ggml.add_space_prefix", MetaValue::Bool(false)),
        ("tokenizer.ggml.add_bos_token", MetaValue::Bool(false)),
        ("tokenizer.ggml.add_eos_token", MetaValue::Bool(true)),
        ("tokenizer.ggml.bos_token_id", MetaValue::U32(2)),
        // out of range: llama.cpp keeps the default
        ("tokenizer.ggml.eos_token_id", MetaValue::U32(1_000_000)),
    ];
    let t = spm(&[("▁", -1.0), ("a", -1.0), ("▁a", -0.5)], &extra).unwrap();
    assert_eq!((t.bos(), t.eos()), (Some(2), Some(2)));
    assert!(!t.add_bos() && t.add_eos());
    assert_eq!(t.encode("a", true, false), [id(&t, "a"), 2]);
}

#[test]
fn bpe_merges_by_rank() {
    // byte-level: "Ġ" is the space
    let tokens = ["a", "b", "c", "Ġ", "ab", "bc", "Ġa", "Ġab", "<|endoftext|>"];
    let merges = ["b c", "a b", "Ġ a", "Ġa b"];
    let t = Tokenizer::from_metadata(&bpe_meta(&tokens, &merges, Some("gpt-2"))).unwrap();
    assert_eq!(t.kind(), "gpt2 (byte-level BPE)");
    // "abc": b c has rank 0, so a | bc, though "ab" exists
    assert_eq!(t.encode("abc", false, false), [0, 5]);
    // " ab": a b (rank 1) goes before Ġ a (rank 2), and "Ġ ab" is no merge: Ġ | ab,
    // though the token "Ġab" exists
    assert_eq!(t.encode(" ab", false, false), [3, 4]);
    assert_eq!(t.encode(" a", false, false), [6]);
    // the default BOS/EOS id 11 is outside this vocabulary: none
    assert_eq!((t.bos(), t.eos()), (None, None));
    // <|endoftext|> is on llama.cpp's EOT and EOG lists
    assert_eq!(t.eot(), Some(8));
    assert!(t.is_eog(8));
    // unknown characters have no byte tokens here: dropped, as llama.cpp drops them
    assert_eq!(t.encode("aé", false, false), [0]);
}

#[test]
fn llama3_preset_adds_bos_and_ignores_merges_for_known_words() {
    let tokens = ["h", "e", "l", "o", "hello", "Ġ", "<|begin_of_text|>", "!"];
    let mut m = bpe_meta(&tokens, &["h e"], Some("llama-bpe"));
    m.insert("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(6));
    let t = Tokenizer::from_metadata(&m).unwrap();
    assert!(t.add_bos());
    // no merges lead to "hello", but a whole word in the vocabulary is taken as is
    assert_eq!(t.encode("hello!", true, false), [6, 4, 7]);
    // with the gpt-2 preset the merges decide
    let t = Tokenizer::from_metadata(&bpe_meta(&tokens, &["h e"], Some("gpt-2"))).unwrap();
    assert!(!t.add_bos());
    assert!(!t.encode("hello", false, false).contains(&4));
}

#[test]
fn clean_spaces_on_decode_for_gpt2_presets() {
    let tokens = ["a", "Ġ", ",", "Ġ,", "'", "s", "Ġ'"];
    let t = Tokenizer::from_metadata(&bpe_meta(&tokens, &[], Some("gpt-2"))).unwrap();
    // " ," loses its space; "a 's" loses the space before the contraction
    assert_eq!(t.decode(&[0, 3, 1, 0, 6, 5], false), "a, a's");
    // smollm keeps text as is
    let t = Tokenizer::from_metadata(&bpe_meta(&tokens, &[], Some("smollm"))).unwrap();
    assert_eq!(t.decode(&[0, 3, 1, 0, 6, 5], false), "a , a 's");
}

#[test]
fn bad_metadata_is_an_error() {
    let err = |m: &MetadataMap| Tokenizer::from_metadata(m).err().expect("should fail");
    let ok = bpe_meta(&["a", "b"], &["a b"], None);
    // no pre-tokenizer: llama.cpp's default
    assert!(Tokenizer::from_metadata(&ok).is_ok());

    let mut m = ok.clone();
    m.remove("tokenizer.ggml.model");
    assert!(matches!(
        err(&m),
        TokenizerError::MissingKey {
            key: "tokenizer.ggml.model"
        }
    ));

    let mut m = ok.clone();
    m.insert("tokenizer.ggml.model".into(), MetaValue::Str("bert".into()));
    assert!(matches!(err(&m), TokenizerError::UnsupportedModel { .. }));

    let mut m = ok.clone();
    m.insert(
        "tokenizer.ggml.pre".into(),
        MetaValue::Str("no-such-pre".into()),
    );
    let e = err(&m);
    assert!(matches!(e, TokenizerError::UnknownPreTokenizer { .. }));
    assert!(e.to_string().contains("no-such-pre"));

    let mut m = ok.clone();
    m.remove("tokenizer.ggml.merges");
    assert!(matches!(
        err(&m),
        TokenizerError::MissingKey {
            key: "tokenizer.ggml.merges"
        }
    ));

    let mut m = ok.clone();
    m.insert(
        "tokenizer.ggml.scores".into(),
        MetaValue::F32Array(vec![0.0]),
    );
    assert!(matches!(
        err(&m),
        TokenizerError::ArrayTooShort {
            len: 1,
            n_tokens: 2,
            ..
        }
    ));

    let mut m = ok.clone();
    m.insert("tokenizer.ggml.tokens".into(), strs(&["a", "a"]));
    assert!(matches!(
        err(&m),
        TokenizerError::DuplicateToken {
            first: 0,
            second: 1,
            ..
        }
    ));

    let mut m = ok.clone();
    m.insert("tokenizer.ggml.tokens".into(), strs(&[]));
    assert!(matches!(
        err(&m),
        TokenizerError::BadVocabSize { n_tokens: 0 }
    ));

    let mut m = ok;
    m.insert(
        "tokenizer.ggml.bos_token_id".into(),
        MetaValue::Str("1".into()),
    );
    assert!(matches!(err(&m), TokenizerError::WrongType { .. }));
}

#[test]
fn every_known_pre_tokenizer_builds() {
    // every name llama.cpp accepts compiles to splitters (or is refused as unsupported)
    let names = [
        "default",
        "llama3",
        "llama-bpe",
        "deepseek-llm",
        "deepseek-coder",
        "deepseek-v3",
        "falcon",
        "mpt",
        "starcoder",
        "gpt-2",
        "refact",
        "command-r",
        "qwen2",
        "qwen35",
        "stablelm2",
        "olmo",
        "dbrx",
        "smaug-bpe",
        "poro-chat",
        "chatglm-bpe",
        "viking",
        "jais",
        "jais-2",
        "tekken",
        "smollm",
        "codeshell",
        "bloom",
        "gpt3-finnish",
        "exaone",
        "exaone4",
        "exaone-moe",
        "chameleon",
        "minerva-7b",
        "megrez",
        "gpt-4o",
        "granite-embed-multi-97m",
        "tiny_aya",
        "superbpe",
        "trillion",
        "granite-docling",
        "bailingmoe",
        "seed-coder",
        "hunyuan",
        "hunyuan-dense",
        "hy_v4",
        "joyai-llm",
        "ufakzeka",
        "grok-2",
        "afmoe",
        "laguna",
        "minimax-m2",
        "solar-open",
        "mellum2",
        "minicpm5",
        "youtu",
        "spark2_5",
        "whitespace",
        "gemma4",
        "sarvam-moe",
    ];
    for name in names {
        let m = bpe_meta(&["a", "b", "Ġ", "1"], &["a b"], Some(name));
        let t = Tokenizer::from_metadata(&m).unwrap_or_else(|e| panic!("{name}: {e}"));
        let _ = t.encode("a b 1 ab, ok?\n", false, false);
    }
    let m = bpe_meta(&["a"], &["a b"], Some("kimi-k2"));
    assert!(matches!(
        Tokenizer::from_metadata(&m),
        Err(TokenizerError::UnsupportedPreTokenizer { .. })
    ));
}
