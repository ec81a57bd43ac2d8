//! Load-time weight layouts: a weight row rewritten once, when the model loads, into an order
//! the SIMD kernels read without shuffling. Same bytes per row as the GGUF format, so a packed
//! tensor replaces the mapped one one for one.
//!
//! Q4_0 ×8: each run of eight consecutive blocks of a row becomes one group
//! of 144 bytes, the eight f16 scales `d` first (16 bytes), then four 32-byte vectors; bytes
//! `4j..4j + 4` of vector `k` are bytes `4k..4k + 4` of block `j`'s `qs`. A byte holds codes `i`
//! (low nibble) and `i + 16` (high), so masking vector `k` gives, in 32-bit lane `j`, codes
//! `4k..4k + 4` of block `j`, and shifting first gives codes `16 + 4k..`: the lanes of a dot
//! product then belong to blocks, and eight blocks are scaled by one vector multiply instead of
//! each block's sum being reduced across lanes first. The row's last `nb % 8` blocks stay as
//! they are.
//!
//! Q4_K ×8: the same idea inside a super-block, lanes being its eight sub-blocks
//! ([`pack_q4_k`]).

use std::mem::size_of;

use crate::legacy::BlockQ4_0;

/// Blocks per packed group.
pub(crate) const GROUP: usize = 8;
const Q4_0_BYTES: usize = size_of::<BlockQ4_0>();
/// Bytes of one packed Q4_0 group.
pub(crate) const Q4_0_GROUP_BYTES: usize = GROUP * Q4_0_BYTES;

/// Packs `n_rows` rows of `n_cols` Q4_0 values from `w` into `out` (same length).
///
/// The caller checked the lengths.
pub(super) fn pack_q4_0(w: &[u8], _n_rows: usize, n_cols: usize, out: &mut [u8]) {
    rewrite_q4_0(w, n_cols, out, true)
}

/// The inverse of [`pack_q4_0`].
pub(super) fn unpack_q4_0(w: &[u8], _n_rows: usize, n_cols: usize, out: &mut [u8]) {
    rewrite_q4_0(w, n_cols, out, false)
}

/// The pieces of a group of eight Q4_0 blocks: (offset in the GGUF layout, offset in the packed
/// layout, length). Together they cover the group's bytes once in either layout.
fn q4_0_pieces() -> impl Iterator<Item = (usize, usize, usize)> {
    (0..GROUP).flat_map(|j| {
        let block = j * Q4_0_BYTES;
        let codes = (0..4).map(move |k| (block + 2 + 4 * k, 16 + 32 * k + 4 * j, 4));
        std::iter::once((block, 2 * j, 2)).chain(codes)
    })
}

/// Rows of `n_cols` Q4_0 values from the GGUF layout to the packed one (`pack`) or back; the
/// last `nb % 8` blocks of a row are the same in both.
fn rewrite_q4_0(w: &[u8], n_cols: usize, out: &mut [u8], pack: bool) {
    let nb = n_cols / 32;
    let row = nb * Q4_0_BYTES;
    let groups = nb / GROUP * Q4_0_GROUP_BYTES;
    if row == 0 {
        return;
    }
    for (src, dst) in w.chunks_exact(row).zip(out.chunks_exact_mut(row)) {
        for (s, d) in src[..groups]
            .chunks_exact(Q4_0_GROUP_BYTES)
            .zip(dst[..groups].chunks_exact_mut(Q4_0_GROUP_BYTES))
        {
            for (file, packed, len) in q4_0_pieces() {
                let (from, to) = if pack { (file, packed) } else { (packed, file) };
                d[to..to + len].copy_from_slice(&s[from..from + len]);
            }
        }
        dst[groups..].copy_from_slice(&src[groups..]);
    }
}

/// Bytes of one Q4_K super-block (packed or not).
const Q4_K_BYTES: usize = size_of::<crate::kquants::BlockQ4K>();
/// Where a Q4_K super-block's codes start (after `d`, `dmin` and the 12 scale bytes).
const Q4_K_QS: usize = 16;

/// Packs `n_rows` rows of `n_cols` Q4_K values (whole super-blocks) into `out`.
///
/// Q4_K ×8: a super-block keeps its first 16 bytes (`d`, `dmin`, scales); its 128 bytes of codes
/// become four 32-byte vectors, bytes `4l..4l + 4` of vector `m` holding codes `8m..8m + 4` of
/// sub-block `l` in their low nibbles and codes `8m + 4..8m + 8` in their high ones. Masking or
/// shifting a vector gives, in 32-bit lane `l`, four codes of sub-block `l`: a dot product's lanes
/// are the eight sub-blocks, which one vector multiply then weights by their eight scales.
///
/// The caller checked the lengths.
pub(super) fn pack_q4_k(w: &[u8], _n_rows: usize, _n_cols: usize, out: &mut [u8]) {
    for (src, dst) in w
        .chunks_exact(Q4_K_BYTES)
        .zip(out.chunks_exact_mut(Q4_K_BYTES))
    {
        dst[..Q4_K_QS].copy_from_slice(&src[..Q4_K_QS]);
        let qs = &src[Q4_K_QS..];
        // Code `k` of sub-block `s`: 64 codes per 32 bytes, the first 32 in the low nibbles.
        let code = |s: usize, k: usize| (qs[32 * (s / 2) + k] >> (4 * (s % 2))) & 0x0F;
        for m in 0..4 {
            for l in 0..8 {
                for i in 0..4 {
                    dst[Q4_K_QS + 32 * m + 4 * l + i] =
                        code(l, 8 * m + i) | (code(l, 8 * m + 4 + i) << 4);
                }
            }
        }
    }
}

/// The inverse of [`pack_q4_k`].
pub(super) fn unpack_q4_k(w: &[u8], _n_rows: usize, _n_cols: usize, out: &mut [u8]) {
    for (src, dst) in w
        .chunks_exact(Q4_K_BYTES)
        .zip(out.chunks_exact_mut(Q4_K_BYTES))
    {
        dst[..Q4_K_QS].copy_from_slice(&src[..Q4_K_QS]);
        let packed = &src[Q4_K_QS..];
        let code = |s: usize, k: usize| {
            let (m, i, high) = (k / 8, k % 4, k % 8 >= 4);
            let byte = packed[32 * m + 4 * s + i];
            if high {
                byte >> 4
            } else {
                byte & 0x0F
            }
        };
        for j in 0..4 {
            for k in 0..32 {
                dst[Q4_K_QS + 32 * j + k] = code(2 * j, k) | (code(2 * j + 1, k) << 4);
            }
        }
    }
}
