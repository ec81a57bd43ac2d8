// Causal grouped-query attention, flash style: one workgroup per (head, query row, key split)
// walks its keys in tiles of 64 with an online softmax, so no score matrix is stored. Each row
// attends over its own sequence's cache (the step's rows give its sequence and position), keys
// first..=pos, where first is 0, or pos + 1 - window with a sliding window; each key's cache row
// is kv_slot.wgsl's (looked up once a tile by the invocation that scores the key, and read from
// workgroup memory by the value sums). Scores are q · k times scale. The prompt runs with one
// split; decode splits the row's keys (split-K) so that a few query rows still fill the GPU, and
// attn_combine.wgsl merges the partial results (a split past a row's last key is empty and
// counts for nothing there). Scores: an invocation per key. Values:
// the 64 invocations split into 64 / (head_dim / 4) groups, each summing every that-many-th key of
// the tile with one four-value load per key, so the serial chain per tile is a quarter (head_dim
// 64) of the keys; the groups' sums are added once at the end. head_dim is a multiple of 16 up to
// 256.
//
// FUSED (decode only, each row of a different sequence): the RoPE of the query and of the new
// key and the cache store are folded in (what rope_kv.wgsl would do before, with rope.wgsl's
// rotation): each workgroup rotates its own query head and the new key of its KV head from the
// q/k/v mat-vec's output (pre-RoPE), takes the new key and value (the row's position) from
// workgroup memory rather than the cache, and reads only the earlier positions from the cache. One
// workgroup per KV head (the first query head of its group, split 0) writes the rotated key and
// the value into the cache for later steps; nothing in this dispatch reads that slot. The q and k
// buffers are left as they were (unrotated).
const FUSED: bool = {FUSED};
struct Params {
    n_head: u32,
    n_head_kv: u32,
    head_dim: u32,
    n_split: u32,
    split_len: u32, // keys per split, a multiple of 64
    scale: f32,
    window: u32,      // keys a row sees, itself included; 0: all before it
    n_rot: u32,       // FUSED: RoPE (rope.wgsl)
    theta_scale: f32, // FUSED: base^(-2 / n_rot)
    neox: u32,        // FUSED
    mscale: f32,      // FUSED
    has_factors: u32, // FUSED
    kv_ring: u32,     // the cache's shape (kv_slot.wgsl)
    kv_slots: u32,
    table_len: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;  // (n, n_head, head_dim)
// Paged (n_head_kv, kv_slots, head_dim / 4), or rings (n_seq, n_head_kv, kv_ring, head_dim / 4)
@group(0) @binding(2) var<storage, {KV}> kc: array<vec4<{KVT}>>; // KVT: f16 or f32 (shaders::kv_typed)
@group(0) @binding(3) var<storage, {KV}> vc: array<vec4<{KVT}>>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // (n, n_head, head_dim)
// (n, n_head, n_split, head_dim + 2): per split the running max, the sum and the unnormalised output
@group(0) @binding(5) var<storage, read_write> part: array<f32>;
// FUSED: the rows' new keys before RoPE and values, (n, n_head_kv, head_dim) (else unused).
@group(0) @binding(6) var<storage, read> kn: array<f32>;
@group(0) @binding(7) var<storage, read> vn: array<f32>;
@group(0) @binding(8) var<storage, read> step: array<vec4<u32>>; // per row: token, sequence, position
@group(0) @binding(9) var<storage, read> table: array<u32>; // (n_seq, table_len) block tables
// FUSED: the RoPE frequency factors, (n_rot / 2) if has_factors, at binding 10 (else no binding).
{FACTORS}

const NEG: f32 = -1.0e30;

var<workgroup> qs: array<vec4<f32>, 64>; // (head_dim / 4) the scaled query
var<workgroup> sc: array<f32, 64>;
var<workgroup> accs: array<vec4<f32>, 64>; // per invocation: its group's partial output
var<workgroup> ls: array<f32, 64>;         // and softmax sum
var<workgroup> ks: array<vec4<f32>, 64>; // FUSED: the new key, rotated
var<workgroup> rows: array<u32, 64>;     // the tile's keys' cache rows

// Dims 4 d4 .. 4 d4 + 3 of a head after RoPE at pos: x holds them, y their partners
// (rope_partner).
fn rotate4(x: vec4<f32>, y: vec4<f32>, d4: u32, pos: u32) -> vec4<f32> {
    var r = x;
    for (var e = 0u; e < 4u; e++) {
        r[e] = rope_dim(x[e], y[e], 4u * d4 + e, pos);
    }
    return r;
}

// The RoPE partners of dims 4 d4 .. 4 d4 + 3.
fn partners4(d4: u32) -> vec4<u32> {
    let d = 4u * d4;
    return vec4<u32>(rope_partner(d), rope_partner(d + 1u), rope_partner(d + 2u), rope_partner(d + 3u));
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32 {SG_ARGS}) {
    {SG_LETS}
    let h = wid.x;
    let t = wid.y;
    let split = wid.z;
    let hd = p.head_dim;
    let kvh = h / (p.n_head / p.n_head_kv);
    let seq = step[t].y;
    let pos = step[t].z;
    let n_kv = pos + 1u;
    var first = 0u;
    if (p.window > 0u) {
        first = n_kv - min(n_kv, p.window);
    }
    let start = first + split * p.split_len;
    let end = min(start + p.split_len, n_kv);
    let qb = (t * p.n_head + h) * hd;
    let hd4 = hd / 4u;
    let ng = 64u / hd4; // key groups of the value sum
    let g = lid / hd4;
    let d4 = lid % hd4;
    // FUSED: the new key (position pos) is not in the cache yet; the split that holds it takes it
    // from workgroup memory first, and every split reads only keys before it from the cache.
    let has_new = FUSED && start <= pos && pos < end;
    var vnew = vec4<f32>(0.0);
    if (lid < hd4) {
        let b = qb + 4u * lid;
        var x = vec4<f32>(q[b], q[b + 1u], q[b + 2u], q[b + 3u]);
        if (FUSED) {
            let o = partners4(lid);
            x = rotate4(x, vec4<f32>(q[qb + o.x], q[qb + o.y], q[qb + o.z], q[qb + o.w]), lid, pos);
            let hb = (t * p.n_head_kv + kvh) * hd;
            let kb = hb + 4u * lid;
            let ky = vec4<f32>(kn[hb + o.x], kn[hb + o.y], kn[hb + o.z], kn[hb + o.w]);
            let kr = rotate4(vec4<f32>(kn[kb], kn[kb + 1u], kn[kb + 2u], kn[kb + 3u]), ky, lid, pos);
            vnew = vec4<f32>(vn[kb], vn[kb + 1u], vn[kb + 2u], vn[kb + 3u]);
            ks[lid] = kr;
            let row = kv_store_row(seq, kvh, pos);
            if (h % (p.n_head / p.n_head_kv) == 0u && split == 0u && row != KV_NONE) {
                let c = row * hd4 + lid;
                {STORE} // kc[c] = kr; vc[c] = vnew; (FUSED only: else the cache is read-only)
            }
        }
        qs[lid] = x * p.scale;
    }
    workgroupBarrier();
    var m = NEG;
    var l = 0.0;
    var acc = vec4<f32>(0.0); // dims 4 d4 .. 4 d4 + 3, over keys g, g + ng, ... of each tile
    var end_c = end;
    if (FUSED) {
        end_c = min(end, pos);
    }
    if (has_new) {
        var s = 0.0;
        for (var d = 0u; d < hd4; d++) {
            s += dot(qs[d], ks[d]);
        }
        // The new key's weight is exp(s - m) = 1; group 0 holds it, so it is counted once.
        m = s;
        if (g == 0u) {
            l = 1.0;
            acc = vnew;
        }
    }
    for (var j0 = start; j0 < end_c; j0 += 64u) {
        let j = j0 + lid;
        var s = NEG;
        if (j < end_c) {
            let row = kv_read_row(seq, kvh, j);
            rows[lid] = row;
            // Four independent partial sums, so the key's loads do not wait on each other.
            var s4 = vec4<f32>(0.0);
            let kb = row * hd4;
            for (var d = 0u; d < hd4; d += 4u) {
                s4.x += dot(qs[d], vec4<f32>(kc[kb + d]));
                s4.y += dot(qs[d + 1u], vec4<f32>(kc[kb + d + 1u]));
                s4.z += dot(qs[d + 2u], vec4<f32>(kc[kb + d + 2u]));
                s4.w += dot(qs[d + 3u], vec4<f32>(kc[kb + d + 3u]));
            }
            s = s4.x + s4.y + s4.z + s4.w;
        }
        // The tile's largest score (keys past the end score NEG): subgroup maxima where the
        // adapter has subgroups, not a serial pass over the tile.
        let mt = max(m, reduce_max(s, lid, sg_size, sg_lane));
        let cnt = min(64u, end_c - j0);
        sc[lid] = select(0.0, exp(s - mt), j < end_c);
        workgroupBarrier();
        let alpha = exp(m - mt);
        var ps = 0.0;
        acc *= alpha;
        if (g < ng) {
            // Four keys a step, their loads written out so that they are in flight together.
            var i = g;
            for (; i + 3u * ng < cnt; i += 4u * ng) {
                let v0 = vec4<f32>(vc[rows[i] * hd4 + d4]);
                let v1 = vec4<f32>(vc[rows[i + ng] * hd4 + d4]);
                let v2 = vec4<f32>(vc[rows[i + 2u * ng] * hd4 + d4]);
                let v3 = vec4<f32>(vc[rows[i + 3u * ng] * hd4 + d4]);
                let p0 = sc[i];
                let p1 = sc[i + ng];
                let p2 = sc[i + 2u * ng];
                let p3 = sc[i + 3u * ng];
                ps += (p0 + p1) + (p2 + p3);
                acc += (p0 * v0 + p1 * v1) + (p2 * v2 + p3 * v3);
            }
            for (; i < cnt; i += ng) {
                let pi = sc[i];
                ps += pi;
                acc += pi * vec4<f32>(vc[rows[i] * hd4 + d4]);
            }
        }
        l = l * alpha + ps;
        m = mt;
        workgroupBarrier();
    }
    // The groups' partial sums (each group's invocations share one softmax sum).
    accs[lid] = acc;
    ls[lid] = l;
    workgroupBarrier();
    if (lid >= hd4) {
        return;
    }
    var o = vec4<f32>(0.0);
    var lt = 0.0;
    for (var i = 0u; i < ng; i++) {
        o += accs[i * hd4 + lid];
        lt += ls[i * hd4];
    }
    if (p.n_split == 1u) {
        o /= lt;
        for (var e = 0u; e < 4u; e++) {
            out[qb + 4u * lid + e] = o[e];
        }
    } else {
        let pb = ((t * p.n_head + h) * p.n_split + split) * (hd + 2u);
        if (lid == 0u) {
            part[pb] = m;
            part[pb + 1u] = lt;
        }
        for (var e = 0u; e < 4u; e++) {
            part[pb + 2u + 4u * lid + e] = o[e];
        }
    }
}
