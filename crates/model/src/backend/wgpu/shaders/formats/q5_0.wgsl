// Q5_0, repacked to 24 bytes: word 0 = d, word 1 = qh, words 2..6 = qs.
// Bit i of qh is the fifth bit of weight i; value (q - 16) * d.
const BW: u32 = 6u;
const CPB: u32 = 1u;
const QB: u32 = 32u; // weights per block

fn load_chunk(blk: u32, sub: u32, w: ptr<function, array<vec4<f32>, 8>>) {
    let d = unpack2x16float(wq[blk]).x;
    let qh = wq[blk + 1u];
    for (var j = 0u; j < 4u; j++) {
        let q = wq[blk + 2u + j];
        let sh = vec4<u32>(4u * j) + vec4<u32>(0u, 1u, 2u, 3u);
        let h_lo = ((vec4<u32>(qh) >> sh) & vec4<u32>(1u)) << vec4<u32>(4u);
        let h_hi = ((vec4<u32>(qh) >> (sh + vec4<u32>(16u))) & vec4<u32>(1u)) << vec4<u32>(4u);
        (*w)[j] = (vec4<f32>(nib_lo(q) | h_lo) - 16.0) * d;
        (*w)[j + 4u] = (vec4<f32>(nib_hi(q) | h_hi) - 16.0) * d;
    }
}

// Weights j..j+3 of the block (j a multiple of 4): the mat-vec's unit.
fn load_quad(blk: u32, j: u32) -> vec4<f32> {
    let d = unpack2x16float(wq[blk]).x;
    let qh = wq[blk + 1u];
    let q = wq[blk + 2u + (j % 16u) / 4u];
    let h = ((vec4<u32>(qh) >> (vec4<u32>(j) + vec4<u32>(0u, 1u, 2u, 3u))) & vec4<u32>(1u)) << vec4<u32>(4u);
    return (vec4<f32>(nibs(q, j >= 16u) | h) - 16.0) * d;
}
