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
    // Straight-line loads: all sixteen are in flight at once.
    let l0 = wq[ql + 0u];
    let h0 = wq[qh + 0u];
    let l1 = wq[ql + 1u];
    let h1 = wq[qh + 1u];
    let l2 = wq[ql + 2u];
    let h2 = wq[qh + 2u];
    let l3 = wq[ql + 3u];
    let h3 = wq[qh + 3u];
    let l4 = wq[ql + 4u];
    let h4 = wq[qh + 4u];
    let l5 = wq[ql + 5u];
    let h5 = wq[qh + 5u];
    let l6 = wq[ql + 6u];
    let h6 = wq[qh + 6u];
    let l7 = wq[ql + 7u];
    let h7 = wq[qh + 7u];
    let sh = vec4<u32>(2u * k);
    let up = k >= 2u;
    (*w)[0] = (vec4<f32>(select(nib_lo(l0), nib_hi(l0), up) | (((bytes4(h0) >> sh) & vec4<u32>(3u)) << vec4<u32>(4u))) - 32.0) * sc.x;
    (*w)[1] = (vec4<f32>(select(nib_lo(l1), nib_hi(l1), up) | (((bytes4(h1) >> sh) & vec4<u32>(3u)) << vec4<u32>(4u))) - 32.0) * sc.x;
    (*w)[2] = (vec4<f32>(select(nib_lo(l2), nib_hi(l2), up) | (((bytes4(h2) >> sh) & vec4<u32>(3u)) << vec4<u32>(4u))) - 32.0) * sc.x;
    (*w)[3] = (vec4<f32>(select(nib_lo(l3), nib_hi(l3), up) | (((bytes4(h3) >> sh) & vec4<u32>(3u)) << vec4<u32>(4u))) - 32.0) * sc.x;
    (*w)[4] = (vec4<f32>(select(nib_lo(l4), nib_hi(l4), up) | (((bytes4(h4) >> sh) & vec4<u32>(3u)) << vec4<u32>(4u))) - 32.0) * sc.y;
    (*w)[5] = (vec4<f32>(select(nib_lo(l5), nib_hi(l5), up) | (((bytes4(h5) >> sh) & vec4<u32>(3u)) << vec4<u32>(4u))) - 32.0) * sc.y;
    (*w)[6] = (vec4<f32>(select(nib_lo(l6), nib_hi(l6), up) | (((bytes4(h6) >> sh) & vec4<u32>(3u)) << vec4<u32>(4u))) - 32.0) * sc.y;
    (*w)[7] = (vec4<f32>(select(nib_lo(l7), nib_hi(l7), up) | (((bytes4(h7) >> sh) & vec4<u32>(3u)) << vec4<u32>(4u))) - 32.0) * sc.y;
}
