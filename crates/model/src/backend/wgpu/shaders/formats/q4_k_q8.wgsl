// Q4_K block dot over 8-bit activations (quantize_q8.wgsl) for the decode mat-vec
// (matvec_rowb.wgsl, in shaders.rs's `matvec_q8`): the thread mapping of q4_k_blk.wgsl (sixteen invocations a
// block; invocation t the low nibbles of qs words 8g + 2u and +1, sub-block 2g, and their high
// nibbles, sub-block 2g + 1; g = t / 4, u = t % 4), but the nibbles stay bytes: each word's four
// masked nibbles and the four activation bytes they meet are one packed 8-bit dot product, and
// one more against ones sums the activations for the sub-block's min. `xq` is the index of the
// block's first four activations: a vec4 of the f32 row, a word of the 8-bit one (its 32-block
// is xq / 8); the 32-blocks' scales follow the bytes. Returns (dot, 0).
fn dotblk(blk: u32, t: u32, xq: u32) -> vec2<f32> {
    let g = t / 4u;
    let u = t % 4u;
    let dm = unpack2x16float(wq[blk]);
    let sw0 = wq[blk + 1u];
    let sw1 = wq[blk + 2u];
    let sw2 = wq[blk + 3u];
    let qa = wq[blk + 4u + 8u * g + 2u * u];
    let qb = wq[blk + 5u + 8u * g + 2u * u];
    let kb = xq / 8u + 2u * g;
    let xa0 = x[kb * 8u + 2u * u];
    let xa1 = x[kb * 8u + 2u * u + 1u];
    let xb0 = x[kb * 8u + 8u + 2u * u];
    let xb1 = x[kb * 8u + 8u + 2u * u + 1u];
    let nq = p.cols / 4u;
    let dx = vec2<f32>(bitcast<f32>(x[nq + kb]), bitcast<f32>(x[nq + kb + 1u]));
    let sm = kscale_pair(sw0, sw1, sw2, g);
    let lo4 = 0x0F0F0F0Fu;
    let ones = 0x01010101u;
    let dl = dot4I8Packed(qa & lo4, xa0) + dot4I8Packed(qb & lo4, xa1);
    let dh = dot4I8Packed((qa >> 4u) & lo4, xb0) + dot4I8Packed((qb >> 4u) & lo4, xb1);
    let sl = dot4I8Packed(ones, xa0) + dot4I8Packed(ones, xa1);
    let sh2 = dot4I8Packed(ones, xb0) + dot4I8Packed(ones, xb1);
    let isc = vec2<i32>(sm.xy);
    let imn = vec2<i32>(sm.zw);
    let v = dx.x * (dm.x * f32(isc.x * dl) - dm.y * f32(imn.x * sl))
        + dx.y * (dm.x * f32(isc.y * dh) - dm.y * f32(imn.y * sh2));
    return vec2<f32>(v, 0.0);
}
