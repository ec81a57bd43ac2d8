// F16: two weights per word.
const BW: u32 = 16u;
const CPB: u32 = 1u;
const QB: u32 = 32u; // weights per block

fn load_chunk(blk: u32, sub: u32, w: ptr<function, array<vec4<f32>, 8>>) {
    for (var j = 0u; j < 8u; j++) {
        let b = blk + 2u * j;
        (*w)[j] = vec4<f32>(unpack2x16float(wq[b]), unpack2x16float(wq[b + 1u]));
    }
}

// Weights j..j+3 of the block (j a multiple of 4): the mat-vec's unit.
fn load_quad(blk: u32, j: u32) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(wq[blk + j / 2u]), unpack2x16float(wq[blk + j / 2u + 1u]));
}
