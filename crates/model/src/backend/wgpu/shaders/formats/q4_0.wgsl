// Q4_0, repacked to 20 bytes: word 0 = d (f16, upper half zero), words 1..5 = qs.
// Weight i < 16 is the low nibble of qs[i], weight i + 16 its high nibble; value (q - 8) * d.
const BW: u32 = 5u;
const CPB: u32 = 1u;
const QB: u32 = 32u; // weights per block

fn load_chunk(blk: u32, sub: u32, w: ptr<function, array<vec4<f32>, 8>>) {
    let d = unpack2x16float(wq[blk]).x;
    // Straight-line loads: all four are in flight at once.
    let q0 = wq[blk + 1u];
    let q1 = wq[blk + 2u];
    let q2 = wq[blk + 3u];
    let q3 = wq[blk + 4u];
    (*w)[0] = (vec4<f32>(nib_lo(q0)) - 8.0) * d;
    (*w)[4] = (vec4<f32>(nib_hi(q0)) - 8.0) * d;
    (*w)[1] = (vec4<f32>(nib_lo(q1)) - 8.0) * d;
    (*w)[5] = (vec4<f32>(nib_hi(q1)) - 8.0) * d;
    (*w)[2] = (vec4<f32>(nib_lo(q2)) - 8.0) * d;
    (*w)[6] = (vec4<f32>(nib_hi(q2)) - 8.0) * d;
    (*w)[3] = (vec4<f32>(nib_lo(q3)) - 8.0) * d;
    (*w)[7] = (vec4<f32>(nib_hi(q3)) - 8.0) * d;
}

// Weights j..j+3 of the block (j a multiple of 4): the mat-vec's unit.
fn load_quad(blk: u32, j: u32) -> vec4<f32> {
    let d = unpack2x16float(wq[blk]).x;
    let q = wq[blk + 1u + (j % 16u) / 4u];
    return (vec4<f32>(nibs(q, j >= 16u)) - 8.0) * d;
}
