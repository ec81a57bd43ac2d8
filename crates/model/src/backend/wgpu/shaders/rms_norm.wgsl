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
    // Four loads per step, written out, so that they are in flight together.
    var ss = vec4<f32>(0.0);
    var i = lid;
    for (; i + 192u < d4; i += 256u) {
        let v0 = x[base + i];
        let v1 = x[base + i + 64u];
        let v2 = x[base + i + 128u];
        let v3 = x[base + i + 192u];
        ss += vec4<f32>(dot(v0, v0), dot(v1, v1), dot(v2, v2), dot(v3, v3));
    }
    for (; i < d4; i += 64u) {
        let v = x[base + i];
        ss.x += dot(v, v);
    }
    let sum = reduce_sum((ss.x + ss.y) + (ss.z + ss.w), lid, sg_size, sg_lane);
    let scale = 1.0 / sqrt(sum / f32(p.dim) + p.eps);
    i = lid;
    for (; i + 192u < d4; i += 256u) {
        let v0 = x[base + i];
        let v1 = x[base + i + 64u];
        let v2 = x[base + i + 128u];
        let v3 = x[base + i + 192u];
        let w0 = weight[i];
        let w1 = weight[i + 64u];
        let w2 = weight[i + 128u];
        let w3 = weight[i + 192u];
        out[base + i] = v0 * scale * w0;
        out[base + i + 64u] = v1 * scale * w1;
        out[base + i + 128u] = v2 * scale * w2;
        out[base + i + 192u] = v3 * scale * w3;
    }
    for (; i < d4; i += 64u) {
        out[base + i] = x[base + i] * scale * weight[i];
    }
}
