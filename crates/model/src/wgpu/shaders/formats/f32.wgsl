// F32: 32 words per chunk.
const BW: u32 = 32u; // words per block
const CPB: u32 = 1u; // 32-weight chunks per block

fn load_chunk(blk: u32, sub: u32, w: ptr<function, array<vec4<f32>, 8>>) {
    for (var j = 0u; j < 8u; j++) {
        let b = blk + 4u * j;
        (*w)[j] = vec4<f32>(bitcast<f32>(wq[b]), bitcast<f32>(wq[b + 1u]), bitcast<f32>(wq[b + 2u]), bitcast<f32>(wq[b + 3u]));
    }
}
