// Q8_0, repacked to 36 bytes: word 0 = d, words 1..9 = 32 signed bytes; value q * d.
const BW: u32 = 9u;
const CPB: u32 = 1u;
const QB: u32 = 32u; // weights per block

fn load_chunk(blk: u32, sub: u32, w: ptr<function, array<vec4<f32>, 8>>) {
    let d = unpack2x16float(wq[blk]).x;
    // Straight-line loads: all eight are in flight at once.
    let q0 = wq[blk + 1u];
    let q1 = wq[blk + 2u];
    let q2 = wq[blk + 3u];
    let q3 = wq[blk + 4u];
    let q4 = wq[blk + 5u];
    let q5 = wq[blk + 6u];
    let q6 = wq[blk + 7u];
    let q7 = wq[blk + 8u];
    (*w)[0] = sbytes4(q0) * d;
    (*w)[1] = sbytes4(q1) * d;
    (*w)[2] = sbytes4(q2) * d;
    (*w)[3] = sbytes4(q3) * d;
    (*w)[4] = sbytes4(q4) * d;
    (*w)[5] = sbytes4(q5) * d;
    (*w)[6] = sbytes4(q6) * d;
    (*w)[7] = sbytes4(q7) * d;
}

// Weights j..j+3 of the block (j a multiple of 4): the mat-vec's unit.
fn load_quad(blk: u32, j: u32) -> vec4<f32> {
    return sbytes4(wq[blk + 1u + j / 4u]) * unpack2x16float(wq[blk]).x;
}
