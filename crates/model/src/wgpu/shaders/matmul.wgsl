// out[t, r] = sum_c W[r, c] * x[t, c] for NT tokens per workgroup; one workgroup (64
// invocations) per weight row, each invocation decoding 32-weight chunks of the row in turn, so a
// row is read once for NT tokens. W stays in its block format (load_chunk above).
struct Params {
    rows: u32,
    cols: u32,
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wq: array<u32>;   // (rows, blocks of the row)
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>; // (n, cols / 4)
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // (n, rows)

const NT: u32 = {NT}u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32 {SG_ARGS}) {
    {SG_LETS}
    let row = wid.x + wid.z * 32768u;
    if (row >= p.rows) {
        return;
    }
    let t0 = wid.y * NT;
    let n_chunk = p.cols / 32u;
    let row_words = (n_chunk / CPB) * BW;
    let xw = p.cols / 4u;
    var acc: array<f32, NT>;
    for (var c = lid; c < n_chunk; c += 64u) {
        var w: array<vec4<f32>, 8>;
        load_chunk(row * row_words + (c / CPB) * BW, c % CPB, &w);
        for (var t = 0u; t < NT; t++) {
            if (t0 + t < p.n) {
                let xb = (t0 + t) * xw + c * 8u;
                var s = 0.0;
                for (var j = 0u; j < 8u; j++) {
                    s += dot(w[j], x[xb + j]);
                }
                acc[t] += s;
            }
        }
    }
    for (var t = 0u; t < NT; t++) {
        let s = reduce_sum(acc[t], lid, sg_size, sg_lane);
        if (lid == 0u && t0 + t < p.n) {
            out[(t0 + t) * p.rows + row] = s;
        }
    }
}
