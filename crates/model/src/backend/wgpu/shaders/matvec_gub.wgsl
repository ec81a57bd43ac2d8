// Gate and up rows (mode 2, weights 0 and 1 with rows0 rows each, both K-quants with a block
// dot) dotted with x: (gate, up, sum of squares of x). As matvec_rowb.wgsl: sixteen invocations
// a block, two steps per loop turn, the second masked past the row's end.
fn row_dot_gu(row: u32, lane: u32, s: u32) -> vec3<f32> {
    let nb = p.cols / QB0;
    let rb0 = row * nb * BW0;
    let rb1 = row * nb * BW1;
    let t = lane % 16u;
    let bps = s / 16u;
    let last = nb - 1u;
    var acc = vec3<f32>(0.0);
    for (var b = lane / 16u; b < nb; b += 2u * bps) {
        let b1 = min(b + bps, last);
        let m1 = f32(b + bps < nb);
        let g0 = dotblk0(rb0 + b * BW0, t, b * (QB0 / 4u));
        let u0 = dotblk1(rb1 + b * BW1, t, b * (QB0 / 4u));
        let g1 = dotblk0(rb0 + b1 * BW0, t, b1 * (QB0 / 4u)) * m1;
        let u1 = dotblk1(rb1 + b1 * BW1, t, b1 * (QB0 / 4u)) * m1;
        acc += vec3<f32>(g0.x + g1.x, u0.x + u1.x, g0.y + g1.y);
    }
    return acc;
}
