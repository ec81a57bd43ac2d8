// Q4_K (144 bytes): word 0 = d | dmin << 16, words 1..4 = scales, words 4..36 = qs.
// Per 64 weights, 32 bytes of qs: sub-block 2p in the low nibbles, 2p + 1 in the high ones.
// Value d * sc * q - dmin * m.
const BW: u32 = 36u;
const CPB: u32 = 8u;

fn load_chunk(blk: u32, sub: u32, w: ptr<function, array<vec4<f32>, 8>>) {
    let dm = unpack2x16float(wq[blk]);
    let sm = kscale_min(blk, sub);
    let d = dm.x * sm.x;
    let m = dm.y * sm.y;
    let base = blk + 4u + 8u * (sub / 2u);
    let hi = (sub & 1u) == 1u;
    for (var j = 0u; j < 8u; j++) {
        let q = wq[base + j];
        let n = select(nib_lo(q), nib_hi(q), hi);
        (*w)[j] = vec4<f32>(n) * d - m;
    }
}
