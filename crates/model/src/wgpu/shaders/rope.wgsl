// Rotates adjacent pairs (GGUF's layout) of the first n_rot dims of each head, in place; row t is
// at position pos0 + t. theta_i = pos * base^(-2i / n_rot), built by repeated multiplication in
// f32 as ggml (and our CPU backend) do.
struct Params {
    n: u32,
    n_heads: u32,
    head_dim: u32,
    n_rot: u32,
    pos0: u32,
    theta_scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>; // (n, n_heads, head_dim)

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half_rot = p.n_rot / 2u;
    let i = gid.x; // pair index within the head
    let row = gid.y; // t * n_heads + head
    if (i >= half_rot || row >= p.n * p.n_heads) {
        return;
    }
    let t = row / p.n_heads;
    var theta = f32(p.pos0 + t);
    for (var k = 0u; k < i; k++) {
        theta *= p.theta_scale;
    }
    let c = cos(theta);
    let s = sin(theta);
    let b = row * p.head_dim + 2u * i;
    let x0 = x[b];
    let x1 = x[b + 1u];
    x[b] = x0 * c - x1 * s;
    x[b + 1u] = x0 * s + x1 * c;
}
