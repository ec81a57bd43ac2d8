//! Merge-ranked BPE as llama.cpp's `llm_tokenizer_bpe_session`: split into words by the
//! pre-tokenizer, then inside each word keep merging the adjacent pair of lowest merge rank.

use crate::presets::PreType;
use crate::pretokenize::PreTokenizer;
use crate::unicode::utf8_len;
use crate::vocab::Vocab;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    n: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// Reused across words so a long text does not allocate per word.
#[derive(Default)]
struct Scratch {
    symbols: Vec<Symbol>,
    /// (rank, left, right, size of the pair when queued): lowest rank first, then leftmost
    queue: BinaryHeap<Reverse<(u32, usize, usize, usize)>>,
    key: String,
}

impl Scratch {
    fn add_bigram(&mut self, vocab: &Vocab, word: &str, left: Option<usize>, right: Option<usize>) {
        let (Some(l), Some(r)) = (left, right) else {
            return;
        };
        let (a, b) = (self.symbols[l], self.symbols[r]);
        self.key.clear();
        self.key.push_str(&word[a.start..a.start + a.n]);
        self.key.push(' ');
        self.key.push_str(&word[b.start..b.start + b.n]);
        if let Some(&rank) = vocab.merge_ranks.get(self.key.as_str()) {
            self.queue.push(Reverse((rank, l, r, a.n + b.n)));
        }
    }
}

/// Tokenizes one raw-text fragment into `out`.
pub(crate) fn tokenize(vocab: &Vocab, pre: &PreTokenizer, text: &str, out: &mut Vec<u32>) {
    let mut scratch = Scratch::default();
    for word in pre.split(text) {
        merge_word(vocab, &word, &mut scratch);
        for s in scratch.symbols.iter().filter(|s| s.n > 0) {
            emit(vocab, pre, &word[s.start..s.start + s.n], out);
        }
    }
}

fn merge_word(vocab: &Vocab, word: &str, sc: &mut Scratch) {
    sc.symbols.clear();
    sc.queue.clear();
    let whole = (vocab.ignore_merges
        || (vocab.pre == Some(PreType::Gemma4) && word.bytes().all(|b| b == b'\n')))
        && vocab.text_to_token(word).is_some();
    let bytes = word.as_bytes();
    let mut offset = if whole {
        sc.symbols.push(Symbol {
            start: 0,
            n: word.len(),
            prev: None,
            next: None,
        });
        word.len()
    } else {
        0
    };
    while offset < bytes.len() {
        let n = utf8_len(bytes[offset]).min(bytes.len() - offset);
        let index = sc.symbols.len();
        offset += n;
        sc.symbols.push(Symbol {
            start: offset - n,
            n,
            prev: index.checked_sub(1),
            next: (offset < bytes.len()).then_some(index + 1),
        });
    }
    for i in 1..sc.symbols.len() {
        sc.add_bigram(vocab, word, Some(i - 1), Some(i));
    }
    while let Some(Reverse((_, left, right, size))) = sc.queue.pop() {
        let (l, r) = (sc.symbols[left], sc.symbols[right]);
        // A side that grew or was absorbed changes the pair's length: the entry is stale.
        if l.n == 0 || r.n == 0 || l.n + r.n != size {
            continue;
        }
        sc.symbols[left].n += r.n;
        sc.symbols[right].n = 0;
        sc.symbols[left].next = r.next;
        if let Some(next) = r.next {
            sc.symbols[next].prev = Some(left);
        }
        sc.add_bigram(vocab, word, l.prev, Some(left));
        sc.add_bigram(vocab, word, Some(left), r.next);
    }
}

/// A finished symbol: its token, or failing that one token per byte where one exists.
fn emit(vocab: &Vocab, pre: &PreTokenizer, piece: &str, out: &mut Vec<u32>) {
    if let Some(id) = vocab.text_to_token(piece) {
        out.push(id);
        return;
    }
    for &b in piece.as_bytes() {
        let id = if pre.byte_encode() {
            // llama.cpp looks up the raw byte of the already byte-encoded text, so only
            // ASCII bytes can ever be found; the rest are dropped, as there.
            std::str::from_utf8(&[b])
                .ok()
                .and_then(|s| vocab.text_to_token(s))
        } else {
            vocab.text_to_token(&format!("<0x{b:02X}>"))
        };
        out.extend(id);
    }
}
