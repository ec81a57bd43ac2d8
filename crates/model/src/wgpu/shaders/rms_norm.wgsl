// out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight; one workgroup per row, four values per load
// (dim is a multiple of 4).
struct Params {
    dim: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;      // (n, dim / 4)
@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>; // (dim / 4)
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>; // (n, dim / 4)

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32 {SG_ARGS}) {
    {SG_LETS}
    let d4 = p.dim / 4u;
    let base = wid.x * d4;
    var ss = 0.0;
    for (var i = lid; i < d4; i += 64u) {
        let v = x[base + i];
        ss += dot(v, v);
    }
    let sum = reduce_sum(ss, lid, sg_size, sg_lane);
    let scale = 1.0 / sqrt(sum / f32(p.dim) + p.eps);
    for (var i = lid; i < d4; i += 64u) {
        out[base + i] = x[base + i] * scale * weight[i];
    }
}
