// Causal grouped-query attention, flash style: one workgroup per (head, query token, key split)
// walks its keys in tiles of 64 with an online softmax, so no score matrix is stored. The prompt
// runs with one split; decode splits the keys (split-K) so that a single query still fills the
// GPU, and attn_combine.wgsl merges the partial results.
struct Params {
    n_head: u32,
    n_head_kv: u32,
    head_dim: u32,
    n_ctx: u32,
    pos0: u32,
    n_split: u32,
    split_len: u32, // keys per split, a multiple of 64
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;  // (n, n_head, head_dim)
@group(0) @binding(2) var<storage, read> kc: array<f32>; // (n_head_kv, n_ctx, head_dim)
@group(0) @binding(3) var<storage, read> vc: array<f32>; // (n_head_kv, n_ctx, head_dim)
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // (n, n_head, head_dim)
// (n, n_head, n_split, head_dim + 2): per split the running max, the sum and the unnormalised output
@group(0) @binding(5) var<storage, read_write> part: array<f32>;

const MAX_HD: u32 = 256u;
const NEG: f32 = -1.0e30;

var<workgroup> qs: array<f32, MAX_HD>;
var<workgroup> sc: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let t = wid.y;
    let split = wid.z;
    let hd = p.head_dim;
    let kvh = h / (p.n_head / p.n_head_kv);
    let n_kv = p.pos0 + t + 1u;
    let start = split * p.split_len;
    let end = min(start + p.split_len, n_kv);
    let qb = (t * p.n_head + h) * hd;
    for (var d = lid; d < hd; d += 64u) {
        qs[d] = q[qb + d] * p.scale;
    }
    workgroupBarrier();
    let cb = kvh * p.n_ctx * hd;
    var m = NEG;
    var l = 0.0;
    var acc = vec4<f32>(0.0); // dims lid, lid + 64, lid + 128, lid + 192
    for (var j0 = start; j0 < end; j0 += 64u) {
        let j = j0 + lid;
        var s = NEG;
        if (j < end) {
            s = 0.0;
            let kb = cb + j * hd;
            for (var d = 0u; d < hd; d++) {
                s += qs[d] * kc[kb + d];
            }
        }
        sc[lid] = s;
        workgroupBarrier();
        let cnt = min(64u, end - j0);
        var mt = m;
        for (var i = 0u; i < cnt; i++) {
            mt = max(mt, sc[i]);
        }
        workgroupBarrier();
        sc[lid] = select(0.0, exp(s - mt), j < end);
        workgroupBarrier();
        let alpha = exp(m - mt);
        var ps = 0.0;
        acc *= alpha;
        for (var i = 0u; i < cnt; i++) {
            let pi = sc[i];
            ps += pi;
            let vb = cb + (j0 + i) * hd + lid;
            for (var r = 0u; r < 4u; r++) {
                if (lid + 64u * r < hd) {
                    acc[r] += pi * vc[vb + 64u * r];
                }
            }
        }
        l = l * alpha + ps;
        m = mt;
        workgroupBarrier();
    }
    if (p.n_split == 1u) {
        let inv = 1.0 / l;
        for (var r = 0u; r < 4u; r++) {
            if (lid + 64u * r < hd) {
                out[qb + lid + 64u * r] = acc[r] * inv;
            }
        }
    } else {
        let pb = ((t * p.n_head + h) * p.n_split + split) * (hd + 2u);
        if (lid == 0u) {
            part[pb] = m;
            part[pb + 1u] = l;
        }
        for (var r = 0u; r < 4u; r++) {
            if (lid + 64u * r < hd) {
                part[pb + 2u + lid + 64u * r] = acc[r];
            }
        }
    }
}
