// Merges the split-K partial results of attention.wgsl: with M the largest running max,
// out = sum_s acc_s * exp(m_s - M) / sum_s l_s * exp(m_s - M). One workgroup per (head, token).
struct Params {
    n_head: u32,
    head_dim: u32,
    n_split: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>; // (n, n_head, head_dim)

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let t = wid.y;
    let hd = p.head_dim;
    let base = (t * p.n_head + h) * p.n_split * (hd + 2u);
    var mx = -1.0e30;
    for (var s = 0u; s < p.n_split; s++) {
        mx = max(mx, part[base + s * (hd + 2u)]);
    }
    var l = 0.0;
    for (var s = 0u; s < p.n_split; s++) {
        let b = base + s * (hd + 2u);
        l += part[b + 1u] * exp(part[b] - mx);
    }
    for (var d = lid; d < hd; d += 64u) {
        var o = 0.0;
        for (var s = 0u; s < p.n_split; s++) {
            let b = base + s * (hd + 2u);
            o += part[b + 2u + d] * exp(part[b] - mx);
        }
        out[(t * p.n_head + h) * hd + d] = o / l;
    }
}
