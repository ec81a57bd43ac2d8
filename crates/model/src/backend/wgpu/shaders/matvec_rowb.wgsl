// Row `row` of weight K_ (a K-quant with a block dot, formats/*_blk.wgsl) dotted with x (.x), and
// the sum of squares of x (.y, norm variant). Sixteen invocations take a block, so a step of the
// workgroup's s invocations covers s / 16 consecutive blocks; two steps per loop turn, the second
// masked past the row's end (it reads the last block again and counts for nothing).
fn row_dotK_(row: u32, lane: u32, s: u32) -> vec2<f32> {
    let nb = p.cols / QBK_;
    let rb = row * nb * BWK_;
    let t = lane % 16u;
    let bps = s / 16u;
    let last = nb - 1u;
    var acc = vec2<f32>(0.0);
    for (var b = lane / 16u; b < nb; b += 2u * bps) {
        let b1 = min(b + bps, last);
        let r0 = dotblkK_(rb + b * BWK_, t, b * (QBK_ / 4u));
        let r1 = dotblkK_(rb + b1 * BWK_, t, b1 * (QBK_ / 4u)) * f32(b + bps < nb);
        acc += r0 + r1;
    }
    return acc;
}
