//! Behaviour on the two test models beyond the reference list: special tokens, special ids and
//! flags, round trips, streaming, decoding of control tokens, speed.

mod common;

use common::*;
use rustorch_tokenizer::{StreamDecoder, Tokenizer};
use std::time::{Duration, Instant};

fn both() -> [(&'static str, &'static Tokenizer); 2] {
    [("smollm2", smollm()), ("gemma3", gemma())]
}

#[test]
fn special_ids_and_flags() {
    let s = smollm();
    assert_eq!(s.kind(), "gpt2 (byte-level BPE)");
    assert_eq!(s.n_vocab(), 49152);
    assert_eq!((s.bos(), s.eos(), s.pad()), (Some(1), Some(2), Some(2)));
    // no eot key: llama.cpp takes the first of <|endoftext|> / <|im_end|> in its hash map's
    // iteration order, which is <|endoftext|>
    assert_eq!(s.eot(), Some(0));
    assert!(!s.add_bos());
    assert!(!s.add_eos());
    // <reponame> is found as the FIM repo token, which is end-of-generation too
    assert_eq!(s.eog_ids().collect::<Vec<_>>(), [0, 2, 4]);
    assert!(s.is_eog(2) && s.is_eog(0) && !s.is_eog(1));
    assert_eq!(s.token_text(1), "<|im_start|>");

    let g = gemma();
    assert_eq!(g.kind(), "llama (SentencePiece)");
    assert_eq!(g.n_vocab(), 262144);
    assert_eq!(
        (g.bos(), g.eos(), g.eot(), g.pad()),
        (Some(2), Some(1), Some(106), Some(0))
    );
    assert!(g.add_bos());
    // <eos>, <end_of_turn>, and the user-defined "</s>" that llama.cpp's text list catches
    assert_eq!(g.eog_ids().collect::<Vec<_>>(), [1, 106, 212]);
    assert!(!g.is_eog(105));
    assert_eq!(g.token_text(106), "<end_of_turn>");
    assert_eq!(g.token_id("<start_of_turn>"), Some(105));
    assert_eq!(g.token_text(u32::MAX), "");
}

#[test]
fn control_tokens_only_when_parse_special() {
    let s = smollm();
    let text = "<|im_start|>user\nhi<|im_end|>";
    assert_eq!(s.encode(text, true, true), [1, 4093, 198, 6004, 2]);
    let plain = s.encode(text, true, false);
    assert!(!plain.contains(&1) && !plain.contains(&2), "{plain:?}");
    assert_eq!(s.decode(&plain, false), text);

    let g = gemma();
    let text = "<start_of_turn>user\nhi<end_of_turn>\n";
    assert_eq!(
        g.encode(text, true, true),
        [2, 105, 2364, 107, 2202, 106, 107]
    );
    let plain = g.encode(text, false, false);
    assert!(!plain.contains(&105) && !plain.contains(&106), "{plain:?}");
    assert_eq!(g.decode(&plain, false), text);
}

#[test]
fn user_defined_tokens_always_split() {
    let g = gemma();
    // Gemma's runs of newlines and spaces are user-defined: cut out even as plain text
    let ids = g.encode("a\n\n\nb   c\t\td", false, false);
    assert_eq!(ids, [236746, 109, 236763, 139, 236755, 255969, 236753]);
    assert_eq!(ids, g.encode("a\n\n\nb   c\t\td", false, true));
    // "<s>" is user-defined; "</s>" is too, but llama.cpp makes it a control token (it is on its
    // end-of-generation list), so as plain text it is not cut out
    assert_eq!(
        g.encode("</s>x<s>", false, false),
        [954, 236751, 236813, 236781, 203]
    );
    assert_eq!(g.encode("</s>x<s>", false, true), [212, 236781, 203]);
}

/// The byte range of the first `part` in `text`.
fn range_of(text: &str, part: &str) -> std::ops::Range<usize> {
    let at = text.find(part).expect("part of the text");
    at..at + part.len()
}

#[test]
fn literal_ranges_without_special_text_change_nothing() {
    let text = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello world, 1 < 2 > 0<|im_end|>\n<|im_start|>assistant\n";
    let literal = [
        range_of(text, "Be brief."),
        range_of(text, "Hello world, 1 < 2 > 0"),
    ];
    for (name, tok) in both() {
        for add_special in [false, true] {
            let want = tok.encode(text, add_special, true);
            assert_eq!(
                tok.encode_with_literals(text, add_special, &literal),
                want,
                "{name}"
            );
            assert_eq!(
                tok.encode_with_literals(text, add_special, &[]),
                want,
                "{name}"
            );
        }
    }
}

#[test]
fn control_token_text_in_a_literal_range_stays_text() {
    let s = smollm();
    let text = "<|im_start|>user\nsay <|im_start|>system now<|im_end|>\n";
    let literal = [range_of(text, "say <|im_start|>system now")];
    let ids = s.encode_with_literals(text, false, &literal);
    // The text between the template's two markers is one fragment, tokenized as plain text.
    let mut want = vec![1];
    want.extend(s.encode("user\nsay <|im_start|>system now", false, false));
    want.extend([2, 198]);
    assert_eq!(ids, want);
    assert_eq!(ids.iter().filter(|&&t| t == 1).count(), 1, "{ids:?}");
    assert_eq!(s.decode(&ids, true), text);
    // The same text outside the literal range is a token.
    assert_eq!(
        s.encode(text, false, true)
            .iter()
            .filter(|&&t| t == 1)
            .count(),
        2
    );
}

#[test]
fn a_match_straddling_a_literal_range_stays_text() {
    let s = smollm();
    let text = "ab<|im_end|>cd<|im_end|>";
    let plain = s.encode("ab<|im_end|>cd", false, false);
    let with_last = |mut v: Vec<u32>| {
        v.push(2);
        v
    };
    // The range ends in the first match, lies in it, or starts in it: that match stays text,
    // the second (outside) is a token.
    for literal in [0..4, 5..7, 11..12] {
        assert_eq!(
            s.encode_with_literals(text, false, std::slice::from_ref(&literal)),
            with_last(plain.clone()),
            "{literal:?}"
        );
    }
    // Ranges that only touch a match leave it a token.
    for literal in [0..2, 12..14] {
        assert_eq!(
            s.encode_with_literals(text, false, std::slice::from_ref(&literal)),
            s.encode(text, false, true),
            "{literal:?}"
        );
    }
}

#[test]
fn add_special_follows_the_vocabulary() {
    assert_eq!(smollm().encode("", true, true), Vec::<u32>::new());
    assert_eq!(gemma().encode("", true, true), [2]);
    assert_eq!(gemma().encode("", false, true), Vec::<u32>::new());
    assert_eq!(gemma().encode("Hello world", false, true), [9259, 1902]);
    assert_eq!(smollm().encode("Hello world", true, true), [19556, 905]);
}

const ROUND_TRIP: &[&str] = &[
    "Hello world",
    " leading space and trailing space ",
    "héllo wörld — naïve café, Ångström, Æsir, ß",
    "世界 こんにちは 안녕하세요 中文字符串测试",
    "emoji 🎉🚀 done 👩‍👩‍👧‍👦 🇫🇷 ✅ 😶‍🌫️",
    "1234567890 3.14159 1,000,000 007",
    "I'm can't won't they'll we've she'd you're IT'S",
    "fn main() {\n\tlet x = 1;\n    println!(\"{x}\");\n}\n",
    "        eight spaces\t\t\ttabs\r\n\r\nCRLF\n\n\n\nnewlines",
    "Здравствуй, мир! Γειά σου Κόσμε! مرحبا بالعالم שלום עולם",
    "combining: e\u{301} a\u{308} and zero width\u{200B}joiner",
    "rare: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u{E000} \u{10FFFD} \u{1F9FF}",
    "control chars \u{1}\u{7f} and nbsp\u{a0}here\u{3000}ideographic",
    "<|im_start|>text that looks special<|im_end|> <start_of_turn> <eos>",
    "!!!??? ... ,,, --- ((()))",
];

#[test]
fn decode_inverts_encode() {
    for (name, tok) in both() {
        for &text in ROUND_TRIP {
            let ids = tok.encode(text, false, false);
            assert_eq!(tok.decode(&ids, false), text, "{name}: {ids:?}");
            // with BOS (rendered as nothing) in front
            let ids = tok.encode(text, true, false);
            assert_eq!(tok.decode(&ids, false), text, "{name}: {ids:?}");
        }
    }
}

#[test]
fn decode_renders_control_tokens_only_when_special() {
    let s = smollm();
    let ids = [1, 4093, 198, 26843, 2];
    assert_eq!(s.decode(&ids, false), "user\nHi");
    assert_eq!(s.decode(&ids, true), "<|im_start|>user\nHi<|im_end|>");
    assert_eq!(s.token_to_piece(2, false), b"");
    assert_eq!(s.token_to_piece(2, true), b"<|im_end|>");
    // byte-level BPE: "Ġworld" is " world"
    assert_eq!(s.token_to_piece(905, false), b" world");

    let g = gemma();
    assert_eq!(g.decode(&[2, 9259, 1902], false), "Hello world");
    assert_eq!(g.decode(&[2, 9259, 1902], true), "<bos>Hello world");
    assert_eq!(
        g.decode(&[105, 2364, 107, 106], true),
        "<start_of_turn>user\n<end_of_turn>"
    );
    // user-defined tokens render either way
    assert_eq!(g.token_to_piece(139, false), b"   ");
    assert_eq!(g.token_to_piece(203, false), b"<s>");
    // byte fallback tokens are single bytes
    assert_eq!(g.token_to_piece(478, false), [0xF0]);
    assert_eq!(g.token_to_piece(u32::MAX, true), b"");
}

fn stream(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    let mut d = StreamDecoder::new(tok);
    let mut out: Vec<String> = ids.iter().map(|&id| d.push(id)).collect();
    out.push(d.flush());
    out
}

#[test]
fn stream_decoder_waits_for_whole_characters() {
    // "𝔘" is four byte-fallback tokens in Gemma: nothing until the last one
    let g = gemma();
    let ids = g.encode("a𝔘b", false, false);
    assert_eq!(ids, [236746, 478, 395, 386, 390, 236763]);
    assert_eq!(stream(g, &ids), ["a", "", "", "", "𝔘", "b", ""]);

    // byte-level BPE splits the emoji's bytes over tokens the same way
    let s = smollm();
    let ids = s.encode("emoji 🎉🚀 done", false, false);
    assert_eq!(ids, [391, 33777, 15107, 232, 227, 10813, 244, 218, 2294]);
    let parts = stream(s, &ids);
    assert_eq!(parts.concat(), "emoji 🎉🚀 done");
    assert!(
        parts.iter().all(|p| p.chars().all(|c| c != '\u{FFFD}')),
        "{parts:?}"
    );

    // control tokens are silent by default, rendered on request
    assert_eq!(stream(s, &[1, 4093, 2]).concat(), "user");
    let mut d = StreamDecoder::with_special(s, true);
    assert_eq!(d.push(1), "<|im_start|>");

    // an incomplete character left at the end comes out as U+FFFD
    assert_eq!(stream(g, &[478, 395]), ["", "", "\u{FFFD}"]);
    // a byte that cannot start a character is replaced at once
    assert_eq!(stream(g, &[395, 236746]), ["\u{FFFD}", "a", ""]);
}

#[test]
fn gpl3_round_trips_quickly() {
    let text = std::fs::read_to_string(reference_dir().join("texts/GPL-3")).unwrap();
    for (name, tok) in both() {
        let t = Instant::now();
        let ids = tok.encode(&text, true, true);
        let took = t.elapsed();
        // well under a second in release; generous so a loaded debug run still passes
        let limit = if cfg!(debug_assertions) {
            Duration::from_secs(20)
        } else {
            Duration::from_millis(500)
        };
        assert!(took < limit, "{name}: {} bytes took {took:?}", text.len());
        assert_eq!(tok.decode(&ids, false), text, "{name}");
    }
}

#[test]
fn long_runs_stay_fast() {
    let cases = [
        " ".repeat(50_000) + "x",
        "a".repeat(50_000),
        "7".repeat(50_000),
        "🎉".repeat(20_000),
        "\n".repeat(50_000),
        "<|im_start|><end_of_turn>".repeat(2_000),
    ];
    for (name, tok) in both() {
        for text in &cases {
            let t = Instant::now();
            let ids = tok.encode(text, false, true);
            let took = t.elapsed();
            let limit = if cfg!(debug_assertions) {
                Duration::from_secs(30)
            } else {
                Duration::from_secs(1)
            };
            assert!(took < limit, "{name}: {:?}... took {took:?}", &text[..8]);
            assert!(!ids.is_empty());
        }
    }
}

/// Random code points from every plane, mixed with special-token text: nothing panics, and the
/// stream decoder gives the same text as `decode` (neither model strips or cleans spaces).
#[test]
fn random_text_never_panics() {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let specials = [
        "<|im_start|>",
        "<end_of_turn>",
        "</s>",
        "<bos>",
        "  ",
        "\n\n",
        "\t",
    ];
    for (name, tok) in both() {
        for _ in 0..300 {
            let mut text = String::new();
            for _ in 0..next() % 40 {
                let r = next();
                if r % 10 == 0 {
                    text.push_str(specials[(r / 10 % specials.len() as u64) as usize]);
                } else if let Some(c) = char::from_u32(match r % 4 {
                    0 => (r >> 8) as u32 % 0x80,
                    1 => (r >> 8) as u32 % 0x3000,
                    _ => (r >> 8) as u32 % 0x110000,
                }) {
                    text.push(c);
                }
            }
            for (add, parse) in [(true, true), (false, false)] {
                let ids = tok.encode(&text, add, parse);
                assert!(
                    ids.iter().all(|&id| (id as usize) < tok.n_vocab()),
                    "{name}"
                );
                for special in [false, true] {
                    let whole = tok.decode(&ids, special);
                    let mut d = StreamDecoder::with_special(tok, special);
                    let mut streamed: String = ids.iter().map(|&id| d.push(id)).collect();
                    streamed.push_str(&d.flush());
                    assert_eq!(streamed, whole, "{name}: {text:?}");
                }
            }
        }
    }
}
