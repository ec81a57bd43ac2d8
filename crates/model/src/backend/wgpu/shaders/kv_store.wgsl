// Copies the keys and values of n rows into one layer's cache, each row into its sequence's
// cache at its position (from the step's rows), at the slot kv_slot.wgsl gives; a row whose
// position has no block is not stored.
struct Params {
    n: u32,
    kv_dim: u32,
    head_dim: u32,
    n_head_kv: u32,
    kv_ring: u32,
    kv_slots: u32,
    table_len: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> k: array<f32>; // (n, kv_dim)
@group(0) @binding(2) var<storage, read> v: array<f32>; // (n, kv_dim)
// Paged (n_head_kv, kv_slots, head_dim), or rings (n_seq, n_head_kv, kv_ring, head_dim)
// KVT: f16 where the adapter has `shader-f16`, else f32 (shaders::kv_typed).
@group(0) @binding(3) var<storage, read_write> kc: array<{KVT}>;
@group(0) @binding(4) var<storage, read_write> vc: array<{KVT}>;
@group(0) @binding(5) var<storage, read> step: array<vec4<u32>>; // per row: token, sequence, position
@group(0) @binding(6) var<storage, read> table: array<u32>; // (n_seq, table_len) block tables

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    if (i >= p.kv_dim || t >= p.n) {
        return;
    }
    let h = i / p.head_dim;
    let d = i % p.head_dim;
    let row = kv_store_row(step[t].y, h, step[t].z);
    if (row == KV_NONE) {
        return;
    }
    let dst = row * p.head_dim + d;
    kc[dst] = {KVT}(k[t * p.kv_dim + i]);
    vc[dst] = {KVT}(v[t * p.kv_dim + i]);
}
