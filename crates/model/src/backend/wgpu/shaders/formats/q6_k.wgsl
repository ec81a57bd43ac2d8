// Q6_K, repacked to 212 bytes: words 0..32 = ql, 32..48 = qh, 48..52 = scales (i8), word 52 = d.
// Per 128 weights h, sub-block k (0..4) of 32: low bits in ql[64h + 32(k % 2) + l] (low nibble
// for k < 2), high bits (qh[32h + l] >> 2k) & 3, scale scales[8h + 2k + l / 16]; value
// d * scale * (q - 32).
const BW: u32 = 53u;
const CPB: u32 = 8u;
const QB: u32 = 256u; // weights per block

// Scale i (a signed byte), by shifts rather than a vector index chosen at run time.
fn q6k_scale(blk: u32, i: u32) -> f32 {
    return f32(bitcast<i32>(wq[blk + 48u + i / 4u] << (24u - 8u * (i % 4u))) >> 24u);
}

fn load_chunk(blk: u32, sub: u32, w: ptr<function, array<vec4<f32>, 8>>) {
    let d = unpack2x16float(wq[blk + 52u]).x;
    let h = sub / 4u;
    let k = sub % 4u;
    let ql = blk + 16u * h + 8u * (k & 1u);
    let qh = blk + 32u + 8u * h;
    let s0 = 8u * h + 2u * k;
    let sc = vec2<f32>(q6k_scale(blk, s0), q6k_scale(blk, s0 + 1u)) * d;
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

// Weights j..j+3 of the block (j a multiple of 4): the mat-vec's unit. Half h = j / 128,
// sub-block k = (j / 32) % 4 of it, weight l = j % 32 of that.
fn load_quad(blk: u32, j: u32) -> vec4<f32> {
    let h = j / 128u;
    let k = (j / 32u) % 4u;
    let l = j % 32u;
    let ql = wq[blk + 16u * h + 8u * (k & 1u) + l / 4u];
    let qh = wq[blk + 32u + 8u * h + l / 4u];
    let si = 8u * h + 2u * k + l / 16u;
    let sc = q6k_scale(blk, si) * unpack2x16float(wq[blk + 52u]).x;
    let lo = nibs(ql, k >= 2u);
    let hb = (bytes4(qh) >> vec4<u32>(2u * k)) & vec4<u32>(3u);
    return (vec4<f32>(lo | (hb << vec4<u32>(4u))) - 32.0) * sc;
}
