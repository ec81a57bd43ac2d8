// x[dst + i] = x[src + i] within one buffer (ranges do not overlap); WebGPU's buffer copy
// cannot have the same buffer on both sides.
struct Params {
    len: u32,
    src: u32,
    dst: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * 32768u) * 256u + lid;
    if (i < p.len) {
        x[p.dst + i] = x[p.src + i];
    }
}
