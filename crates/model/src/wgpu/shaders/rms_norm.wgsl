// out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight; one workgroup per row.
struct Params {
    dim: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;      // (n, dim)
@group(0) @binding(2) var<storage, read> weight: array<f32>; // (dim)
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // (n, dim)

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32 {SG_ARGS}) {
    {SG_LETS}
    let base = wid.x * p.dim;
    var ss = 0.0;
    for (var i = lid; i < p.dim; i += 64u) {
        let v = x[base + i];
        ss += v * v;
    }
    let sum = reduce_sum(ss, lid, sg_size, sg_lane);
    let scale = 1.0 / sqrt(sum / f32(p.dim) + p.eps);
    for (var i = lid; i < p.dim; i += 64u) {
        out[base + i] = x[base + i] * scale * weight[i];
    }
}
