// Q6_K block dot for the decode mat-vec (matvec_rowb.wgsl): sixteen invocations take one block,
// invocation t the weights 128h + 32k + 4v .. +4 of its half h = t / 8 for the four sub-blocks
// k, v = t % 8: ql words 16h + v (k = 0 low nibbles, k = 2 high) and 16h + 8 + v (k = 1, 3), qh
// word 32 + 8h + v (bits 2k, 2k + 1), the scales in words 48 + 2h and 49 + 2h and d loaded once
// for all 16 weights. The six-bit weights are put together a word (four weights) at a time and
// turned into floats without integer-to-float conversions (a quarter-rate instruction on NVIDIA):
// byte b under the exponent of 2^23 is the float 2^23 + b exactly, less 2^23 + 32 is b - 32. Only
// the two scale bytes used are converted.
// Returns (dot with x, sum of squares of x).
fn q6f(m: u32) -> vec4<f32> {
    let b = (vec4<u32>(m) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(255u);
    return bitcast<vec4<f32>>(b | vec4<u32>(0x4B000000u)) - vec4<f32>(8388640.0);
}

fn dotblk(blk: u32, t: u32, xq: u32) -> vec2<f32> {
    let h = t / 8u;
    let v = t % 8u;
    let la = wq[blk + 16u * h + v];
    let lb = wq[blk + 16u * h + 8u + v];
    let hq = wq[blk + 32u + 8u * h + v];
    let sa = wq[blk + 48u + 2u * h];
    let sb = wq[blk + 49u + 2u * h];
    let d = unpack2x16float(wq[blk + 52u]).x;
    let i0 = xq + 32u * h + v;
    let x0 = x[i0];
    let x1 = x[i0 + 8u];
    let x2 = x[i0 + 16u];
    let x3 = x[i0 + 24u];
    // Scales 8h + 2k + v / 4: bytes v / 4 and 2 + v / 4 of each scale word.
    let sh = 8u * (v / 4u);
    let s01 = q6s(sa, sh);
    let s23 = q6s(sb, sh);
    let qw = q6_words(la, lb, hq);
    let q0 = q6f(qw.x);
    let q1 = q6f(qw.y);
    let q2 = q6f(qw.z);
    let q3 = q6f(qw.w);
    let r = (s01.x * dot(q0, xw(x0, i0)) + s01.y * dot(q1, xw(x1, i0 + 8u)))
        + (s23.x * dot(q2, xw(x2, i0 + 16u)) + s23.y * dot(q3, xw(x3, i0 + 24u)));
    return vec2<f32>(d * r, (sq(x0) + sq(x1)) + (sq(x2) + sq(x3)));
}
