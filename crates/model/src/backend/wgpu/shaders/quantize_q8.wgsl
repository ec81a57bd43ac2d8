// The decode mat-vec's 8-bit activations (shaders.rs's `matvec_q8`): one workgroup turns the row x
// (cols values, a multiple of 32) into blocks of 32 signed bytes and a scale each, as ggml's q8_0:
// d = max |v| / 127, q = round(v / d). Words 0..cols/4 of xq hold the bytes, four to a word in
// order; word cols/4 + b the f32 bits of block b's d. With `norm`, v is the RMSNorm of x times
// its weight (what rms_norm.wgsl writes, and it is written to xn too), else v = x.
struct Params {
    cols: u32,
    norm: u32,
    eps: f32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>; // (cols / 4)
// Scalars, so that a four-byte buffer binds where there is no norm.
@group(0) @binding(2) var<storage, read> nw: array<f32>; // (cols) with norm
@group(0) @binding(3) var<storage, read_write> xn: array<f32>; // (cols) with norm
@group(0) @binding(4) var<storage, read_write> xq: array<u32>; // (cols / 4 + cols / 32)

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) lid: u32 {SG_ARGS}) {
    {SG_LETS}
    let nq = p.cols / 4u;
    var scale = 1.0;
    if (p.norm != 0u) {
        var ss = 0.0;
        for (var j = lid; j < nq; j += 64u) {
            let v = x[j];
            ss += dot(v, v);
        }
        scale = 1.0 / sqrt(reduce_sum(ss, lid, sg_size, sg_lane) / f32(p.cols) + p.eps);
    }
    for (var b = lid; b < nq / 8u; b += 64u) {
        var v: array<vec4<f32>, 8>;
        var amax = 0.0;
        for (var i = 0u; i < 8u; i++) {
            var e = x[b * 8u + i];
            if (p.norm != 0u) {
                let k = 4u * (b * 8u + i);
                e = e * scale * vec4<f32>(nw[k], nw[k + 1u], nw[k + 2u], nw[k + 3u]);
                xn[k] = e.x;
                xn[k + 1u] = e.y;
                xn[k + 2u] = e.z;
                xn[k + 3u] = e.w;
            }
            v[i] = e;
            let a = abs(e);
            amax = max(amax, max(max(a.x, a.y), max(a.z, a.w)));
        }
        let d = amax / 127.0;
        let id = select(0.0, 1.0 / d, d > 0.0);
        for (var i = 0u; i < 8u; i++) {
            xq[b * 8u + i] = pack4xI8(vec4<i32>(round(v[i] * id)));
        }
        xq[nq + b] = bitcast<u32>(d);
    }
}
