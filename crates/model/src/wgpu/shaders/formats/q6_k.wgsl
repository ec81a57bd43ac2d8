// Q6_K, repacked to 212 bytes: words 0..32 = ql, 32..48 = qh, 48..52 = scales (i8), word 52 = d.
// Per 128 weights h, sub-block k (0..4) of 32: low bits in ql[64h + 32(k % 2) + l] (low nibble
// for k < 2), high bits (qh[32h + l] >> 2k) & 3, scale scales[8h + 2k + l / 16]; value
// d * scale * (q - 32).
const BW: u32 = 53u;
const CPB: u32 = 8u;

fn load_chunk(blk: u32, sub: u32, w: ptr<function, array<vec4<f32>, 8>>) {
    let d = unpack2x16float(wq[blk + 52u]).x;
    let h = sub / 4u;
    let k = sub % 4u;
    let ql = blk + 16u * h + 8u * (k & 1u);
    let qh = blk + 32u + 8u * h;
    let s0 = 8u * h + 2u * k;
    let sc = vec2<f32>(sbytes4(wq[blk + 48u + s0 / 4u])[s0 % 4u], sbytes4(wq[blk + 48u + (s0 + 1u) / 4u])[(s0 + 1u) % 4u]) * d;
    for (var j = 0u; j < 8u; j++) {
        let q = wq[ql + j];
        let lo = select(nib_lo(q), nib_hi(q), k >= 2u);
        let hb = ((bytes4(wq[qh + j]) >> vec4<u32>(2u * k)) & vec4<u32>(3u)) << vec4<u32>(4u);
        (*w)[j] = (vec4<f32>(lo | hb) - 32.0) * sc[j / 4u];
    }
}
