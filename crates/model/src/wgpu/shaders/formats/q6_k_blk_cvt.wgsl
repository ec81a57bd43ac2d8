// The earlier Q6_K block dot (RUSTORCH_WGPU_Q6K=cvt): integer-to-float conversions of every weight
// and of all eight scale bytes. See q6_k_blk.wgsl for the default.
// Q6_K block dot for the decode mat-vec (matvec_rowb.wgsl): sixteen invocations take one block,
// invocation t the weights 128h + 32k + 4v .. +4 of its half h = t / 8 for the four sub-blocks
// k, v = t % 8: ql words 16h + v (k = 0 low nibbles, k = 2 high) and 16h + 8 + v (k = 1, 3), qh
// word 32 + 8h + v (bits 2k, 2k + 1), the four scales in words 48 + 2h and 49 + 2h and d loaded
// once for all 16 weights. Returns (dot with x, sum of squares of x).
fn dotblk(blk: u32, t: u32, xq: u32) -> vec2<f32> {
    let h = t / 8u;
    let v = t % 8u;
    let la = wq[blk + 16u * h + v];
    let lb = wq[blk + 16u * h + 8u + v];
    let hq = wq[blk + 32u + 8u * h + v];
    let sa = sbytes4(wq[blk + 48u + 2u * h]);
    let sb = sbytes4(wq[blk + 49u + 2u * h]);
    let d = unpack2x16float(wq[blk + 52u]).x;
    let i0 = xq + 32u * h + v;
    let x0 = x[i0];
    let x1 = x[i0 + 8u];
    let x2 = x[i0 + 16u];
    let x3 = x[i0 + 24u];
    // Scales 8h + 2k + v / 4: bytes v / 4 and 2 + v / 4 of each scale word.
    let up = v >= 4u;
    let s01 = select(sa.xz, sa.yw, up);
    let s23 = select(sb.xz, sb.yw, up);
    let hb = bytes4(hq);
    let three = vec4<u32>(3u);
    let four = vec4<u32>(4u);
    let q0 = vec4<f32>(nib_lo(la) | ((hb & three) << four)) - 32.0;
    let q1 = vec4<f32>(nib_lo(lb) | (((hb >> vec4<u32>(2u)) & three) << four)) - 32.0;
    let q2 = vec4<f32>(nib_hi(la) | (((hb >> vec4<u32>(4u)) & three) << four)) - 32.0;
    let q3 = vec4<f32>(nib_hi(lb) | (((hb >> vec4<u32>(6u)) & three) << four)) - 32.0;
    let r = (s01.x * dot(q0, xw(x0, i0)) + s01.y * dot(q1, xw(x1, i0 + 8u)))
        + (s23.x * dot(q2, xw(x2, i0 + 16u)) + s23.y * dot(q3, xw(x3, i0 + 24u)));
    return vec2<f32>(d * r, (sq(x0) + sq(x1)) + (sq(x2) + sq(x3)));
}
