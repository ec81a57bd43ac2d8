// RoPE on the queries and keys of n rows, in place, and (store = 1) the rotated keys and the
// values written into one layer's cache, in one pass. The rotation is rope.wgsl's; row t is at its
// own position and of its own sequence (the step's rows). One invocation per (pair slot i, row of
// a head): slot i < n_rot / 2 is pair i (rope_dims), the later slots the unrotated dims 2i and
// 2i + 1. Heads 0..n_head are queries, the next n_head_kv are keys (n_head_kv = 0: queries only).
// The cache slot of a row is kv_slot.wgsl's (a row whose position has no block is not stored).
struct Params {
    n: u32,
    n_head: u32,
    n_head_kv: u32,
    head_dim: u32,
    n_rot: u32,
    theta_scale: f32,
    store: u32,
    neox: u32,
    mscale: f32,
    has_factors: u32,
    kv_ring: u32,   // store = 1: the cache's shape (kv_slot.wgsl)
    kv_slots: u32,
    table_len: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> q: array<f32>; // (n, n_head, head_dim)
@group(0) @binding(2) var<storage, read_write> k: array<f32>; // (n, n_head_kv, head_dim)
@group(0) @binding(3) var<storage, read> v: array<f32>;       // (n, n_head_kv, head_dim)
// Paged (n_head_kv, kv_slots, head_dim), or rings (n_seq, n_head_kv, kv_ring, head_dim)
// KVT: f16 where the adapter has `shader-f16`, else f32 (shaders::kv_typed).
@group(0) @binding(4) var<storage, read_write> kc: array<{KVT}>;
@group(0) @binding(5) var<storage, read_write> vc: array<{KVT}>;
@group(0) @binding(6) var<storage, read> step: array<vec4<u32>>; // per row: token, sequence, position
@group(0) @binding(7) var<storage, read> factors: array<f32>; // (n_rot / 2) if has_factors
@group(0) @binding(8) var<storage, read> table: array<u32>; // (n_seq, table_len) block tables

fn rope_factor(i: u32) -> f32 {
    if (p.has_factors == 1u) {
        return factors[i];
    }
    return 1.0;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x; // pair slot
    let heads = p.n_head + p.n_head_kv;
    let row = gid.y + gid.z * 32768u; // t * heads + head
    if (2u * i >= p.head_dim || row >= p.n * heads) {
        return;
    }
    let t = row / heads;
    let h = row % heads;
    let pos = step[t].z;
    let rotated = 2u * i < p.n_rot;
    var dims = vec2<u32>(2u * i, 2u * i + 1u);
    if (rotated) {
        dims = rope_dims(i);
    }
    if (h < p.n_head) {
        let b = (t * p.n_head + h) * p.head_dim;
        if (rotated) {
            let r = rope_pair(q[b + dims.x], q[b + dims.y], i, pos);
            q[b + dims.x] = r.x;
            q[b + dims.y] = r.y;
        }
        return;
    }
    let kh = h - p.n_head;
    let b = (t * p.n_head_kv + kh) * p.head_dim;
    var r = vec2<f32>(k[b + dims.x], k[b + dims.y]);
    if (rotated) {
        r = rope_pair(r.x, r.y, i, pos);
        k[b + dims.x] = r.x;
        k[b + dims.y] = r.y;
    }
    if (p.store == 1u) {
        let row = kv_store_row(step[t].y, kh, pos);
        if (row == KV_NONE) {
            return;
        }
        let c = row * p.head_dim;
        kc[c + dims.x] = {KVT}(r.x);
        kc[c + dims.y] = {KVT}(r.y);
        vc[c + dims.x] = {KVT}(v[b + dims.x]);
        vc[c + dims.y] = {KVT}(v[b + dims.y]);
    }
}
