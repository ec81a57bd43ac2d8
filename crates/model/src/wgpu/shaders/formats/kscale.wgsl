// Q4_K / Q5_K: byte k of the 12 packed scale bytes (words 1..4 of the block).
fn kscale_byte(blk: u32, k: u32) -> u32 {
    return (wq[blk + 1u + k / 4u] >> (8u * (k % 4u))) & 255u;
}

// 6-bit scale and min of sub-block s (ggml's get_scale_min_k4).
fn kscale_min(blk: u32, s: u32) -> vec2<f32> {
    if (s < 4u) {
        return vec2<f32>(f32(kscale_byte(blk, s) & 63u), f32(kscale_byte(blk, s + 4u) & 63u));
    }
    let sc = (kscale_byte(blk, s + 4u) & 15u) | ((kscale_byte(blk, s - 4u) >> 6u) << 4u);
    let m = (kscale_byte(blk, s + 4u) >> 4u) | ((kscale_byte(blk, s) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}
