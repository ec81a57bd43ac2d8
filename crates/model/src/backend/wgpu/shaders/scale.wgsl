// x *= s, elementwise.
struct Params {
    len: u32,
    s: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * 32768u) * 256u + lid;
    if (i < p.len) {
        x[i] *= p.s;
    }
}
