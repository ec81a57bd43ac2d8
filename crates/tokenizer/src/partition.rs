//! Cutting special tokens out of the text before the model's algorithm runs, as llama.cpp's
//! `tokenizer_st_partition`: each special token in turn (longest first) splits every text
//! fragment left at each of its occurrences.
//!
//! Literal ranges (text a user wrote, inside a rendered chat prompt) keep control and unknown
//! tokens' text as text: a match that overlaps one is passed over, so the text stays in its
//! fragment and the search goes on from the next character.

use std::ops::Range;

use crate::vocab::{attr, Vocab};
use aho_corasick::AhoCorasick;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fragment {
    /// byte range of the input text
    Text(usize, usize),
    Token(u32),
}

/// Finds which special tokens occur in a text at all, so the per-token passes skip the
/// thousands (Gemma has 6k) that do not. Exact: a token absent from the whole text is absent
/// from every fragment of it.
pub(crate) struct SpecialMatcher {
    ac: Option<AhoCorasick>,
}

impl SpecialMatcher {
    pub fn new(vocab: &Vocab) -> SpecialMatcher {
        let texts = vocab
            .special_tokens
            .iter()
            .map(|&id| vocab.tokens[id as usize].text.as_str());
        SpecialMatcher {
            ac: AhoCorasick::new(texts).ok(),
        }
    }

    /// `present[i]` for `vocab.special_tokens[i]`.
    fn present(&self, vocab: &Vocab, text: &str) -> Vec<bool> {
        let n = vocab.special_tokens.len();
        match &self.ac {
            Some(ac) => {
                let mut present = vec![false; n];
                for m in ac.find_overlapping_iter(text) {
                    present[m.pattern().as_usize()] = true;
                }
                present
            }
            None => vec![true; n],
        }
    }
}

/// C's `isspace` in the "C" locale, which is what llama.cpp strips with.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// `literal` only matters with `parse_special` (without it no control token is cut anyway).
pub(crate) fn partition(
    vocab: &Vocab,
    matcher: &SpecialMatcher,
    text: &str,
    parse_special: bool,
    literal: &[Range<usize>],
) -> Vec<Fragment> {
    if text.is_empty() {
        return Vec::new();
    }
    let bytes = text.as_bytes();
    let present = matcher.present(vocab, text);
    let mut fragments = vec![Fragment::Text(0, text.len())];
    for (&id, _) in vocab
        .special_tokens
        .iter()
        .zip(&present)
        .filter(|(_, &p)| p)
    {
        let data = &vocab.tokens[id as usize];
        // Control and unknown tokens are plain text unless asked for; user-defined tokens
        // are always split out, as Hugging Face tokenizers do.
        let control = data.attr & (attr::CONTROL | attr::UNKNOWN) != 0;
        if !parse_special && control {
            continue;
        }
        let needle = data.text.as_str();
        let in_literal = |m: usize| {
            control
                && literal
                    .iter()
                    .any(|r| r.start < m + needle.len() && m < r.end)
        };
        let mut next = Vec::with_capacity(fragments.len() + 2);
        for frag in fragments {
            let Fragment::Text(mut start, end) = frag else {
                next.push(frag);
                continue;
            };
            let mut from = start;
            while let Some(pos) = text[from..end].find(needle) {
                let m = from + pos;
                if in_literal(m) {
                    // Text, not a token: look again from the next character.
                    from = m + text[m..].chars().next().map_or(1, char::len_utf8);
                    continue;
                }
                let mut left_end = m;
                if data.attr & attr::LSTRIP != 0 {
                    while left_end > start && is_c_space(bytes[left_end - 1]) {
                        left_end -= 1;
                    }
                }
                if left_end > start {
                    next.push(Fragment::Text(start, left_end));
                }
                next.push(Fragment::Token(id));
                start = m + needle.len();
                if data.attr & attr::RSTRIP != 0 {
                    while start < end && is_c_space(bytes[start]) {
                        start += 1;
                    }
                }
                from = start;
            }
            if start < end {
                next.push(Fragment::Text(start, end));
            }
        }
        fragments = next;
    }
    fragments
}
