//! A vocabulary from a small GGUF (every `tokenizer.ggml.*` key the loader reads, written with
//! our own writer) and a text: building the tokenizer gives a tokenizer or an error; encoding
//! gives ids inside the vocabulary; decoding and stream-decoding any ids never panic, and the
//! stream decoder releases exactly the bytes of the pieces.
//!
//! Input: a 15-byte header, then sections (see [`crate::input`]):
//!
//! | bytes | meaning |
//! | --- | --- |
//! | 0 | `tokenizer.ggml.model`: `% 5` → llama, gpt2, gemma4, section 4's text, absent |
//! | 1 | flags [`A_*`] |
//! | 2 | flags [`B_*`] |
//! | 3..15 | bos, eos, eot, eom, unk, pad ids: u16 LE each; `0xFFFF` absent, `0xFFFE` u32::MAX |
//!
//! Sections: 0 the text; 1 `tokenizer.ggml.pre`; 2 the tokens, one item each: a type byte
//! (`% 8`), a score byte (see [`score_of`]) and the token's text; 3 the merges, one item each;
//! 4 the model name when byte 0 asks for it; 5 more ids to decode, 3 bytes each (7 bits of each
//! byte, low first, so no byte is a separator; `0x1FFFFF` stands for u32::MAX).

use rustorch_gguf::{Array, GgufFile, GgufWriter, Value};
use rustorch_tokenizer::{StreamDecoder, Tokenizer};

use crate::input::{lossless, Parts, Writer};

pub const A_ADD_BOS_SET: u8 = 1 << 0;
pub const A_ADD_BOS: u8 = 1 << 1;
pub const A_ADD_EOS_SET: u8 = 1 << 2;
pub const A_ADD_EOS: u8 = 1 << 3;
pub const A_PREFIX_SET: u8 = 1 << 4;
pub const A_PREFIX: u8 = 1 << 5;
/// Scores written as an i32 array (llama.cpp accepts both).
pub const A_SCORES_I32: u8 = 1 << 6;
pub const A_NO_TOKEN_TYPE: u8 = 1 << 7;
pub const B_NO_SCORES: u8 = 1 << 0;
/// Scores one entry shorter than the tokens.
pub const B_SHORT_SCORES: u8 = 1 << 1;
pub const B_NO_MERGES: u8 = 1 << 2;
pub const B_NO_PRE: u8 = 1 << 3;
pub const B_PARSE_SPECIAL: u8 = 1 << 4;
pub const B_DECODE_SPECIAL: u8 = 1 << 5;

const HEADER: usize = 15;
const SPECIAL_KEYS: [&str; 6] = [
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
];
const ID_ABSENT: u16 = 0xFFFF;
const ID_MAX: u16 = 0xFFFE;
const EXTRA_ID_MAX: u32 = 0x1F_FFFF;

/// Score byte → score: `b - 100`, except three bytes for the values a file may hold but no
/// tokenizer should meet.
pub fn score_of(b: u8) -> f32 {
    match b {
        0xFD => f32::NAN,
        0xFC => f32::NEG_INFINITY,
        0xFB => f32::INFINITY,
        b => f32::from(b) - 100.0,
    }
}

/// Score → the byte that stands for it (clamped to the ordinary range).
pub fn score_byte(score: f32) -> u8 {
    (score.round().clamp(-100.0, 150.0) + 100.0) as u8
}

/// `tokenizer.ggml.model`.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelKey {
    Llama,
    Gpt2,
    Gemma4,
    Other(String),
    Absent,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// `tokenizer.ggml.token_type` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte)
    pub ty: u8,
    pub score: u8,
    pub text: String,
}

/// One tokenizer input, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerCase {
    pub model: ModelKey,
    pub flags_a: u8,
    pub flags_b: u8,
    /// bos, eos, eot, eom, unk, pad as in the header.
    pub special: [u16; 6],
    pub text: String,
    pub pre: String,
    pub tokens: Vec<Token>,
    pub merges: Vec<String>,
    pub extra_ids: Vec<u32>,
}

impl TokenizerCase {
    pub fn parse(data: &[u8]) -> TokenizerCase {
        let p = Parts::<HEADER>::split(data);
        let h = p.header;
        let model = match h[0] % 5 {
            0 => ModelKey::Llama,
            1 => ModelKey::Gpt2,
            2 => ModelKey::Gemma4,
            3 => ModelKey::Other(p.text(4)),
            _ => ModelKey::Absent,
        };
        let tokens = p
            .items(2)
            .into_iter()
            .map(|item| Token {
                ty: item.first().map_or(1, |t| t % 8),
                score: item.get(1).copied().unwrap_or(100),
                text: String::from_utf8_lossy(item.get(2..).unwrap_or(&[])).into_owned(),
            })
            .collect();
        let merges = p
            .items(3)
            .into_iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect();
        let extra_ids = p
            .section(5)
            .chunks_exact(3)
            .map(|c| {
                match c
                    .iter()
                    .rev()
                    .fold(0, |id, &b| id << 7 | u32::from(b & 0x7F))
                {
                    EXTRA_ID_MAX => u32::MAX,
                    id => id,
                }
            })
            .collect();
        TokenizerCase {
            model,
            flags_a: h[1],
            flags_b: h[2],
            special: std::array::from_fn(|i| p.u16_at(3 + 2 * i)),
            text: p.text(0),
            pre: p.text(1),
            tokens,
            merges,
            extra_ids,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let (model_byte, model_name) = match &self.model {
            ModelKey::Llama => (0, ""),
            ModelKey::Gpt2 => (1, ""),
            ModelKey::Gemma4 => (2, ""),
            ModelKey::Other(name) => (3, name.as_str()),
            ModelKey::Absent => (4, ""),
        };
        let mut header = vec![model_byte, self.flags_a, self.flags_b];
        for id in self.special {
            header.extend_from_slice(&id.to_le_bytes());
        }
        let tokens: Vec<Vec<u8>> = self
            .tokens
            .iter()
            .map(|t| {
                let mut item = vec![t.ty, t.score];
                item.extend_from_slice(lossless(&t.text));
                item
            })
            .collect();
        let ids: Vec<u8> = self
            .extra_ids
            .iter()
            .flat_map(|&id| {
                let id = id.min(EXTRA_ID_MAX);
                [id & 0x7F, id >> 7 & 0x7F, id >> 14 & 0x7F].map(|b| b as u8)
            })
            .collect();
        Writer::new(&header)
            .section(lossless(&self.text))
            .section(lossless(&self.pre))
            .items(&tokens)
            .items(&self.merges)
            .section(lossless(model_name))
            .section(&ids)
            .finish()
    }

    /// The metadata of the GGUF the tokenizer is read from.
    pub fn metadata(&self) -> Vec<(String, Value)> {
        let (a, b) = (self.flags_a, self.flags_b);
        let mut md = vec![(
            "general.architecture".to_string(),
            Value::String("llama".into()),
        )];
        let mut put = |k: &str, v: Value| md.push((k.to_string(), v));
        match &self.model {
            ModelKey::Llama => put("tokenizer.ggml.model", Value::String("llama".into())),
            ModelKey::Gpt2 => put("tokenizer.ggml.model", Value::String("gpt2".into())),
            ModelKey::Gemma4 => put("tokenizer.ggml.model", Value::String("gemma4".into())),
            ModelKey::Other(s) => put("tokenizer.ggml.model", Value::String(s.clone())),
            ModelKey::Absent => {}
        }
        if b & B_NO_PRE == 0 {
            put("tokenizer.ggml.pre", Value::String(self.pre.clone()));
        }
        let texts = self.tokens.iter().map(|t| t.text.clone()).collect();
        put("tokenizer.ggml.tokens", Value::Array(Array::String(texts)));
        if b & B_NO_SCORES == 0 {
            let n = self.tokens.len() - usize::from(b & B_SHORT_SCORES != 0).min(self.tokens.len());
            let scores = self.tokens[..n].iter().map(|t| score_of(t.score));
            let array = if a & A_SCORES_I32 != 0 {
                Array::I32(scores.map(|s| s as i32).collect())
            } else {
                Array::F32(scores.collect())
            };
            put("tokenizer.ggml.scores", Value::Array(array));
        }
        if a & A_NO_TOKEN_TYPE == 0 {
            let types = self.tokens.iter().map(|t| i32::from(t.ty)).collect();
            put("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
        }
        if b & B_NO_MERGES == 0 {
            put(
                "tokenizer.ggml.merges",
                Value::Array(Array::String(self.merges.clone())),
            );
        }
        for (key, id) in SPECIAL_KEYS.iter().zip(self.special) {
            match id {
                ID_ABSENT => {}
                ID_MAX => put(key, Value::U32(u32::MAX)),
                id => put(key, Value::U32(u32::from(id))),
            }
        }
        for (set, val, key) in [
            (A_ADD_BOS_SET, A_ADD_BOS, "tokenizer.ggml.add_bos_token"),
            (A_ADD_EOS_SET, A_ADD_EOS, "tokenizer.ggml.add_eos_token"),
            (A_PREFIX_SET, A_PREFIX, "tokenizer.ggml.add_space_prefix"),
        ] {
            if a & set != 0 {
                put(key, Value::Bool(a & val != 0));
            }
        }
        md
    }
}

pub fn tokenizer(data: &[u8]) {
    let case = TokenizerCase::parse(data);
    let bytes = GgufWriter::new(Vec::new(), &case.metadata(), &[])
        .and_then(GgufWriter::finish)
        .expect("the writer accepts any set of distinct keys");
    let file = GgufFile::from_bytes(bytes).expect("the reader reads what the writer wrote");
    let Ok(tok) = Tokenizer::from_gguf(&file) else {
        return;
    };
    let n_vocab = tok.n_vocab();
    let parse_special = case.flags_b & B_PARSE_SPECIAL != 0;
    let special = case.flags_b & B_DECODE_SPECIAL != 0;
    let mut all_ids = Vec::new();
    for (add_special, parse_special) in [(true, parse_special), (false, !parse_special)] {
        let ids = tok.encode(&case.text, add_special, parse_special);
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= n_vocab) {
            panic!("encode gave id {bad} outside the vocabulary of {n_vocab}");
        }
        let _ = tok.decode(&ids, special);
        all_ids.extend(ids);
    }
    all_ids.extend(&case.extra_ids);
    let _ = tok.decode(&all_ids, !special);

    let mut stream = StreamDecoder::with_special(&tok, special);
    let mut streamed = String::new();
    let mut pieces = Vec::new();
    for &id in &all_ids {
        stream.push_into(id, &mut streamed);
        pieces.extend(tok.token_to_piece(id, special));
        let _ = (tok.is_eog(id), tok.is_control(id), tok.token_text(id));
    }
    streamed.push_str(&stream.flush());
    assert_eq!(
        streamed,
        String::from_utf8_lossy(&pieces),
        "the stream decoder released other text than its pieces"
    );
    for id in [
        tok.bos(),
        tok.eos(),
        tok.eot(),
        tok.eom(),
        tok.unk(),
        tok.pad(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(
            (id as usize) < n_vocab,
            "special id {id} outside the vocabulary"
        );
    }
    let _ = (
        tok.add_bos(),
        tok.add_eos(),
        tok.kind(),
        tok.eog_ids().count(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case() -> TokenizerCase {
        TokenizerCase {
            model: ModelKey::Gpt2,
            flags_a: A_ADD_BOS_SET | A_ADD_BOS,
            flags_b: B_PARSE_SPECIAL,
            special: [0, 0, ID_ABSENT, ID_ABSENT, ID_MAX, ID_ABSENT],
            text: "<s>hello world".into(),
            pre: "default".into(),
            tokens: ["<s>", "h", "e", "l", "o", "he", "ll", "hell", "hello"]
                .iter()
                .enumerate()
                .map(|(i, t)| Token {
                    ty: if i == 0 { 3 } else { 1 },
                    score: score_byte(-(i as f32)),
                    text: t.to_string(),
                })
                .collect(),
            merges: vec!["h e".into(), "l l".into(), "he ll".into(), "hell o".into()],
            extra_ids: vec![1, 2, 300, u32::MAX],
        }
    }

    #[test]
    fn case_round_trips_through_bytes() {
        let c = case();
        assert_eq!(TokenizerCase::parse(&c.to_bytes()), c);
        let other = TokenizerCase {
            model: ModelKey::Other("bpe?".into()),
            ..c
        };
        assert_eq!(TokenizerCase::parse(&other.to_bytes()), other);
    }

    #[test]
    fn case_builds_a_working_tokenizer() {
        let c = case();
        let bytes = GgufWriter::new(Vec::new(), &c.metadata(), &[])
            .and_then(GgufWriter::finish)
            .unwrap();
        let tok = Tokenizer::from_gguf(&GgufFile::from_bytes(bytes).unwrap()).unwrap();
        assert_eq!(tok.encode("hello", false, false), vec![8]);
        tokenizer(&c.to_bytes());
    }

    #[test]
    fn any_bytes_are_an_input() {
        for data in [
            &b""[..],
            b"\xff\xff\xff",
            &[0u8; 40],
            b"\x01\x00\x00hello\xfe",
        ] {
            tokenizer(data);
        }
    }
}
