// Q4_K block dot for the decode mat-vec (matvec_rowb.wgsl): sixteen invocations take one block,
// invocation t its 16 weights 64g + 8u .. +8 (sub-block 2g, low nibbles of qs words 8g + 2u and
// +1) and 64g + 32 + 8u .. +8 (sub-block 2g + 1, their high nibbles), g = t / 4, u = t % 4. The
// block's d/dmin word and its three scale words are loaded once for all 16 weights (the quad
// decoder loads four words per four weights). Returns (dot with x, sum of squares of x).
fn dotblk(blk: u32, t: u32, xq: u32) -> vec2<f32> {
    let g = t / 4u;
    let u = t % 4u;
    let dm = unpack2x16float(wq[blk]);
    let sw0 = wq[blk + 1u];
    let sw1 = wq[blk + 2u];
    let sw2 = wq[blk + 3u];
    let qa = wq[blk + 4u + 8u * g + 2u * u];
    let qb = wq[blk + 5u + 8u * g + 2u * u];
    let il = xq + 16u * g + 2u * u;
    let ih = il + 8u;
    let xl0 = x[il];
    let xl1 = x[il + 1u];
    let xh0 = x[ih];
    let xh1 = x[ih + 1u];
    let sm = kscale_pair(sw0, sw1, sw2, g);
    let d = dm.x * vec2<f32>(sm.xy);
    let m = dm.y * vec2<f32>(sm.zw);
    let yl0 = xw(xl0, il);
    let yl1 = xw(xl1, il + 1u);
    let yh0 = xw(xh0, ih);
    let yh1 = xw(xh1, ih + 1u);
    let lo = dot(vec4<f32>(nib_lo(qa)), yl0) + dot(vec4<f32>(nib_lo(qb)), yl1);
    let hv = dot(vec4<f32>(nib_hi(qa)), yh0) + dot(vec4<f32>(nib_hi(qb)), yh1);
    let one = vec4<f32>(1.0);
    let sl = dot(yl0 + yl1, one);
    let sh2 = dot(yh0 + yh1, one);
    let v = (d.x * lo - m.x * sl) + (d.y * hv - m.y * sh2);
    return vec2<f32>(v, (sq(xl0) + sq(xl1)) + (sq(xh0) + sq(xh1)));
}
