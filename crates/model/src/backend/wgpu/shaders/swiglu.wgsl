// gate = silu(gate) * up, elementwise.
struct Params {
    len: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * 32768u) * 256u + lid;
    if (i < p.len) {
        let g = gate[i];
        gate[i] = g / (1.0 + exp(-g)) * up[i];
    }
}
