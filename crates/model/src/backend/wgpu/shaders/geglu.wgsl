// gate = gelu(gate) * up, elementwise, with GELU's tanh form as ggml's CPU backend computes it
// (and our CPU backend): x rounded to f16, GELU of it rounded to f16 (ggml's table of f16
// results); 0 from -10 down and x from 10 up.
struct Params {
    len: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;

const SQRT_2_OVER_PI: f32 = 0.7978846;

fn to_f16(x: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(x, 0.0))).x;
}

fn gelu(x: f32) -> f32 {
    if (x <= -10.0) {
        return 0.0;
    }
    if (x >= 10.0) {
        return x;
    }
    let h = to_f16(x);
    return to_f16(0.5 * h * (1.0 + tanh(SQRT_2_OVER_PI * h * (1.0 + 0.044715 * h * h))));
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * 32768u) * 256u + lid;
    if (i < p.len) {
        gate[i] = gelu(gate[i]) * up[i];
    }
}
