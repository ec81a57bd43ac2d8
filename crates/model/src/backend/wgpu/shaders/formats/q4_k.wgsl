// Q4_K (144 bytes): word 0 = d | dmin << 16, words 1..4 = scales, words 4..36 = qs.
// Per 64 weights, 32 bytes of qs: sub-block 2p in the low nibbles, 2p + 1 in the high ones.
// Value d * sc * q - dmin * m.
const BW: u32 = 36u;
const CPB: u32 = 8u;
const QB: u32 = 256u; // weights per block

fn load_chunk(blk: u32, sub: u32, w: ptr<function, array<vec4<f32>, 8>>) {
    let dm = unpack2x16float(wq[blk]);
    let sm = kscale_min(blk, sub);
    let d = dm.x * sm.x;
    let m = dm.y * sm.y;
    let base = blk + 4u + 8u * (sub / 2u);
    let hi = (sub & 1u) == 1u;
    // Straight-line loads: all eight are in flight at once (a loop here was not unrolled).
    let q0 = wq[base + 0u];
    let q1 = wq[base + 1u];
    let q2 = wq[base + 2u];
    let q3 = wq[base + 3u];
    let q4 = wq[base + 4u];
    let q5 = wq[base + 5u];
    let q6 = wq[base + 6u];
    let q7 = wq[base + 7u];
    (*w)[0] = vec4<f32>(select(nib_lo(q0), nib_hi(q0), hi)) * d - m;
    (*w)[1] = vec4<f32>(select(nib_lo(q1), nib_hi(q1), hi)) * d - m;
    (*w)[2] = vec4<f32>(select(nib_lo(q2), nib_hi(q2), hi)) * d - m;
    (*w)[3] = vec4<f32>(select(nib_lo(q3), nib_hi(q3), hi)) * d - m;
    (*w)[4] = vec4<f32>(select(nib_lo(q4), nib_hi(q4), hi)) * d - m;
    (*w)[5] = vec4<f32>(select(nib_lo(q5), nib_hi(q5), hi)) * d - m;
    (*w)[6] = vec4<f32>(select(nib_lo(q6), nib_hi(q6), hi)) * d - m;
    (*w)[7] = vec4<f32>(select(nib_lo(q7), nib_hi(q7), hi)) * d - m;
}

// Weights j..j+3 of the block (j a multiple of 4): the mat-vec's unit. Group g = j / 64 of
// 32 qs bytes: weights 0..32 in the low nibbles (sub-block 2g), 32..64 in the high ones.
fn load_quad(blk: u32, j: u32) -> vec4<f32> {
    let dm = unpack2x16float(wq[blk]);
    let hi = (j & 32u) != 0u;
    let sm = kscale_min(blk, 2u * (j / 64u) + u32(hi));
    let q = wq[blk + 4u + 8u * (j / 64u) + (j % 32u) / 4u];
    return vec4<f32>(nibs(q, hi)) * (dm.x * sm.x) - dm.y * sm.y;
}
