// Q5_K (176 bytes): word 0 = d | dmin << 16, words 1..4 = scales, words 4..12 = qh,
// words 12..44 = qs (as Q4_K). The fifth bit of weight l of sub-block s is bit s of qh[l].
const BW: u32 = 44u;
const CPB: u32 = 8u;
const QB: u32 = 256u; // weights per block

fn load_chunk(blk: u32, sub: u32, w: ptr<function, array<vec4<f32>, 8>>) {
    let dm = unpack2x16float(wq[blk]);
    let sm = kscale_min(blk, sub);
    let d = dm.x * sm.x;
    let m = dm.y * sm.y;
    let base = blk + 12u + 8u * (sub / 2u);
    let hi = (sub & 1u) == 1u;
    for (var j = 0u; j < 8u; j++) {
        let q = wq[base + j];
        let n = select(nib_lo(q), nib_hi(q), hi);
        let h = ((bytes4(wq[blk + 4u + j]) >> vec4<u32>(sub)) & vec4<u32>(1u)) << vec4<u32>(4u);
        (*w)[j] = vec4<f32>(n | h) * d - m;
    }
}

// Weights j..j+3 of the block (j a multiple of 4): the mat-vec's unit (qs as Q4_K).
fn load_quad(blk: u32, j: u32) -> vec4<f32> {
    let dm = unpack2x16float(wq[blk]);
    let hi = (j & 32u) != 0u;
    let sub = 2u * (j / 64u) + u32(hi);
    let sm = kscale_min(blk, sub);
    let q = wq[blk + 12u + 8u * (j / 64u) + (j % 32u) / 4u];
    let h = ((bytes4(wq[blk + 4u + (j % 32u) / 4u]) >> vec4<u32>(sub)) & vec4<u32>(1u)) << vec4<u32>(4u);
    return vec4<f32>(nibs(q, hi) | h) * (dm.x * sm.x) - dm.y * sm.y;
}
