//! Splitting text into words before BPE, as llama.cpp's `unicode_regex_split`.
//!
//! Each model's pre-tokenizer is a list of regexes applied in turn, each one splitting the pieces
//! the previous one left. llama.cpp runs the common regexes through hand-written splitters (whose
//! quirks at chunk edges are part of the contract) and the rest through `std::regex` on a
//! "collapsed" text where every non-ASCII code point stands for its category. We do the same,
//! with `fancy-regex` in place of `std::regex`.

use crate::unicode::{byte_encode, cpt_flags, to_lower, CptFlags};
use crate::TokenizerError;

// The exact strings llama.cpp recognises for its hand-written splitters.
const RE_GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const RE_LLAMA3_ORIG: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_NEWLINES: &str = r"[^\n]+|[\n]+";
const RE_AFMOE_DIGITS: &str = r"\p{AFMoE_digits}";
const RE_TINY_AYA_DIGITS: &str = r"\d{1,3}(?=(?:\d{3})*\b)";

/// Unicode categories llama.cpp can express in a regex, and the byte that stands for each in
/// the collapsed text (kept as the chars U+00D1.. so the text stays a `str`).
const UCAT_NAMES: [(&str, u16); 10] = [
    (r"\p{N}", CptFlags::NUMBER),
    (r"\p{L}", CptFlags::LETTER),
    (r"\p{P}", CptFlags::PUNCTUATION),
    (r"\p{M}", CptFlags::ACCENT_MARK),
    (r"\p{S}", CptFlags::SYMBOL),
    (r"\p{Lu}", CptFlags::LETTER),
    (r"\p{Ll}", CptFlags::LETTER),
    (r"\p{Lt}", CptFlags::LETTER),
    (r"\p{Lm}", CptFlags::LETTER),
    (r"\p{Lo}", CptFlags::LETTER),
];

/// (category, stand-in char, the ASCII members of the category as class items).
const UCAT_COLLAPSE: [(u16, char, &str); 5] = [
    (CptFlags::NUMBER, '\u{D1}', "0-9"),
    (CptFlags::LETTER, '\u{D2}', "A-Za-z"),
    (
        CptFlags::PUNCTUATION,
        '\u{D3}',
        r"!-#%-*,-/:-;?-@\[-\]_\{\}",
    ),
    (CptFlags::ACCENT_MARK, '\u{D4}', ""),
    (CptFlags::SYMBOL, '\u{D5}', r"\$\+<->\^`\|\~"),
];
/// Stand-in for a non-ASCII code point of no category above.
const COLLAPSE_OTHER: char = '\u{D0}';
/// Stand-in for non-ASCII whitespace: `std::regex`'s `\s` only knows ASCII.
const COLLAPSE_SPACE: char = '\u{0B}';

fn uses_categories(re: &str) -> bool {
    UCAT_NAMES.iter().any(|(name, _)| re.contains(name))
}

enum Splitter {
    Gpt2,
    Llama3,
    Qwen2,
    Qwen35,
    Newlines,
    Digits3,
    Regex {
        re: Box<fancy_regex::Regex>,
        collapsed: bool,
    },
}

/// A compiled pre-tokenizer: its splitters and whether words are GPT-2 byte-encoded after.
pub(crate) struct PreTokenizer {
    splitters: Vec<Splitter>,
    byte_encode: bool,
}

impl PreTokenizer {
    pub fn new(regexes: &[&str], byte_encode: bool) -> Result<Self, TokenizerError> {
        let splitters = regexes
            .iter()
            .map(|&re| compile(re))
            .collect::<Result<_, _>>()?;
        Ok(PreTokenizer {
            splitters,
            byte_encode,
        })
    }

    pub fn byte_encode(&self) -> bool {
        self.byte_encode
    }

    /// The words of `text`, byte-encoded when the model is byte-level.
    pub fn split(&self, text: &str) -> Vec<String> {
        let cpts: Vec<u32> = text.chars().map(u32::from).collect();
        // (cpts.len()) = one chunk covering the text; each splitter refines the chunks.
        let mut offsets = vec![cpts.len()];
        let mut collapsed: Option<String> = None;
        let mut wide: Option<String> = None;
        for s in &self.splitters {
            let next = match s {
                Splitter::Gpt2 => split_custom(&cpts, &offsets, gpt2_chunk),
                Splitter::Llama3 => split_custom(&cpts, &offsets, |c, i, e, o| {
                    llama3_chunk(c, i, e, o, Variant::Llama3)
                }),
                Splitter::Qwen2 => split_custom(&cpts, &offsets, |c, i, e, o| {
                    llama3_chunk(c, i, e, o, Variant::Qwen2)
                }),
                Splitter::Qwen35 => split_custom(&cpts, &offsets, |c, i, e, o| {
                    llama3_chunk(c, i, e, o, Variant::Qwen35)
                }),
                Splitter::Newlines => split_custom(&cpts, &offsets, newlines_chunk),
                Splitter::Digits3 => split_custom(&cpts, &offsets, digits3_chunk),
                Splitter::Regex {
                    re,
                    collapsed: true,
                } => {
                    let t = collapsed.get_or_insert_with(|| collapse(&cpts));
                    split_regex(re, t, &offsets)
                }
                Splitter::Regex {
                    re,
                    collapsed: false,
                } => {
                    let t = wide.get_or_insert_with(|| widen(&cpts));
                    split_regex(re, t, &offsets)
                }
            };
            // llama.cpp falls back to std::regex when a custom splitter returns nothing, which
            // only happens for an empty text, where every splitter returns nothing too.
            offsets = next;
        }

        let mut words = Vec::with_capacity(offsets.len());
        let mut chars = text.char_indices().map(|(i, _)| i).chain([text.len()]);
        let mut start = chars.next().unwrap_or(0);
        for &n in &offsets {
            let end = if n == 0 {
                start
            } else {
                chars.nth(n - 1).unwrap_or(text.len())
            };
            let word = &text[start..end];
            words.push(if self.byte_encode {
                byte_encode(word)
            } else {
                word.to_owned()
            });
            start = end;
        }
        words
    }
}

fn compile(re: &str) -> Result<Splitter, TokenizerError> {
    Ok(match re {
        RE_GPT2 => Splitter::Gpt2,
        RE_LLAMA3 | RE_LLAMA3_ORIG => Splitter::Llama3,
        RE_QWEN2 => Splitter::Qwen2,
        RE_QWEN35 => Splitter::Qwen35,
        RE_NEWLINES => Splitter::Newlines,
        RE_AFMOE_DIGITS | RE_TINY_AYA_DIGITS => Splitter::Digits3,
        _ => {
            let collapsed = uses_categories(re);
            if collapsed && !re.is_ascii() {
                return Err(TokenizerError::Regex {
                    regex: re.to_owned(),
                    reason: "unicode categories together with non-ASCII characters".into(),
                });
            }
            let pattern = translate(re, collapsed);
            let compiled =
                fancy_regex::Regex::new(&pattern).map_err(|e| TokenizerError::Regex {
                    regex: re.to_owned(),
                    reason: e.to_string(),
                })?;
            Splitter::Regex {
                re: Box::new(compiled),
                collapsed,
            }
        }
    })
}

/// Rewrites an ECMAScript regex as llama.cpp feeds it to `std::regex`, in fancy-regex syntax:
/// categories become their collapsed stand-ins (when `collapsed`), and the shorthand classes
/// keep their ASCII-only `std::regex` meaning instead of the Rust crate's Unicode one.
fn translate(re: &str, collapsed: bool) -> String {
    const SPACE: &str = r"\t\n\x0B\x0C\r ";
    let b: Vec<char> = re.chars().collect();
    let mut out = String::with_capacity(re.len() * 2);
    let mut inside = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '[' && (i == 0 || b[i - 1] != '\\') {
            out.push('[');
            inside = true;
            i += 1;
            continue;
        }
        if inside && c == ']' && b[i - 1] != '\\' {
            out.push(']');
            inside = false;
            i += 1;
            continue;
        }
        if c == '\\' && i + 1 < b.len() {
            let next = b[i + 1];
            if collapsed && next == 'p' {
                let rest: String = b[i..].iter().take(12).collect();
                if let Some(&(name, cat)) = UCAT_NAMES.iter().find(|(n, _)| rest.starts_with(n)) {
                    let (_, stand_in, ascii) = UCAT_COLLAPSE
                        .iter()
                        .find(|(c, _, _)| *c == cat)
                        .copied()
                        .expect("known");
                    if !inside {
                        out.push('[');
                    }
                    out.push_str(&format!("\\x{{{:X}}}", stand_in as u32));
                    out.push_str(ascii);
                    if !inside {
                        out.push(']');
                    }
                    i += name.chars().count();
                    continue;
                }
            }
            let class = match (next, inside) {
                ('s', true) => Some(SPACE.to_owned()),
                ('s', false) => Some(format!("[{SPACE}]")),
                ('S', _) => Some(format!("[^{SPACE}]")),
                ('d', true) => Some("0-9".to_owned()),
                ('d', false) => Some("[0-9]".to_owned()),
                ('D', _) => Some("[^0-9]".to_owned()),
                ('w', true) => Some("0-9A-Za-z_".to_owned()),
                ('w', false) => Some("[0-9A-Za-z_]".to_owned()),
                ('W', _) => Some("[^0-9A-Za-z_]".to_owned()),
                _ => None,
            };
            match class {
                Some(cls) => out.push_str(&cls),
                None => {
                    out.push('\\');
                    out.push(next);
                }
            }
            i += 2;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// The text as llama.cpp's `text_collapsed`: ASCII kept, everything else one stand-in char.
fn collapse(cpts: &[u32]) -> String {
    cpts.iter()
        .map(|&c| {
            if c < 128 {
                return char::from(c as u8);
            }
            let f = cpt_flags(c);
            if f.is_whitespace() {
                return COLLAPSE_SPACE;
            }
            UCAT_COLLAPSE
                .iter()
                .find(|(cat, _, _)| *cat == f.category())
                .map_or(COLLAPSE_OTHER, |&(_, ch, _)| ch)
        })
        .collect()
}

/// The text as llama.cpp's `std::wregex` sees it: non-ASCII whitespace becomes `\v`.
fn widen(cpts: &[u32]) -> String {
    cpts.iter()
        .map(|&c| {
            if c > 0x7F && cpt_flags(c).is_whitespace() {
                COLLAPSE_SPACE
            } else {
                char::from_u32(c).unwrap_or('\u{FFFD}')
            }
        })
        .collect()
}

/// Runs `re` over each chunk on its own (lookarounds cannot see past a chunk, as with
/// `std::regex_iterator` over a sub-range); matches and the gaps between them become pieces.
fn split_regex(re: &fancy_regex::Regex, text: &str, offsets: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut char_starts = text.char_indices().map(|(i, _)| i).chain([text.len()]);
    let mut chunk_start = char_starts.next().unwrap_or(0);
    for &n in offsets {
        let chunk_end = if n == 0 {
            chunk_start
        } else {
            char_starts.nth(n - 1).unwrap_or(text.len())
        };
        let chunk = &text[chunk_start..chunk_end];
        let count = |a: usize, b: usize| chunk[a..b].chars().count();
        let mut last = 0;
        let mut pos = 0;
        while pos <= chunk.len() {
            // A regex that gives up (backtracking limit) leaves the rest as one piece.
            let Ok(Some(m)) = re.find_from_pos(chunk, pos) else {
                break;
            };
            if m.start() > last {
                out.push(count(last, m.start()));
            }
            out.push(count(m.start(), m.end()));
            last = m.end();
            pos = if m.end() > m.start() {
                m.end()
            } else {
                match chunk[m.end()..].chars().next() {
                    Some(c) => m.end() + c.len_utf8(),
                    None => break,
                }
            };
        }
        if last < chunk.len() {
            out.push(count(last, chunk.len()));
        }
        chunk_start = chunk_end;
    }
    out
}

/// Applies a hand-written splitter to each chunk `[ini, end)` of code points.
fn split_custom(
    cpts: &[u32],
    offsets: &[usize],
    f: impl Fn(&[u32], usize, usize, &mut Vec<usize>),
) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0;
    for &n in offsets {
        f(cpts, start, start + n, &mut out);
        start += n;
    }
    out
}

const OUT_OF_RANGE: u32 = u32::MAX;

/// The view of one chunk that llama.cpp's splitters use: positions outside read as
/// `OUT_OF_RANGE` with empty flags, and each token is emitted as a length.
struct Chunk<'a> {
    cpts: &'a [u32],
    ini: usize,
    end: usize,
    prev_end: usize,
    out: &'a mut Vec<usize>,
}

impl Chunk<'_> {
    fn cpt(&self, pos: usize) -> u32 {
        if (self.ini..self.end).contains(&pos) {
            self.cpts[pos]
        } else {
            OUT_OF_RANGE
        }
    }
    fn flags(&self, pos: usize) -> CptFlags {
        if (self.ini..self.end).contains(&pos) {
            cpt_flags(self.cpts[pos])
        } else {
            CptFlags::default()
        }
    }
    fn add_token(&mut self, end: usize) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            self.out.push(len);
        }
        self.prev_end = end;
        len
    }
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)` at `pos`: the length matched, if any.
    fn contraction(&self, pos: usize, fold_case: bool) -> Option<usize> {
        if self.cpt(pos) != u32::from('\'') || pos + 1 >= self.end {
            return None;
        }
        let lower = |c: u32| if fold_case { to_lower(c) } else { c };
        let is = |c: u32, ch: char| c == u32::from(ch);
        let next = lower(self.cpt(pos + 1));
        if is(next, 's') || is(next, 't') || is(next, 'm') || is(next, 'd') {
            return Some(2);
        }
        if pos + 2 < self.end {
            let next2 = lower(self.cpt(pos + 2));
            if (is(next, 'r') && is(next2, 'e'))
                || (is(next, 'v') && is(next2, 'e'))
                || (is(next, 'l') && is(next2, 'l'))
            {
                return Some(3);
            }
        }
        None
    }
}

fn is_cr_or_lf(c: u32) -> bool {
    c == u32::from('\r') || c == u32::from('\n')
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
fn gpt2_chunk(cpts: &[u32], ini: usize, end: usize, out: &mut Vec<usize>) {
    let mut c = Chunk {
        cpts,
        ini,
        end,
        prev_end: ini,
        out,
    };
    let mut pos = ini;
    while pos < end {
        let cpt = c.cpt(pos);
        let flags = c.flags(pos);
        if let Some(n) = c.contraction(pos, false) {
            pos += c.add_token(pos + n);
            continue;
        }
        let space = cpt == u32::from(' ');
        let mut flags2 = if space { c.flags(pos + 1) } else { flags };
        // <space>?\p{L}+, <space>?\p{N}+, <space>?[^\s\p{L}\p{N}]+
        let classes: [fn(CptFlags) -> bool; 3] = [
            |f| f.is_letter(),
            |f| f.is_number(),
            |f| !(f.is_whitespace() || f.is_letter() || f.is_number()) && f.is_defined(),
        ];
        if let Some(class) = classes.iter().find(|class| class(flags2)) {
            pos += usize::from(space);
            while class(flags2) {
                pos += 1;
                flags2 = c.flags(pos);
            }
            c.add_token(pos);
            continue;
        }
        let mut num_ws = 0;
        while c.flags(pos + num_ws).is_whitespace() {
            num_ws += 1;
        }
        // \s+(?!\S): leave the last space to the word that follows
        if num_ws > 1 && c.cpt(pos + num_ws) != OUT_OF_RANGE {
            pos += num_ws - 1;
            c.add_token(pos);
            continue;
        }
        if num_ws > 0 {
            pos += num_ws;
            c.add_token(pos);
            continue;
        }
        pos += 1;
        c.add_token(pos);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    /// `\p{N}{1,3}`
    Llama3,
    /// `\p{N}`
    Qwen2,
    /// `\p{N}`, and letters runs take combining marks: `[\p{L}\p{M}]+`
    Qwen35,
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
/// and its Qwen variants.
fn llama3_chunk(cpts: &[u32], ini: usize, end: usize, out: &mut Vec<usize>, v: Variant) {
    let mut c = Chunk {
        cpts,
        ini,
        end,
        prev_end: ini,
        out,
    };
    let marks = v == Variant::Qwen35;
    let wordy = |f: CptFlags| f.is_letter() || (marks && f.is_accent_mark());
    let mut pos = ini;
    while pos < end {
        let cpt = c.cpt(pos);
        let flags = c.flags(pos);
        if let Some(n) = c.contraction(pos, true) {
            pos += c.add_token(pos + n);
            continue;
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(is_cr_or_lf(cpt) || flags.is_number()) && (wordy(flags) || wordy(c.flags(pos + 1))) {
            pos += 1;
            while wordy(c.flags(pos)) {
                pos += 1;
            }
            c.add_token(pos);
            continue;
        }
        if flags.is_number() {
            if v == Variant::Llama3 {
                let mut ini = pos;
                while c.flags(pos).is_number() {
                    pos += 1;
                    if pos - ini >= 3 {
                        c.add_token(pos);
                        ini = pos;
                    }
                }
            } else {
                pos += 1;
            }
            c.add_token(pos);
            continue;
        }
        // <space>?[^\s\p{L}\p{N}]+[\r\n]*  (llama.cpp tests the first char's own flags here)
        let not_word = |f: CptFlags| {
            !(f.is_whitespace() || f.is_letter() || f.is_number() || (marks && f.is_accent_mark()))
        };
        let space = cpt == u32::from(' ');
        let mut flags2 = if space { c.flags(pos + 1) } else { flags };
        if not_word(flags2) && flags.is_defined() {
            pos += usize::from(space);
            while not_word(flags2) && flags2.is_defined() {
                pos += 1;
                flags2 = c.flags(pos);
            }
            while is_cr_or_lf(c.cpt(pos)) {
                pos += 1;
            }
            c.add_token(pos);
            continue;
        }
        let mut num_ws = 0;
        let mut last_end_r_or_n = 0;
        while c.flags(pos + num_ws).is_whitespace() {
            if is_cr_or_lf(c.cpt(pos + num_ws)) {
                last_end_r_or_n = pos + num_ws + 1;
            }
            num_ws += 1;
        }
        // \s*[\r\n]+
        if last_end_r_or_n > 0 {
            pos = last_end_r_or_n;
            c.add_token(pos);
            continue;
        }
        // \s+(?!\S)
        if num_ws > 1 && c.cpt(pos + num_ws) != OUT_OF_RANGE {
            pos += num_ws - 1;
            c.add_token(pos);
            continue;
        }
        // \s+
        if num_ws > 0 {
            pos += num_ws;
            c.add_token(pos);
            continue;
        }
        pos += 1;
        c.add_token(pos);
    }
}

/// `[^\n]+|[\n]+`
fn newlines_chunk(cpts: &[u32], ini: usize, end: usize, out: &mut Vec<usize>) {
    let mut pos = ini;
    while pos < end {
        let is_newline = cpts[pos] == u32::from('\n');
        let run_start = pos;
        while pos < end && (cpts[pos] == u32::from('\n')) == is_newline {
            pos += 1;
        }
        out.push(pos - run_start);
    }
}

/// llama.cpp's AFMoE digit splitter: a digit run becomes its leading `len % 3` digits, then
/// groups of three. Text before a run is not cut off: it joins the run's first piece.
fn digits3_chunk(cpts: &[u32], ini: usize, end: usize, out: &mut Vec<usize>) {
    let mut c = Chunk {
        cpts,
        ini,
        end,
        prev_end: ini,
        out,
    };
    let mut pos = ini;
    while pos < end {
        if !c.flags(pos).is_number() {
            pos += 1;
            continue;
        }
        let digit_start = pos;
        while pos < end && c.flags(pos).is_number() {
            pos += 1;
        }
        let mut current = digit_start + (pos - digit_start) % 3;
        if current > digit_start {
            c.add_token(current);
        }
        while current < pos {
            current += 3;
            c.add_token(current);
        }
    }
    if c.prev_end < end {
        c.add_token(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(res: &[&str], text: &str) -> Vec<String> {
        PreTokenizer::new(res, false).unwrap().split(text)
    }

    #[test]
    fn gpt2_splitter() {
        assert_eq!(
            words(&[RE_GPT2], "Hello world's  end 123!!\n\n x"),
            ["Hello", " world", "'s", " ", " end", " 123", "!!", "\n\n", " x"]
        );
    }

    #[test]
    fn llama3_splitter() {
        assert_eq!(
            words(&[RE_LLAMA3], "I'M 12345 (ok)\r\n\n  hi  "),
            ["I", "'M", " ", "123", "45", " (", "ok", ")\r\n\n", " ", " hi", "  "]
        );
    }

    #[test]
    fn collapsed_regex_digits() {
        // smollm: each digit alone, then the GPT-2 splitter inside the other pieces
        assert_eq!(
            words(&[r"\p{N}", RE_GPT2], "a 12 ٣"),
            ["a", " ", "1", "2", " ", "٣"]
        );
    }

    #[test]
    fn translate_collapses_categories() {
        assert_eq!(translate(r"\p{N}+", true), r"[\x{D1}0-9]+");
        assert_eq!(
            translate(r"[^\s\p{L}]", true),
            r"[^\t\n\x0B\x0C\r \x{D2}A-Za-z]"
        );
        assert_eq!(
            translate(r"\s+(?!\S)", false),
            r"[\t\n\x0B\x0C\r ]+(?![^\t\n\x0B\x0C\r ])"
        );
    }

    #[test]
    fn zero_length_matches_split_digits() {
        // superbpe: groups of three from the right
        assert_eq!(
            words(&[r"\p{N}+", r"(?=(\d{3})+(?!\d))"], "1234567"),
            ["1", "", "234", "", "567"]
        );
    }
}
