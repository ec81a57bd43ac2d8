// F32: 32 words per chunk.
const BW: u32 = 32u; // words per block
const CPB: u32 = 1u; // 32-weight chunks per block
const QB: u32 = 32u; // weights per block

fn load_chunk(blk: u32, sub: u32, w: ptr<function, array<vec4<f32>, 8>>) {
    for (var j = 0u; j < 8u; j++) {
        let b = blk + 4u * j;
        (*w)[j] = vec4<f32>(bitcast<f32>(wq[b]), bitcast<f32>(wq[b + 1u]), bitcast<f32>(wq[b + 2u]), bitcast<f32>(wq[b + 3u]));
    }
}

// Weights j..j+3 of the block (j a multiple of 4): the mat-vec's unit.
fn load_quad(blk: u32, j: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<f32>(wq[blk + j]), bitcast<f32>(wq[blk + j + 1u]), bitcast<f32>(wq[blk + j + 2u]), bitcast<f32>(wq[blk + j + 3u]));
}
