// Q6_K block dot over 8-bit activations (quantize_q8.wgsl) for the decode mat-vec: the thread
// mapping of q6_k_blk.wgsl (sixteen invocations a block; invocation t the weights 128h + 32k +
// 4v .. +4 of its half h = t / 8 for the four sub-blocks k, v = t % 8). The six-bit weights are
// put together a word (four bytes 0..63) at a time as there, and each word meets its four
// activation bytes in one packed 8-bit dot product; the weights' offset of 32 is one more
// against ones. `xq` is the vec4 index of the block's first activation. Returns (dot, 0).
fn q6s(w: u32, sh: u32) -> vec2<f32> {
    let a = bitcast<i32>(w << (24u - sh)) >> 24u;
    let c = bitcast<i32>(w << (8u - sh)) >> 24u;
    return vec2<f32>(f32(a), f32(c));
}

fn q6x(q: u32, xv: u32, dx: f32) -> f32 {
    return dx * f32(dot4I8Packed(q, xv) - 32 * dot4I8Packed(0x01010101u, xv));
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
    // 32-block k of x: xq / 8 + 4h + k, word v of it.
    let kb = xq / 8u + 4u * h;
    let nq = p.cols / 4u;
    let x0 = x[kb * 8u + v];
    let x1 = x[kb * 8u + 8u + v];
    let x2 = x[kb * 8u + 16u + v];
    let x3 = x[kb * 8u + 24u + v];
    let sh = 8u * (v / 4u);
    let s01 = q6s(sa, sh);
    let s23 = q6s(sb, sh);
    let lo = 0x0F0F0F0Fu;
    let hi = 0x30303030u;
    let q0 = (la & lo) | ((hq << 4u) & hi);
    let q1 = (lb & lo) | ((hq << 2u) & hi);
    let q2 = ((la >> 4u) & lo) | (hq & hi);
    let q3 = ((lb >> 4u) & lo) | ((hq >> 2u) & hi);
    let r = (s01.x * q6x(q0, x0, bitcast<f32>(x[nq + kb])) + s01.y * q6x(q1, x1, bitcast<f32>(x[nq + kb + 1u])))
        + (s23.x * q6x(q2, x2, bitcast<f32>(x[nq + kb + 2u])) + s23.y * q6x(q3, x3, bitcast<f32>(x[nq + kb + 3u])));
    return vec2<f32>(d * r, 0.0);
}
