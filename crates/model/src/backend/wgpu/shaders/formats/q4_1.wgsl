// Q4_1 (20 bytes, already word-aligned): word 0 = d | m << 16, words 1..5 = qs; value q * d + m.
const BW: u32 = 5u;
const CPB: u32 = 1u;
const QB: u32 = 32u; // weights per block

fn load_chunk(blk: u32, sub: u32, w: ptr<function, array<vec4<f32>, 8>>) {
    let dm = unpack2x16float(wq[blk]);
    for (var j = 0u; j < 4u; j++) {
        let q = wq[blk + 1u + j];
        (*w)[j] = vec4<f32>(nib_lo(q)) * dm.x + dm.y;
        (*w)[j + 4u] = vec4<f32>(nib_hi(q)) * dm.x + dm.y;
    }
}

// Weights j..j+3 of the block (j a multiple of 4): the mat-vec's unit.
fn load_quad(blk: u32, j: u32) -> vec4<f32> {
    let dm = unpack2x16float(wq[blk]);
    let q = wq[blk + 1u + (j % 16u) / 4u];
    return vec4<f32>(nibs(q, j >= 16u)) * dm.x + dm.y;
}
