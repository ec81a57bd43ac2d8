// The mat-vec with the RMSNorm of x folded in: rows dotted with x * nw, sums scaled by 1 / rms(x).
@group(0) @binding(9) var<storage, read> nw: array<vec4<f32>>; // (cols / 4) the norm's weight
@group(0) @binding(10) var<storage, read_write> xn: array<vec4<f32>>; // (cols / 4) x normalised

fn xw(v: vec4<f32>, q: u32) -> vec4<f32> {
    return v * nw[q];
}

fn sq(v: vec4<f32>) -> f32 {
    return dot(v, v);
}

// 1 / sqrt(mean(x^2) + eps), as rms_norm.wgsl computes it, from the sum of squares.
fn norm_scale(ss: f32) -> f32 {
    return 1.0 / sqrt(ss / f32(p.cols) + p.eps);
}

// The normalised input, as the RMSNorm op writes it (one subgroup of the grid).
fn write_xn(scale: f32, lane: u32, s: u32) {
    for (var j = lane; j < p.cols / 4u; j += s) {
        xn[j] = x[j] * scale * nw[j];
    }
}
