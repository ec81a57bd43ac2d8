//! The iteration order of llama.cpp's `token_to_id` map.
//!
//! When the metadata names no EOT (or FIM) token, llama.cpp walks its
//! `std::unordered_map<std::string, llama_token>` and takes the first token whose text is on a
//! list; with several on the list (SmolLM2 has both `<|endoftext|>` and `<|im_end|>`), which
//! one wins is decided by the map's iteration order. We reproduce that order for libstdc++
//! (GCC's standard library, what llama.cpp is built with on Linux): its string hash, its prime
//! bucket counts and how it links nodes on insert and rehash.

/// libstdc++'s `std::_Hash_bytes` (64-bit), seeded as `std::hash<std::string>` seeds it.
pub(crate) fn std_hash(bytes: &[u8]) -> u64 {
    const MUL: u64 = (0xc6a4_a793_u64 << 32) + 0x5bd1_e995;
    const SEED: u64 = 0xc70f_6907;
    let shift_mix = |v: u64| v ^ (v >> 47);
    let mut hash = SEED ^ (bytes.len() as u64).wrapping_mul(MUL);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let data = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        hash ^= shift_mix(data.wrapping_mul(MUL)).wrapping_mul(MUL);
        hash = hash.wrapping_mul(MUL);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let data = rest
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) + u64::from(b));
        hash ^= data;
        hash = hash.wrapping_mul(MUL);
    }
    hash = shift_mix(hash).wrapping_mul(MUL);
    shift_mix(hash)
}

/// Bucket counts libstdc++ (GCC 12) moves through as a map grows from empty, one insert at a
/// time: it rehashes before the insert that would make the element count exceed the buckets.
const BUCKET_COUNTS: &[u64] = &[
    13, 29, 59, 127, 257, 541, 1109, 2357, 5087, 10273, 20753, 42043, 85229, 172933, 351061,
    712697, 1447153, 2938679, 5967347,
];

const NIL: u32 = u32::MAX;
/// a bucket whose first node follows the list head
const BEFORE_BEGIN: u32 = u32::MAX - 1;

/// Position of each key in the iteration order of an `unordered_map` filled with `keys` in
/// order (keys distinct). `None` beyond the bucket counts we know.
pub(crate) fn iteration_positions<'a>(
    keys: impl ExactSizeIterator<Item = &'a str>,
) -> Option<Vec<u32>> {
    let n = keys.len();
    let codes: Vec<u64> = keys.map(|k| std_hash(k.as_bytes())).collect();
    let mut next = vec![NIL; n];
    let mut head = NIL;
    let mut buckets: Vec<u32> = vec![NIL; 1];
    let mut steps = BUCKET_COUNTS.iter();
    // The next node after `prev`, where `prev` may be the list head.
    fn link<'a>(head: &'a mut u32, next: &'a mut [u32], prev: u32) -> &'a mut u32 {
        if prev == BEFORE_BEGIN {
            head
        } else {
            &mut next[prev as usize]
        }
    }
    for x in 0..n as u32 {
        if x as usize == buckets.len() || x == 0 {
            let nb = *steps.next()? as usize;
            let mut nbuckets = vec![NIL; nb];
            let mut p = head;
            head = NIL;
            let mut bbegin = 0;
            while p != NIL {
                let after = next[p as usize];
                let b = (codes[p as usize] % nb as u64) as usize;
                if nbuckets[b] == NIL {
                    next[p as usize] = head;
                    head = p;
                    nbuckets[b] = BEFORE_BEGIN;
                    if next[p as usize] != NIL {
                        nbuckets[bbegin] = p;
                    }
                    bbegin = b;
                } else {
                    let prev = nbuckets[b];
                    let l = link(&mut head, &mut next, prev);
                    let old = *l;
                    *l = p;
                    next[p as usize] = old;
                }
                p = after;
            }
            buckets = nbuckets;
        }
        let nb = buckets.len() as u64;
        let b = (codes[x as usize] % nb) as usize;
        if buckets[b] != NIL {
            let l = link(&mut head, &mut next, buckets[b]);
            let old = *l;
            *l = x;
            next[x as usize] = old;
        } else {
            next[x as usize] = head;
            head = x;
            let after = next[x as usize];
            if after != NIL {
                buckets[(codes[after as usize] % nb) as usize] = x;
            }
            buckets[b] = BEFORE_BEGIN;
        }
    }
    let mut pos = vec![0u32; n];
    let (mut p, mut i) = (head, 0);
    while p != NIL {
        pos[p as usize] = i;
        i += 1;
        p = next[p as usize];
    }
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_libstdcxx() {
        // values printed by std::hash<std::string> with g++ 12
        assert_eq!(std_hash(b"hello"), 2762169579135187400);
        assert_eq!(std_hash(b""), 6142509188972423790);
        assert_eq!(std_hash(b"<|im_end|>"), 2038672007907099973);
    }

    #[test]
    fn order_matches_libstdcxx() {
        // g++ 12: `m["t" + std::to_string(i)] = i` for i in 0..100, then iterate
        let want = [
            99, 96, 93, 89, 86, 85, 82, 81, 79, 78, 77, 76, 74, 71, 70, 68, 67, 65, 94, 64, 63, 62,
            61, 88, 60, 21, 20, 19, 23, 51, 83, 22, 3, 52, 59, 32, 43, 25, 97, 14, 0, 87, 41, 49,
            73, 16, 10, 80, 27, 66, 1, 75, 48, 2, 17, 42, 4, 91, 90, 38, 6, 5, 9, 84, 24, 98, 29,
            12, 8, 7, 11, 33, 30, 72, 31, 35, 36, 37, 92, 18, 47, 69, 34, 39, 40, 44, 45, 13, 46,
            50, 95, 26, 53, 57, 54, 55, 15, 56, 28, 58,
        ];
        let keys: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
        let pos = iteration_positions(keys.iter().map(String::as_str)).unwrap();
        let mut order: Vec<usize> = (0..100).collect();
        order.sort_by_key(|&i| pos[i]);
        assert_eq!(order, want);
    }
}
