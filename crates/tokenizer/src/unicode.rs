//! Code point classification and the GPT-2 byte <-> unicode mapping, as llama.cpp's `unicode.cpp`.
//!
//! The pre-tokenizers must classify code points with llama.cpp's own tables (generated from its
//! `unicode-data.cpp`), not with whatever Unicode version the Rust regex crate ships, or token ids
//! drift on rarely used characters.

use crate::unicode_data::{FLAG_RANGES, LOWERCASE, WHITESPACE};
use std::sync::OnceLock;

/// llama.cpp's `unicode_cpt_flags`, bit for bit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CptFlags(pub u16);

impl CptFlags {
    pub const UNDEFINED: u16 = 0x0001;
    pub const NUMBER: u16 = 0x0002;
    pub const LETTER: u16 = 0x0004;
    pub const ACCENT_MARK: u16 = 0x0010;
    pub const PUNCTUATION: u16 = 0x0020;
    pub const SYMBOL: u16 = 0x0040;
    pub const MASK_CATEGORIES: u16 = 0x00FF;
    pub const WHITESPACE: u16 = 0x0100;

    pub fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }
    pub fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    pub fn is_accent_mark(self) -> bool {
        self.0 & Self::ACCENT_MARK != 0
    }
    pub fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
    /// Zero only for positions outside the text (llama.cpp's `flags.as_uint()` test).
    pub fn is_defined(self) -> bool {
        self.0 != 0
    }
    pub fn category(self) -> u16 {
        self.0 & Self::MASK_CATEGORIES
    }
}

/// One entry per code point below 0x110000, like llama.cpp's `unicode_cpt_flags_array`; 2.2 MB,
/// built once, because the splitters ask for every character of every text.
fn flags_table() -> &'static [CptFlags] {
    static TABLE: OnceLock<Vec<CptFlags>> = OnceLock::new();
    TABLE.get_or_init(|| {
        const MAX: usize = 0x110000;
        let mut t = vec![CptFlags(CptFlags::UNDEFINED); MAX];
        for w in FLAG_RANGES.windows(2) {
            let (lo, flags) = w[0];
            let hi = (w[1].0 as usize).min(MAX);
            for f in &mut t[lo as usize..hi] {
                *f = CptFlags(flags);
            }
        }
        for &c in WHITESPACE {
            t[c as usize].0 |= CptFlags::WHITESPACE;
        }
        t
    })
}

pub(crate) fn cpt_flags(cpt: u32) -> CptFlags {
    flags_table()
        .get(cpt as usize)
        .copied()
        .unwrap_or(CptFlags(CptFlags::UNDEFINED))
}

pub(crate) fn to_lower(cpt: u32) -> u32 {
    match LOWERCASE.binary_search_by_key(&cpt, |&(c, _)| c) {
        Ok(i) => LOWERCASE[i].1,
        Err(_) => cpt,
    }
}

/// GPT-2's printable stand-in for each byte: printable Latin-1 maps to itself, the other 68
/// bytes to U+0100.. in byte order.
fn byte_to_char_table() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = ['\0'; 256];
        let mut n = 0u32;
        for (b, slot) in t.iter_mut().enumerate() {
            let printable = matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
            *slot = if printable {
                char::from(b as u8)
            } else {
                n += 1;
                char::from_u32(255 + n).expect("U+0100..U+0143 are chars")
            };
        }
        t
    })
}

pub(crate) fn byte_to_char(b: u8) -> char {
    byte_to_char_table()[b as usize]
}

/// Inverse of [`byte_to_char`].
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    static STAND_INS: OnceLock<[u8; 68]> = OnceLock::new();
    match c as u32 {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => Some(c as u32 as u8),
        k @ 0x100..=0x143 => {
            let table = STAND_INS.get_or_init(|| {
                let mut t = [0u8; 68];
                for b in 0..=255u8 {
                    let c = byte_to_char(b) as u32;
                    if c >= 0x100 {
                        t[(c - 0x100) as usize] = b;
                    }
                }
                t
            });
            Some(table[(k - 0x100) as usize])
        }
        _ => None,
    }
}

/// GPT-2 byte-level encoding of a word: every UTF-8 byte becomes its stand-in character.
pub(crate) fn byte_encode(word: &str) -> String {
    word.bytes().map(byte_to_char).collect()
}

/// llama.cpp's `unicode_len_utf8`: the sequence length announced by a lead byte (1 for
/// continuation bytes, so malformed input still advances).
pub(crate) fn utf8_len(lead: u8) -> usize {
    const LOOKUP: [usize; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    LOOKUP[(lead >> 4) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_mapping_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(char_to_byte('€'), None);
    }

    #[test]
    fn flags_match_llama_tables() {
        assert!(cpt_flags('a' as u32).is_letter());
        assert!(cpt_flags('7' as u32).is_number());
        assert!(cpt_flags(' ' as u32).is_whitespace());
        assert!(cpt_flags(0x3000).is_whitespace());
        assert!(cpt_flags(0x0301).is_accent_mark());
        assert_eq!(cpt_flags('!' as u32).category(), CptFlags::PUNCTUATION);
        assert_eq!(cpt_flags('$' as u32).category(), CptFlags::SYMBOL);
        assert_eq!(cpt_flags(0x110000), CptFlags(CptFlags::UNDEFINED));
        assert_eq!(to_lower('Q' as u32), 'q' as u32);
        assert_eq!(to_lower('q' as u32), 'q' as u32);
    }
}
