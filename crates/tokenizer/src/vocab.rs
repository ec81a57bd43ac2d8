//! The vocabulary as llama.cpp's `llama_vocab::impl::load` leaves it: tokens with attributes,
//! special ids with their per-model defaults, flags, the end-of-generation set, the special-token
//! list used to split text, and each token's piece.

use crate::map_order;
use crate::meta::{keys, Metadata};
use crate::presets::{self, tweak, PreType};
use crate::TokenizerError;
use std::collections::{BTreeSet, HashMap};

/// llama.cpp's `llama_token_attr` bits.
pub(crate) mod attr {
    pub const UNKNOWN: u16 = 1 << 0;
    pub const UNUSED: u16 = 1 << 1;
    pub const NORMAL: u16 = 1 << 2;
    pub const CONTROL: u16 = 1 << 3;
    pub const USER_DEFINED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;
    pub const LSTRIP: u16 = 1 << 7;
    pub const RSTRIP: u16 = 1 << 8;
}

/// `tokenizer.ggml.token_type` values -> attributes (llama.cpp's `LLAMA_TOKEN_TYPE_*`).
fn attr_from_type(t: i32) -> u16 {
    match t {
        1 => attr::NORMAL,
        2 => attr::UNKNOWN,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        5 => attr::UNUSED,
        6 => attr::BYTE,
        _ => 0, // undefined
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VocabType {
    /// SentencePiece (`tokenizer.ggml.model = "llama"`)
    Spm,
    /// byte-level BPE (`"gpt2"`) or SentencePiece-style BPE (`"gemma4"`)
    Bpe,
}

pub(crate) struct TokenData {
    pub text: String,
    pub score: f32,
    pub attr: u16,
}

/// The special ids llama.cpp tracks; `None` is its `LLAMA_TOKEN_NULL`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

pub(crate) struct Vocab {
    pub typ: VocabType,
    pub model: String,
    /// BPE only
    pub pre: Option<PreType>,
    pub tokens: Vec<TokenData>,
    pub token_to_id: HashMap<String, u32>,
    /// BPE merges keyed by the merge line "left right", valued by rank (first occurrence wins)
    pub merge_ranks: HashMap<String, u32>,
    pub special: SpecialIds,
    pub add_space_prefix: bool,
    pub add_bos: bool,
    pub add_eos: bool,
    pub ignore_merges: bool,
    pub clean_spaces: bool,
    pub escape_whitespaces: bool,
    pub eog: BTreeSet<u32>,
    /// Control, user-defined and unknown tokens, longest text first: the order in which
    /// they are cut out of the text before the model's algorithm runs.
    pub special_tokens: Vec<u32>,
    /// Each token's bytes as `token_to_piece(id, special = true)` gives them.
    pub pieces: Vec<Vec<u8>>,
}

// The texts llama.cpp recognises, in its order (see `load`'s "auto-detect special tokens").
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
/// gpt-oss: always rendered, so made user-defined
const ALWAYS_RENDERED: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

impl Vocab {
    pub fn load(meta: &dyn Metadata) -> Result<Vocab, TokenizerError> {
        let model = meta
            .str_value(keys::MODEL)?
            .ok_or(TokenizerError::MissingKey { key: keys::MODEL })?
            .to_owned();
        let mut pre_name = meta.str_value(keys::PRE)?.map(str::to_owned);

        let mut special = SpecialIds::default();
        let typ = match model.as_str() {
            "llama" => {
                special.bos = Some(1);
                special.eos = Some(2);
                special.unk = Some(0);
                VocabType::Spm
            }
            "gpt2" => {
                special.bos = Some(11);
                special.eos = Some(11);
                VocabType::Bpe
            }
            "gemma4" => {
                pre_name = Some("gemma4".to_owned());
                VocabType::Bpe
            }
            _ => return Err(TokenizerError::UnsupportedModel { model }),
        };

        let merge_ranks = match typ {
            VocabType::Bpe => {
                let merges = meta
                    .str_array(keys::MERGES)?
                    .ok_or(TokenizerError::MissingKey { key: keys::MERGES })?;
                let mut ranks = HashMap::with_capacity(merges.len());
                for (rank, line) in merges.iter().enumerate() {
                    // llama.cpp splits at the first space after the first byte; a line without
                    // one becomes ("", "") and can never match.
                    if line.bytes().skip(1).any(|b| b == b' ') {
                        ranks.entry(line.clone()).or_insert(rank as u32);
                    }
                }
                ranks
            }
            VocabType::Spm => HashMap::new(),
        };

        let (mut add_space_prefix, add_bos, add_eos);
        let (mut clean_spaces, mut ignore_merges, mut escape_whitespaces) = (false, false, true);
        let mut pre = None;
        match typ {
            VocabType::Bpe => {
                add_space_prefix = false;
                escape_whitespaces = false;
                clean_spaces = true;
                add_eos = false;
                let (t, tweaks) = match pre_name.as_deref() {
                    None | Some("") => (PreType::Default, 0),
                    Some(name) => presets::lookup(name).ok_or_else(|| {
                        TokenizerError::UnknownPreTokenizer {
                            pre: name.to_owned(),
                        }
                    })?,
                };
                if t == PreType::KimiK2 {
                    return Err(TokenizerError::UnsupportedPreTokenizer {
                        pre: pre_name.unwrap_or_default(),
                    });
                }
                if tweaks & tweak::CLEAN_OFF != 0 {
                    clean_spaces = false;
                }
                ignore_merges = tweaks & tweak::IGNORE_MERGES != 0;
                add_bos = tweaks & tweak::ADD_BOS != 0;
                if tweaks & tweak::NO_BOS != 0 {
                    special.bos = None;
                }
                if tweaks & tweak::ESCAPE_WS != 0 {
                    escape_whitespaces = true;
                }
                pre = Some(t);
            }
            VocabType::Spm => {
                add_space_prefix = true;
                add_bos = true;
                add_eos = false;
            }
        }
        if let Some(v) = meta.bool_value(keys::ADD_PREFIX)? {
            add_space_prefix = v;
        }

        let texts = meta
            .str_array(keys::TOKENS)?
            .ok_or(TokenizerError::MissingKey { key: keys::TOKENS })?;
        let n_tokens = texts.len();
        if n_tokens == 0 || n_tokens > u32::MAX as usize {
            return Err(TokenizerError::BadVocabSize { n_tokens });
        }
        let scores = meta.f32_array(keys::SCORES)?;
        let types = meta.i32_array(keys::TOKEN_TYPE)?;
        for (key, len) in [
            (keys::SCORES, scores.as_ref().map(|s| s.len())),
            (keys::TOKEN_TYPE, types.map(<[i32]>::len)),
        ] {
            if let Some(len) = len.filter(|&l| l < n_tokens) {
                return Err(TokenizerError::ArrayTooShort { key, len, n_tokens });
            }
        }

        let mut tokens = Vec::with_capacity(n_tokens);
        let mut token_to_id = HashMap::with_capacity(n_tokens);
        for (i, word) in texts.iter().enumerate() {
            let text = if word.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                word.clone()
            };
            if let Some(first) = token_to_id.insert(text.clone(), i as u32) {
                return Err(TokenizerError::DuplicateToken {
                    text,
                    first,
                    second: i as u32,
                });
            }
            tokens.push(TokenData {
                text,
                score: scores.as_ref().map_or(0.0, |s| s[i]),
                attr: types.map_or(attr::NORMAL, |t| attr_from_type(t[i])),
            });
        }

        let mut v = Vocab {
            typ,
            model,
            pre,
            tokens,
            token_to_id,
            merge_ranks,
            special,
            add_space_prefix,
            add_bos,
            add_eos,
            ignore_merges,
            clean_spaces,
            escape_whitespaces,
            eog: BTreeSet::new(),
            special_tokens: Vec::new(),
            pieces: Vec::new(),
        };
        v.load_special_ids(meta)?;
        if let Some(b) = meta.bool_value(keys::ADD_BOS)? {
            v.add_bos = b;
        }
        if let Some(b) = meta.bool_value(keys::ADD_EOS)? {
            v.add_eos = b;
        }
        if v.pre == Some(PreType::Gemma4) {
            v.add_bos = true;
        }
        v.detect_special_tokens();
        v.special_tokens = (0..n_tokens as u32)
            .filter(|&id| v.attr(id) & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0)
            .collect();
        // stable, so equal lengths keep id order (llama.cpp's std::sort leaves that unspecified)
        v.special_tokens
            .sort_by_key(|&id| std::cmp::Reverse(v.tokens[id as usize].text.len()));
        v.pieces = (0..n_tokens as u32).map(|id| v.compute_piece(id)).collect();
        v.set_model_specific_attrs(meta)?;
        Ok(v)
    }

    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    pub fn attr(&self, id: u32) -> u16 {
        self.tokens.get(id as usize).map_or(0, |t| t.attr)
    }

    pub fn text_to_token(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    /// Defaults that fall outside the vocabulary are dropped; metadata ids outside it are
    /// ignored (the default stays), as llama.cpp does with a warning.
    fn load_special_ids(&mut self, meta: &dyn Metadata) -> Result<(), TokenizerError> {
        let n = self.tokens.len() as u32;
        let apply = |slot: &mut Option<u32>, key: &str| -> Result<(), TokenizerError> {
            if slot.is_some_and(|id| id >= n) {
                *slot = None;
            }
            if let Some(id) = meta.u32_value(key)? {
                if id < n {
                    *slot = Some(id);
                }
            }
            Ok(())
        };
        let s = &mut self.special;
        apply(&mut s.bos, keys::BOS_ID)?;
        apply(&mut s.eos, keys::EOS_ID)?;
        apply(&mut s.eot, keys::EOT_ID)?;
        apply(&mut s.eom, keys::EOM_ID)?;
        apply(&mut s.unk, keys::UNK_ID)?;
        apply(&mut s.sep, keys::SEP_ID)?;
        apply(&mut s.pad, keys::PAD_ID)?;
        apply(&mut s.mask, keys::MASK_ID)?;
        apply(&mut s.fim_pre, keys::FIM_PRE_ID)?;
        apply(&mut s.fim_suf, keys::FIM_SUF_ID)?;
        apply(&mut s.fim_mid, keys::FIM_MID_ID)?;
        apply(&mut s.fim_pad, keys::FIM_PAD_ID)?;
        apply(&mut s.fim_rep, keys::FIM_REP_ID)?;
        apply(&mut s.fim_sep, keys::FIM_SEP_ID)?;
        apply(&mut s.fim_pre, keys::PREFIX_ID)?;
        apply(&mut s.fim_suf, keys::SUFFIX_ID)?;
        apply(&mut s.fim_mid, keys::MIDDLE_ID)?;
        Ok(())
    }

    /// EOT/EOM/FIM ids by text when the metadata has none, the "unused" flag, the EOG set,
    /// and the attribute overrides that go with them.
    fn detect_special_tokens(&mut self) {
        // llama.cpp walks its hash map and takes the first token on the list in the map's
        // iteration order, which we reproduce when it matters (two or more on the list).
        let mut positions: Option<Option<Vec<u32>>> = None;
        let mut s = self.special;
        for (slot, texts) in [
            (&mut s.eot, EOT_TEXTS),
            (&mut s.eom, EOM_TEXTS),
            (&mut s.fim_pre, FIM_PRE_TEXTS),
            (&mut s.fim_suf, FIM_SUF_TEXTS),
            (&mut s.fim_mid, FIM_MID_TEXTS),
            (&mut s.fim_pad, FIM_PAD_TEXTS),
            (&mut s.fim_rep, FIM_REP_TEXTS),
            (&mut s.fim_sep, FIM_SEP_TEXTS),
        ] {
            if slot.is_some() {
                continue;
            }
            let found: Vec<u32> = texts.iter().filter_map(|t| self.text_to_token(t)).collect();
            let chosen = if found.len() > 1 {
                let pos = positions.get_or_insert_with(|| {
                    map_order::iteration_positions(self.tokens.iter().map(|t| t.text.as_str()))
                });
                match pos {
                    Some(pos) => found.iter().copied().min_by_key(|&id| pos[id as usize]),
                    None => found.first().copied(),
                }
            } else {
                found.first().copied()
            };
            if let Some(id) = chosen {
                *slot = Some(id);
                self.tokens[id as usize].attr |= attr::CONTROL;
            }
        }
        self.special = s;

        for t in &mut self.tokens {
            if t.attr & attr::CONTROL != 0 && t.text.contains("unused") {
                t.attr |= attr::UNUSED;
            }
        }

        let mut eog: BTreeSet<u32> = [s.fim_pad, s.fim_rep, s.fim_sep]
            .into_iter()
            .flatten()
            .collect();
        for text in EOG_TEXTS {
            if let Some(id) = self.text_to_token(text) {
                eog.insert(id);
                self.tokens[id as usize].attr |= attr::CONTROL;
            }
        }
        for text in ALWAYS_RENDERED {
            if let Some(id) = self.text_to_token(text) {
                self.tokens[id as usize].attr = attr::USER_DEFINED;
            }
        }
        eog.extend([s.eos, s.eot, s.eom].into_iter().flatten());

        // o200k_harmony / solar-open: "<|end|>" ends a message, not the generation.
        let has = |eog: &BTreeSet<u32>, t: &str| self.find_in(eog, t);
        let has_return = has(&eog, "<|return|>").is_some();
        let has_call = has(&eog, "<|call|>").or(has(&eog, "<|calls|>")).is_some();
        let has_flush = has(&eog, "<|flush|>").is_some();
        let end = has(&eog, "<|end|>");
        // gemma4 and plamo have an ordinary "</s>"
        let normal_s = has(&eog, "<|tool_response>")
            .or(has(&eog, "<|plamo:eos|>"))
            .is_some();
        let s_id = has(&eog, "</s>");
        if let Some(end) = end.filter(|_| has_call && (has_return || has_flush)) {
            eog.remove(&end);
            self.tokens[end as usize].attr = attr::USER_DEFINED;
        }
        if let Some(s_id) = s_id.filter(|_| normal_s) {
            eog.remove(&s_id);
            self.tokens[s_id as usize].attr = attr::NORMAL;
        }
        self.eog = eog;
    }

    fn find_in(&self, ids: &BTreeSet<u32>, text: &str) -> Option<u32> {
        ids.iter()
            .copied()
            .find(|&id| self.tokens[id as usize].text == text)
    }

    /// llama.cpp sets a few strip attributes by model name; they only affect how special
    /// tokens are cut out of the text.
    fn set_model_specific_attrs(&mut self, meta: &dyn Metadata) -> Result<(), TokenizerError> {
        let name = meta
            .str_value(keys::GENERAL_NAME)?
            .unwrap_or("")
            .to_ascii_lowercase();
        let pre = meta.str_value(keys::PRE)?.unwrap_or("");
        let arch = meta.str_value(keys::GENERAL_ARCH)?.unwrap_or("");
        let any = |s: &str, subs: &[&str]| subs.iter().any(|x| s.contains(x));
        let mut set = |text: &str, bit: u16, on: bool| {
            if let Some(&id) = self.token_to_id.get(text) {
                let a = &mut self.tokens[id as usize].attr;
                *a = if on { *a | bit } else { *a & !bit };
            }
        };
        if any(pre, &["jina-v2-de", "jina-v2-es", "jina-v2-code"])
            || any(arch, &["nomic-bert-moe", "jina-bert-v3"])
        {
            set("<mask>", attr::LSTRIP, true);
        } else if any(&name, &["phi-3", "phi3"]) {
            for &id in &self.special_tokens {
                self.tokens[id as usize].attr |= attr::RSTRIP;
            }
            let mut set = |text: &str, on: bool| {
                if let Some(&id) = self.token_to_id.get(text) {
                    let a = &mut self.tokens[id as usize].attr;
                    *a = if on {
                        *a | attr::RSTRIP
                    } else {
                        *a & !attr::RSTRIP
                    };
                }
            };
            set("</s>", true);
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                set(t, false);
            }
        } else if any(&name, &["modern-bert"]) {
            set("[MASK]", attr::LSTRIP, true);
        }
        Ok(())
    }

    /// `llama_token_to_piece(special = true)`, which llama.cpp caches for every token.
    fn compute_piece(&self, id: u32) -> Vec<u8> {
        let t = &self.tokens[id as usize];
        if t.attr & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
            t.text.as_bytes().to_vec()
        } else if t.attr & attr::NORMAL != 0 {
            if self.typ == VocabType::Spm || self.escape_whitespaces {
                t.text.replace('\u{2581}', " ").into_bytes()
            } else {
                decode_byte_level(&t.text)
            }
        } else if t.attr & attr::BYTE != 0 {
            vec![byte_of_token(&t.text)]
        } else {
            Vec::new() // unused and undefined tokens render as nothing
        }
    }

    /// SentencePiece byte fallback: `<0xXX>`, else the byte itself as a token.
    pub fn byte_to_token(&self, b: u8) -> Option<u32> {
        self.text_to_token(&format!("<0x{b:02X}>")).or_else(|| {
            std::str::from_utf8(&[b])
                .ok()
                .and_then(|s| self.text_to_token(s))
        })
    }
}

/// `token_to_byte`: the hex digits at 3..5 of `<0xXX>`, read like `strtol` (stops at the
/// first non-digit, 0 if none).
fn byte_of_token(text: &str) -> u8 {
    text.bytes()
        .skip(3)
        .take(2)
        .map_while(|c| (c as char).to_digit(16))
        .fold(0u32, |acc, d| acc * 16 + d) as u8
}

/// `llama_decode_text`: GPT-2 stand-in characters back to bytes; a character that is no
/// stand-in becomes llama.cpp's `[UNK_BYTE_0x..]` marker.
fn decode_byte_level(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match crate::unicode::char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokens_parse_like_strtol() {
        assert_eq!(byte_of_token("<0x0A>"), 0x0A);
        assert_eq!(byte_of_token("<0xFF>"), 0xFF);
        assert_eq!(byte_of_token("<0xZ>"), 0);
        assert_eq!(byte_of_token("<0"), 0);
    }

    #[test]
    fn byte_level_decoding() {
        assert_eq!(decode_byte_level("ĠHello"), b" Hello");
        assert_eq!(decode_byte_level("€"), b"[UNK_BYTE_0xe282ac\xe2\x82\xac]");
    }
}
