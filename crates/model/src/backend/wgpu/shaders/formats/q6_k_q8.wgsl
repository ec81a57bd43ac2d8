// Q6_K block dot over 8-bit activations (quantize_q8.wgsl) for the decode mat-vec: the thread
// mapping of q6_k_blk.wgsl (sixteen invocations a block; invocation t the weights 128h + 32k +
// 4v .. +4 of its half h = t / 8 for the four sub-blocks k, v = t % 8). The six-bit weights are
// put together a word (four bytes 0..63) at a time as there, and each word meets its four
// activation bytes in one packed 8-bit dot product; the weights' offset of 32 is one more
// against ones. `xq` is the vec4 index of the block's first activation. Returns (dot, 0).
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
    let qw = q6_words(la, lb, hq);
    let r = (s01.x * q6x(qw.x, x0, bitcast<f32>(x[nq + kb])) + s01.y * q6x(qw.y, x1, bitcast<f32>(x[nq + kb + 1u])))
        + (s23.x * q6x(qw.z, x2, bitcast<f32>(x[nq + kb + 2u])) + s23.y * q6x(qw.w, x3, bitcast<f32>(x[nq + kb + 3u])));
    return vec2<f32>(d * r, 0.0);
}
