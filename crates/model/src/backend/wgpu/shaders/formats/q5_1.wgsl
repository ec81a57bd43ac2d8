// Q5_1 (24 bytes, already word-aligned): word 0 = d | m << 16, word 1 = qh, words 2..6 = qs;
// value q * d + m.
const BW: u32 = 6u;
const CPB: u32 = 1u;
const QB: u32 = 32u; // weights per block

fn load_chunk(blk: u32, sub: u32, w: ptr<function, array<vec4<f32>, 8>>) {
    let dm = unpack2x16float(wq[blk]);
    let qh = wq[blk + 1u];
    for (var j = 0u; j < 4u; j++) {
        let q = wq[blk + 2u + j];
        let sh = vec4<u32>(4u * j) + vec4<u32>(0u, 1u, 2u, 3u);
        let h_lo = ((vec4<u32>(qh) >> sh) & vec4<u32>(1u)) << vec4<u32>(4u);
        let h_hi = ((vec4<u32>(qh) >> (sh + vec4<u32>(16u))) & vec4<u32>(1u)) << vec4<u32>(4u);
        (*w)[j] = vec4<f32>(nib_lo(q) | h_lo) * dm.x + dm.y;
        (*w)[j + 4u] = vec4<f32>(nib_hi(q) | h_hi) * dm.x + dm.y;
    }
}

// Weights j..j+3 of the block (j a multiple of 4): the mat-vec's unit.
fn load_quad(blk: u32, j: u32) -> vec4<f32> {
    let dm = unpack2x16float(wq[blk]);
    let qh = wq[blk + 1u];
    let q = wq[blk + 2u + (j % 16u) / 4u];
    let h = ((vec4<u32>(qh) >> (vec4<u32>(j) + vec4<u32>(0u, 1u, 2u, 3u))) & vec4<u32>(1u)) << vec4<u32>(4u);
    return vec4<f32>(nibs(q, j >= 16u) | h) * dm.x + dm.y;
}
