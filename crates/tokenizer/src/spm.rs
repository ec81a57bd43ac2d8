//! SentencePiece BPE as llama.cpp's `llm_tokenizer_spm_session`: start from characters and
//! keep merging the adjacent pair whose concatenation is the highest-scoring token.

use crate::unicode::utf8_len;
use crate::vocab::Vocab;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A run of the text, linked to its neighbours; `n == 0` once merged into its left neighbour.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    n: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    /// bytes of the pair when queued, to spot pairs that changed since
    size: usize,
}

// Highest score first; among equal scores the leftmost pair, as llama.cpp's comparator.
impl Ord for Bigram {
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}

/// Tokenizes `text` (spaces already escaped to U+2581) into `out`.
pub(crate) fn tokenize(vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
    let bytes = text.as_bytes();
    let mut symbols = Vec::with_capacity(text.len());
    let mut offs = 0;
    while offs < bytes.len() {
        let n = utf8_len(bytes[offs]).min(bytes.len() - offs);
        let index = symbols.len();
        offs += n;
        symbols.push(Symbol {
            start: offs - n,
            n,
            prev: index.checked_sub(1),
            next: (offs < bytes.len()).then_some(index + 1),
        });
    }

    let mut queue = BinaryHeap::new();
    let try_add = |queue: &mut BinaryHeap<Bigram>, symbols: &[Symbol], l: Option<usize>, r| {
        let (Some(left), Some(right)) = (l, r) else {
            return;
        };
        let (a, b): (&Symbol, &Symbol) = (&symbols[left], &symbols[right]);
        let size = a.n + b.n;
        // Adjacent symbols are contiguous, so the pair is one slice of the text.
        if let Some(id) = text
            .get(a.start..a.start + size)
            .and_then(|s| vocab.text_to_token(s))
        {
            queue.push(Bigram {
                left,
                right,
                score: vocab.tokens[id as usize].score,
                size,
            });
        }
    };
    for i in 1..symbols.len() {
        try_add(&mut queue, &symbols, Some(i - 1), Some(i));
    }

    while let Some(bigram) = queue.pop() {
        let (l, r) = (symbols[bigram.left], symbols[bigram.right]);
        if l.n == 0 || r.n == 0 || l.n + r.n != bigram.size {
            continue; // one side has been merged into something else since
        }
        symbols[bigram.left].n += r.n;
        symbols[bigram.right].n = 0;
        symbols[bigram.left].next = r.next;
        if let Some(next) = r.next {
            symbols[next].prev = Some(bigram.left);
        }
        try_add(&mut queue, &symbols, l.prev, Some(bigram.left));
        try_add(&mut queue, &symbols, Some(bigram.left), r.next);
    }

    // Every merged symbol is a token by construction; what is left over is single characters.
    // (llama.cpp's `resegment` also consults the pairs it merged, but a single character can
    // never be one of them, so that branch is dead for valid UTF-8.)
    let mut i = if symbols.is_empty() { None } else { Some(0) };
    while let Some(idx) = i {
        let s = symbols[idx];
        let piece = &bytes[s.start..s.start + s.n];
        match std::str::from_utf8(piece)
            .ok()
            .and_then(|p| vocab.text_to_token(p))
        {
            Some(id) => out.push(id),
            None => {
                for &b in piece {
                    // llama.cpp throws when a byte has no token at all; we fall back to the
                    // unknown token, or drop the byte when there is none.
                    if let Some(id) = vocab.byte_to_token(b).or(vocab.special.unk) {
                        out.push(id);
                    }
                }
            }
        }
        i = s.next;
    }
}
