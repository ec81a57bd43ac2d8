// RoPE on the queries and keys of n rows, in place, and (store = 1) the rotated keys and the
// values written into one layer's cache, in one pass. Rotation of adjacent pairs (GGUF's layout)
// of the first n_rot dims of each head; row t is at its own position and of its own sequence
// (the step's rows); theta_i = pos * base^(-2i / n_rot), built by repeated multiplication in f32
// as ggml (and our CPU backend) do. One invocation per (pair of dims, row of a head): heads
// 0..n_head are queries, the next n_head_kv are keys (n_head_kv = 0: queries only). Cache
// layout: (n_seq, n_head_kv, n_ctx, head_dim).
struct Params {
    n: u32,
    n_head: u32,
    n_head_kv: u32,
    head_dim: u32,
    n_rot: u32,
    theta_scale: f32,
    n_ctx: u32,
    store: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> q: array<f32>; // (n, n_head, head_dim)
@group(0) @binding(2) var<storage, read_write> k: array<f32>; // (n, n_head_kv, head_dim)
@group(0) @binding(3) var<storage, read> v: array<f32>;       // (n, n_head_kv, head_dim)
@group(0) @binding(4) var<storage, read_write> kc: array<f32>; // (n_seq, n_head_kv, n_ctx, head_dim)
@group(0) @binding(5) var<storage, read_write> vc: array<f32>; // (n_seq, n_head_kv, n_ctx, head_dim)
@group(0) @binding(6) var<storage, read> step: array<vec4<u32>>; // per row: token, sequence, position

fn rotate(x0: f32, x1: f32, i: u32, pos: u32) -> vec2<f32> {
    if (2u * i >= p.n_rot) {
        return vec2<f32>(x0, x1);
    }
    var theta = f32(pos);
    for (var j = 0u; j < i; j++) {
        theta *= p.theta_scale;
    }
    let c = cos(theta);
    let s = sin(theta);
    return vec2<f32>(x0 * c - x1 * s, x0 * s + x1 * c);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x; // pair of dims 2i, 2i + 1
    let heads = p.n_head + p.n_head_kv;
    let row = gid.y + gid.z * 32768u; // t * heads + head
    if (2u * i >= p.head_dim || row >= p.n * heads) {
        return;
    }
    let t = row / heads;
    let h = row % heads;
    let pos = step[t].z;
    if (h < p.n_head) {
        let b = (t * p.n_head + h) * p.head_dim + 2u * i;
        let r = rotate(q[b], q[b + 1u], i, pos);
        q[b] = r.x;
        q[b + 1u] = r.y;
        return;
    }
    let kh = h - p.n_head;
    let b = (t * p.n_head_kv + kh) * p.head_dim + 2u * i;
    let r = rotate(k[b], k[b + 1u], i, pos);
    k[b] = r.x;
    k[b + 1u] = r.y;
    if (p.store == 1u) {
        let c = ((step[t].y * p.n_head_kv + kh) * p.n_ctx + pos) * p.head_dim + 2u * i;
        kc[c] = r.x;
        kc[c + 1u] = r.y;
        vc[c] = v[b];
        vc[c + 1u] = v[b + 1u];
    }
}
