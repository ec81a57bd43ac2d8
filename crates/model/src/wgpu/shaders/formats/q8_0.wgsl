// Q8_0, repacked to 36 bytes: word 0 = d, words 1..9 = 32 signed bytes; value q * d.
const BW: u32 = 9u;
const CPB: u32 = 1u;

fn load_chunk(blk: u32, sub: u32, w: ptr<function, array<vec4<f32>, 8>>) {
    let d = unpack2x16float(wq[blk]).x;
    for (var j = 0u; j < 8u; j++) {
        (*w)[j] = sbytes4(wq[blk + 1u + j]) * d;
    }
}
