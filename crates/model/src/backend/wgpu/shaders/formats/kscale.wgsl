// Q4_K / Q5_K: byte k of the 12 packed scale bytes (words 1..4 of the block).
fn kscale_byte(blk: u32, k: u32) -> u32 {
    return (wq[blk + 1u + k / 4u] >> (8u * (k % 4u))) & 255u;
}

// 6-bit scale and min of sub-block s (ggml's get_scale_min_k4), without a branch (a branch in
// the decoders keeps a caller's loads from being in flight together).
fn kscale_min(blk: u32, s: u32) -> vec2<f32> {
    let b_s = kscale_byte(blk, s);
    let b_s4 = kscale_byte(blk, s + 4u);
    let b_lo = kscale_byte(blk, s & 3u); // byte s - 4 where s >= 4
    let lo = s < 4u;
    let sc = select((b_s4 & 15u) | ((b_lo >> 6u) << 4u), b_s & 63u, lo);
    let m = select((b_s4 >> 4u) | ((b_s >> 6u) << 4u), b_s4 & 63u, lo);
    return vec2<f32>(f32(sc), f32(m));
}
