// F16: two weights per word.
const BW: u32 = 16u;
const CPB: u32 = 1u;

fn load_chunk(blk: u32, sub: u32, w: ptr<function, array<vec4<f32>, 8>>) {
    for (var j = 0u; j < 8u; j++) {
        let b = blk + 2u * j;
        (*w)[j] = vec4<f32>(unpack2x16float(wq[b]), unpack2x16float(wq[b + 1u]));
    }
}
