// Q4_0, repacked to 20 bytes: word 0 = d (f16, upper half zero), words 1..5 = qs.
// Weight i < 16 is the low nibble of qs[i], weight i + 16 its high nibble; value (q - 8) * d.
const BW: u32 = 5u;
const CPB: u32 = 1u;

fn load_chunk(blk: u32, sub: u32, w: ptr<function, array<vec4<f32>, 8>>) {
    let d = unpack2x16float(wq[blk]).x;
    for (var j = 0u; j < 4u; j++) {
        let q = wq[blk + 1u + j];
        (*w)[j] = (vec4<f32>(nib_lo(q)) - 8.0) * d;
        (*w)[j + 4u] = (vec4<f32>(nib_hi(q)) - 8.0) * d;
    }
}
