// Quantized matrix times activations, for NT tokens per workgroup. One workgroup (64
// invocations) per output row; each invocation decodes 32-weight chunks of the row in turn
// (load_chunkK, from the weight's format file), so a row is read once for NT tokens.
//
// Up to three weights of the same format and width share one dispatch (q/k/v, gate/up): their
// rows follow each other in the grid. The mode adds what would otherwise be separate passes:
// 0: out_k = W_k x;  1: out_0 = W_0 x and res += out_0 (the residual add);
// 2: out_1 = W_1 x and out_0 = silu(W_0 x) * out_1 (SwiGLU; both weights have rows_0 rows).
//
// W_0 may be a part of a larger weight (rows off0..off0 + rows0 of it, a weight larger than one
// binding): its outputs then go to columns off0.. of out0's (and res's) rows of stride0 values.
// Params and bindings: matmul_params.wgsl.

const NT: u32 = {NT}u;

// Straight-line: the eight loads of x are in flight at once.
fn dot_chunk(w: ptr<function, array<vec4<f32>, 8>>, xb: u32) -> f32 {
    let s0 = dot((*w)[0], x[xb]) + dot((*w)[1], x[xb + 1u]);
    let s1 = dot((*w)[2], x[xb + 2u]) + dot((*w)[3], x[xb + 3u]);
    let s2 = dot((*w)[4], x[xb + 4u]) + dot((*w)[5], x[xb + 5u]);
    let s3 = dot((*w)[6], x[xb + 6u]) + dot((*w)[7], x[xb + 7u]);
    return (s0 + s1) + (s2 + s3);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32 {SG_ARGS}) {
    {SG_LETS}
    var row = wid.x + wid.z * 32768u;
    if (row >= p.groups) {
        return;
    }
    var k = 0u;
    var rows = p.rows0;
    if (p.mode != 2u && row >= p.rows0) {
        row -= p.rows0;
        k = 1u;
        rows = p.rows1;
        if (row >= p.rows1) {
            row -= p.rows1;
            k = 2u;
            rows = p.rows2;
        }
    }
    var stride = rows;
    var off = 0u;
    if (k == 0u) {
        stride = p.stride0;
        off = p.off0;
    }
    let t0 = wid.y * NT;
    let n_chunk = p.cols / 32u;
    let row_words = (n_chunk / CPB) * BW;
    let xw = p.cols / 4u;
    var acc: array<f32, NT>;
    var acc1: array<f32, NT>; // mode 2: the up projection
    for (var c = lid; c < n_chunk; c += 64u) {
        let blk = row * row_words + (c / CPB) * BW;
        var w: array<vec4<f32>, 8>;
        if (k == 0u) {
            load_chunk0(blk, c % CPB, &w);
        } else if (k == 1u) {
            load_chunk1(blk, c % CPB, &w);
        } else {
            load_chunk2(blk, c % CPB, &w);
        }
        for (var t = 0u; t < NT; t++) {
            if (t0 + t < p.n) {
                acc[t] += dot_chunk(&w, (t0 + t) * xw + c * 8u);
            }
        }
        if (p.mode == 2u) {
            load_chunk1(blk, c % CPB, &w);
            for (var t = 0u; t < NT; t++) {
                if (t0 + t < p.n) {
                    acc1[t] += dot_chunk(&w, (t0 + t) * xw + c * 8u);
                }
            }
        }
    }
    for (var t = 0u; t < NT; t++) {
        let s = reduce_sum(acc[t], lid, sg_size, sg_lane);
        var u = 0.0;
        if (p.mode == 2u) {
            u = reduce_sum(acc1[t], lid, sg_size, sg_lane);
        }
        if (lid == 0u && t0 + t < p.n) {
            let o = (t0 + t) * stride + off + row;
            if (p.mode == 2u) {
                out0[o] = s / (1.0 + exp(-s)) * u;
                out1[o] = u;
            } else if (k == 0u) {
                out0[o] = s;
                if (p.mode == 1u) {
                    res[o] += s;
                }
            } else if (k == 1u) {
                out1[o] = s;
            } else {
                out2[o] = s;
            }
        }
    }
}
