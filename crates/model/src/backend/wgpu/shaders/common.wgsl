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
