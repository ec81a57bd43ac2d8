// RoPE as ggml computes it, shared by rope_kv.wgsl and attention.wgsl (FUSED). The first n_rot
// dims of a head pair up adjacent (dims 2i and 2i + 1, GGUF's Llama layout) or NEOX-style (i and
// i + n_rot / 2); pair i turns by theta_i = pos * base^(-2i / n_rot) / factor_i, the power built by
// repeated multiplication in f32 as ggml (and our CPU backend) do, and its cosine and sine are
// multiplied by mscale (Phi-3's LongRoPE attention factor; usually 1). Dims from n_rot on stay as
// they are. The including kernel's Params has n_rot, theta_scale, neox and mscale, and it defines
// rope_factor(i) (factor_i: its frequency factors, or 1).

// (cos, sin) of pair i at position pos, times mscale.
fn rope_cs(i: u32, pos: u32) -> vec2<f32> {
    var theta = f32(pos);
    for (var j = 0u; j < i; j++) {
        theta *= p.theta_scale;
    }
    theta /= rope_factor(i);
    return vec2<f32>(cos(theta), sin(theta)) * p.mscale;
}

// The dims of pair i (i < n_rot / 2).
fn rope_dims(i: u32) -> vec2<u32> {
    if (p.neox == 1u) {
        return vec2<u32>(i, i + p.n_rot / 2u);
    }
    return vec2<u32>(2u * i, 2u * i + 1u);
}

// Pair i's values (x0, x1) after RoPE at pos (i < n_rot / 2).
fn rope_pair(x0: f32, x1: f32, i: u32, pos: u32) -> vec2<f32> {
    let cs = rope_cs(i, pos);
    return vec2<f32>(x0 * cs.x - x1 * cs.y, x0 * cs.y + x1 * cs.x);
}

// The dim that dim d turns with (d itself from n_rot on).
fn rope_partner(d: u32) -> u32 {
    if (d >= p.n_rot) {
        return d;
    }
    if (p.neox == 1u) {
        let half = p.n_rot / 2u;
        return select(d - half, d + half, d < half);
    }
    return d ^ 1u;
}

// Dim d after RoPE at pos, from its value x and its partner's y (rope_partner).
fn rope_dim(x: f32, y: f32, d: u32, pos: u32) -> f32 {
    if (d >= p.n_rot) {
        return x;
    }
    let half = p.n_rot / 2u;
    var i = d / 2u;
    var first = d % 2u == 0u;
    if (p.neox == 1u) {
        first = d < half;
        i = select(d - half, d, first);
    }
    if (first) {
        return rope_pair(x, y, i, pos).x;
    }
    return rope_pair(y, x, i, pos).y;
}
