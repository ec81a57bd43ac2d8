// Quantized matrix times one token's activations (decode), with subgroup operations: each
// subgroup owns whole rows, so a row's sum is one subgroupAdd with no workgroup memory and no
// barrier. A workgroup of 64 invocations covers `rpw` rows (64 / the adapter's smallest
// subgroup size, so that every subgroup has a row where the sizes match); its subgroups take
// rows sg_id, sg_id + n_sg, ... so any subgroup size is right. Each invocation decodes two
// 32-weight chunks per step, whose loads are independent, so twice the bytes are in flight.
//
// Same bindings, parameters and modes as matmul.wgsl (0: out_k = W_k x; 1: out_0 = W_0 x and
// res += out_0; 2: out_1 = W_1 x and out_0 = silu(W_0 x) * out_1); the three weights may be of
// different formats. The `norm` variant also folds in the RMSNorm before the matmul (see
// matvec.wgsl). RUSTORCH_WGPU_MATVEC=chunk picks this kernel over matvec.wgsl.

struct Params {
    cols: u32,
    n: u32,
    mode: u32,
    groups: u32, // rows over which the grid runs
    rows0: u32,
    rows1: u32,
    rows2: u32,
    rpw: u32, // rows per workgroup
    eps: f32, // RMSNorm epsilon (norm variant)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w0: array<u32>; // (rows0, blocks of the row)
@group(0) @binding(2) var<storage, read> w1: array<u32>;
@group(0) @binding(3) var<storage, read> w2: array<u32>;
@group(0) @binding(4) var<storage, read> x: array<vec4<f32>>; // (cols / 4)
@group(0) @binding(5) var<storage, read_write> out0: array<f32>; // (rows0)
@group(0) @binding(6) var<storage, read_write> out1: array<f32>; // (rows1)
@group(0) @binding(7) var<storage, read_write> out2: array<f32>; // (rows2)
@group(0) @binding(8) var<storage, read_write> res: array<f32>;  // (rows0)
{NORM_DECL}

// Straight-line: the eight loads of x are in flight at once. (dot, sum of squares of x)
fn dot_chunk(w: ptr<function, array<vec4<f32>, 8>>, xb: u32) -> vec2<f32> {
    var r = vec2<f32>(0.0);
    for (var i = 0u; i < 8u; i += 2u) {
        let x0 = x[xb + i];
        let x1 = x[xb + i + 1u];
        r += vec2<f32>(dot((*w)[i], xw(x0, xb + i)) + dot((*w)[i + 1u], xw(x1, xb + i + 1u)), sq(x0) + sq(x1));
    }
    return r;
}

// Chunk c of row `row` of weight k, dotted with x; in mode 2 also the same chunk of w1 (.y).
// (the dot, that of w1 in mode 2, the sum of squares of x)
fn chunk(k: u32, row: u32, c: u32) -> vec3<f32> {
    let n_chunk = p.cols / 32u;
    var w: array<vec4<f32>, 8>;
    if (k == 0u) {
        load_chunk0(row * (n_chunk / CPB0) * BW0 + (c / CPB0) * BW0, c % CPB0, &w);
    } else if (k == 1u) {
        load_chunk1(row * (n_chunk / CPB1) * BW1 + (c / CPB1) * BW1, c % CPB1, &w);
    } else {
        load_chunk2(row * (n_chunk / CPB2) * BW2 + (c / CPB2) * BW2, c % CPB2, &w);
    }
    var r = dot_chunk(&w, c * 8u).xyy;
    r.y = 0.0;
    if (p.mode == 2u) {
        load_chunk1(row * (n_chunk / CPB1) * BW1 + (c / CPB1) * BW1, c % CPB1, &w);
        r.y = dot_chunk(&w, c * 8u).x;
    }
    return r;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_size) sg_size: u32, @builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_id) sg_id: u32, @builtin(num_subgroups) n_sg: u32) {
    let n_chunk = p.cols / 32u;
    let first = (wid.x + wid.z * 32768u) * p.rpw;
    for (var r = sg_id; r < p.rpw; r += n_sg) {
        var row = first + r;
        if (row >= p.groups) {
            break;
        }
        var k = 0u;
        if (p.mode != 2u && row >= p.rows0) {
            row -= p.rows0;
            k = 1u;
            if (row >= p.rows1) {
                row -= p.rows1;
                k = 2u;
            }
        }
        var acc = vec3<f32>(0.0);
        var c = sg_lane;
        for (; c + sg_size < n_chunk; c += 2u * sg_size) {
            let a = chunk(k, row, c);
            let b = chunk(k, row, c + sg_size);
            acc += a + b;
        }
        if (c < n_chunk) {
            acc += chunk(k, row, c);
        }
        let t = subgroupAdd(acc);
        let scale = norm_scale(t.z);
        let s = t.x * scale;
        let u = t.y * scale;
        if (first == 0u && r == 0u) {
            write_xn(scale, sg_lane, sg_size);
        }
        if (sg_lane == 0u) {
            if (p.mode == 2u) {
                out0[row] = s / (1.0 + exp(-s)) * u;
                out1[row] = u;
            } else if (k == 0u) {
                out0[row] = s;
                if (p.mode == 1u) {
                    res[row] += s;
                }
            } else if (k == 1u) {
                out1[row] = s;
            } else {
                out2[row] = s;
            }
        }
    }
}
