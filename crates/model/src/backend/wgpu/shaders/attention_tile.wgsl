// Causal grouped-query attention of a prompt, by tiles: one workgroup of 128 invocations per
// (query head, TQ consecutive rows) walks the keys in tiles of TK, each tile's keys and then its
// values copied once into workgroup memory and read from there by all TQ rows (attention.wgsl
// reads them once per row). Online softmax per row, no score matrix in memory. The parameters
// and bindings are attention.wgsl's (not FUSED), plus the step's row count.
//
// The rows of a tile attend over their own sequences: the rows of one sequence are taken
// together (keys from the lowest first key to the highest position among them), a tile with rows
// of several sequences takes them one sequence after another. Key tiles start at multiples of TK,
// so a row's sums run in the same order whatever rows share its tile (outside sliding windows).
//
// An invocation scores keys sub, sub + IPR, ... of its row (IPR invocations a row) and holds
// dims 4 (sub + IPR i) .. + 3 of the row's output.
struct Params {
    n_head: u32,
    n_head_kv: u32,
    head_dim: u32,
    n_split: u32,   // 1
    split_len: u32, // unused
    scale: f32,
    window: u32,    // keys a row sees, itself included; 0: all before it
    n_rot: u32,       // unused (FUSED only)
    theta_scale: f32, // unused
    neox: u32,        // unused
    mscale: f32,      // unused
    has_factors: u32, // unused
    kv_ring: u32,     // the cache's shape (kv_slot.wgsl)
    kv_slots: u32,
    table_len: u32,
    n_rows: u32, // the step's rows
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>; // (n, n_head, head_dim)
// KVT: f16 where the adapter has `shader-f16`, else f32 (shaders::kv_typed).
@group(0) @binding(2) var<storage, read> kc: array<vec4<{KVT}>>;
@group(0) @binding(3) var<storage, read> vc: array<vec4<{KVT}>>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // (n, n_head, head_dim)
@group(0) @binding(8) var<storage, read> step: array<vec4<u32>>; // per row: token, sequence, position
@group(0) @binding(9) var<storage, read> table: array<u32>;

const TQ: u32 = {TQ}u;
const TK: u32 = {TK}u;
const HD4: u32 = {HD4}u; // head_dim / 4
const IPR: u32 = 128u / TQ;
const APR: u32 = (HD4 + IPR - 1u) / IPR; // output vec4s an invocation holds
const NEG: f32 = -1.0e30;

var<workgroup> qt: array<vec4<f32>, {QN}>;  // (TQ, HD4): the tile's queries, scaled
var<workgroup> kvt: array<vec4<f32>, {KN}>; // (TK, HD4): a tile's keys, then its values
var<workgroup> pt: array<f32, {PN}>;        // (TQ, TK): the tile's scores (NEG: masked)
var<workgroup> krow: array<u32, TK>;        // the tile's keys' cache rows
var<workgroup> grp: vec4<u32>;              // sequence, first key, last key + 1, rows (bits)
var<workgroup> taken: u32;                  // rows done (bits)

// The first key a row at `pos` sees.
fn first_key(pos: u32) -> u32 {
    if (p.window > 0u) {
        return pos + 1u - min(pos + 1u, p.window);
    }
    return 0u;
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let t0 = wid.y * TQ;
    let hd = p.head_dim;
    let kvh = h / (p.n_head / p.n_head_kv);
    let r = lid / IPR;
    let sub = lid % IPR;
    let t = t0 + r;
    var pos = 0u;
    if (t < p.n_rows) {
        pos = step[t].z;
    }
    let first = first_key(pos);
    for (var e = lid; e < TQ * HD4; e += 128u) {
        let tt = t0 + e / HD4;
        var v = vec4<f32>(0.0);
        if (tt < p.n_rows) {
            let b = (tt * p.n_head + h) * hd + 4u * (e % HD4);
            v = vec4<f32>(q[b], q[b + 1u], q[b + 2u], q[b + 3u]) * p.scale;
        }
        qt[e] = v;
    }
    if (lid == 0u) {
        taken = 0u;
    }
    loop {
        workgroupBarrier();
        if (lid == 0u) {
            // The rows of the first sequence not yet taken.
            var g = vec4<u32>(0u, 0xffffffffu, 0u, 0u);
            var found = false;
            for (var i = 0u; i < TQ; i++) {
                let ti = t0 + i;
                if (ti >= p.n_rows || (taken & (1u << i)) != 0u) {
                    continue;
                }
                let si = step[ti].y;
                if (!found) {
                    found = true;
                    g.x = si;
                }
                if (si == g.x) {
                    let pi = step[ti].z;
                    g.y = min(g.y, first_key(pi));
                    g.z = max(g.z, pi + 1u);
                    g.w |= 1u << i;
                }
            }
            taken |= g.w;
            grp = g;
        }
        let g = workgroupUniformLoad(&grp);
        if (g.w == 0u) {
            break;
        }
        let mine = (g.w & (1u << r)) != 0u;
        var m = NEG;
        var l = 0.0;
        var acc: array<vec4<f32>, APR>;
        for (var j0 = g.y - g.y % TK; j0 < g.z; j0 += TK) {
            if (lid < TK) {
                krow[lid] = kv_read_row(g.x, kvh, min(j0 + lid, g.z - 1u));
            }
            workgroupBarrier();
            for (var e = lid; e < TK * HD4; e += 128u) {
                kvt[e] = vec4<f32>(kc[krow[e / HD4] * HD4 + e % HD4]);
            }
            workgroupBarrier();
            for (var k = sub; k < TK; k += IPR) {
                let j = j0 + k;
                var s = NEG;
                if (mine && j >= first && j <= pos) {
                    // Four independent partial sums per dim quad.
                    var s4 = vec4<f32>(0.0);
                    for (var d = 0u; d < HD4; d++) {
                        s4 += qt[r * HD4 + d] * kvt[k * HD4 + d];
                    }
                    s = (s4.x + s4.y) + (s4.z + s4.w);
                }
                pt[r * TK + k] = s;
            }
            workgroupBarrier();
            for (var e = lid; e < TK * HD4; e += 128u) {
                kvt[e] = vec4<f32>(vc[krow[e / HD4] * HD4 + e % HD4]);
            }
            workgroupBarrier();
            if (mine) {
                var mt = m;
                for (var k = 0u; k < TK; k++) {
                    mt = max(mt, pt[r * TK + k]);
                }
                let alpha = exp(m - mt);
                l *= alpha;
                for (var i = 0u; i < APR; i++) {
                    acc[i] *= alpha;
                }
                for (var k = 0u; k < TK; k++) {
                    let s = pt[r * TK + k];
                    // A masked key counts for nothing, even while every key so far is masked.
                    let pk = select(0.0, exp(s - mt), s > NEG);
                    l += pk;
                    for (var i = 0u; i < APR; i++) {
                        let d = sub + IPR * i;
                        if (d < HD4) {
                            acc[i] += pk * kvt[k * HD4 + d];
                        }
                    }
                }
                m = mt;
            }
        }
        if (mine) {
            let ob = (t * p.n_head + h) * hd;
            for (var i = 0u; i < APR; i++) {
                let d = sub + IPR * i;
                if (d < HD4) {
                    let o = acc[i] / l;
                    for (var e = 0u; e < 4u; e++) {
                        out[ob + 4u * d + e] = o[e];
                    }
                }
            }
        }
    }
}
