// Helpers shared by every weight format. Weights are bound as `wq: array<u32>`; each format's
// `load_chunk` decodes 32 consecutive weights of one row into eight vec4s.

// The four bytes of a word, lowest first.
fn bytes4(q: u32) -> vec4<u32> {
    return (vec4<u32>(q) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(255u);
}

// Low and high nibbles of the four bytes of a word.
fn nib_lo(q: u32) -> vec4<u32> {
    return (vec4<u32>(q) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(15u);
}

fn nib_hi(q: u32) -> vec4<u32> {
    return (vec4<u32>(q) >> vec4<u32>(4u, 12u, 20u, 28u)) & vec4<u32>(15u);
}

// The four bytes of a word as signed 8-bit values.
fn sbytes4(q: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(q) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// The low (hi = false) or high nibbles of the four bytes of a word.
fn nibs(q: u32, hi: bool) -> vec4<u32> {
    return (vec4<u32>(q) >> (vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(select(0u, 4u, hi)))) & vec4<u32>(15u);
}

// Q4_K / Q5_K: the 6-bit scales (.xy) and mins (.zw) of sub-blocks 2g and 2g + 1 (ggml's
// get_scale_min_k4), branch-free, from the block's three scale words: bytes 2g % 4 and +1 of each.
fn kscale_pair(sw0: u32, sw1: u32, sw2: u32, g: u32) -> vec4<u32> {
    let sh = vec2<u32>(16u * (g % 2u), 16u * (g % 2u) + 8u);
    let a0 = (vec2<u32>(sw0) >> sh) & vec2<u32>(255u);
    let a1 = (vec2<u32>(sw1) >> sh) & vec2<u32>(255u);
    let a2 = (vec2<u32>(sw2) >> sh) & vec2<u32>(255u);
    let hi = g >= 2u;
    let sc = select(a0 & vec2<u32>(63u), (a2 & vec2<u32>(15u)) | ((a0 >> vec2<u32>(6u)) << vec2<u32>(4u)), hi);
    let mn = select(a1 & vec2<u32>(63u), (a2 >> vec2<u32>(4u)) | ((a1 >> vec2<u32>(6u)) << vec2<u32>(4u)), hi);
    return vec4<u32>(sc, mn);
}

// Q6_K: signed scale bytes `sh / 8` and `sh / 8 + 2` of scale word `w`, as floats.
fn q6s(w: u32, sh: u32) -> vec2<f32> {
    let a = bitcast<i32>(w << (24u - sh)) >> 24u;
    let c = bitcast<i32>(w << (8u - sh)) >> 24u;
    return vec2<f32>(f32(a), f32(c));
}

// Q6_K: the six-bit weights (bytes 0..63, four to a word) of ql words `la` (sub-blocks 0 and 2,
// low and high nibbles) and `lb` (1 and 3) with the two high bits of each from qh word `hq`.
fn q6_words(la: u32, lb: u32, hq: u32) -> vec4<u32> {
    let lo = 0x0F0F0F0Fu;
    let hi = 0x30303030u;
    return vec4<u32>(
        (la & lo) | ((hq << 4u) & hi),
        (lb & lo) | ((hq << 2u) & hi),
        ((la >> 4u) & lo) | (hq & hi),
        ((lb >> 4u) & lo) | ((hq >> 2u) & hi),
    );
}
