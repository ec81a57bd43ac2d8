// Quantized matrix times one token's activations (decode), with subgroup operations: each
// subgroup owns whole rows, so a row's sum is one subgroupAdd with no barrier. A workgroup of 64
// invocations covers `rpw` rows (64 / the adapter's smallest subgroup size); its subgroups take
// rows sg_id, sg_id + n_sg, ... so any subgroup size is right.
//
// Lane l of a subgroup of s decodes weights 4q..4q+3 of the row for q = l, l + s, l + 2s, ...
// (load_quadK, from the weight's format file): one step of the subgroup reads 4s consecutive
// weights and 16s consecutive bytes of x, so the loads of a step are coalesced. The loop over a
// row (matvec_row.wgsl, one copy per weight binding) has no branch, so the loads of its four
// written-out steps are in flight together; which weight a row belongs to is decided once.
//
// Same bindings, parameters and modes as matmul.wgsl (0: out_k = W_k x; 1: out_0 = W_0 x and
// res += out_0; 2: out_1 = W_1 x and out_0 = silu(W_0 x) * out_1); the three weights may be of
// different formats. The `norm` variant also folds in the RMSNorm before the matmul: x is the
// un-normalised input, rows are dotted with x * nw, and since the lanes of a row read all of x
// once, they also sum its squares, so each row finds 1 / rms(x) and scales its sum by it; the
// first subgroup writes the normalised input to xn, as the RMSNorm op would.
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
{ROWS}
// Gate and up rows (mode 2, weights 0 and 1 with rows0 rows each) dotted with x: (gate, up, sum
// of squares of x).
fn row_dot_gu(row: u32, lane: u32, s: u32) -> vec3<f32> {
    let nq = p.cols / 4u;
    let rb0 = row * (p.cols / QB0) * BW0;
    let rb1 = row * (p.cols / QB1) * BW1;
    var acc = vec3<f32>(0.0);
    var q = lane;
    for (; q + s < nq; q += 2u * s) {
        let qb = q + s;
        let xa = x[q];
        let xb = x[qb];
        let ga = load_quad0(rb0 + (4u * q / QB0) * BW0, (4u * q) % QB0);
        let gb = load_quad0(rb0 + (4u * qb / QB0) * BW0, (4u * qb) % QB0);
        let ua = load_quad1(rb1 + (4u * q / QB1) * BW1, (4u * q) % QB1);
        let ub = load_quad1(rb1 + (4u * qb / QB1) * BW1, (4u * qb) % QB1);
        let ya = xw(xa, q);
        let yb = xw(xb, qb);
        acc += vec3<f32>(dot(ga, ya) + dot(gb, yb), dot(ua, ya) + dot(ub, yb), sq(xa) + sq(xb));
    }
    if (q < nq) {
        let xa = x[q];
        let ya = xw(xa, q);
        let ga = load_quad0(rb0 + (4u * q / QB0) * BW0, (4u * q) % QB0);
        let ua = load_quad1(rb1 + (4u * q / QB1) * BW1, (4u * q) % QB1);
        acc += vec3<f32>(dot(ga, ya), dot(ua, ya), sq(xa));
    }
    return acc;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_size) sg_size: u32, @builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_id) sg_id: u32, @builtin(num_subgroups) n_sg: u32) {
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
        // (sum of weight 0 or k, sum of weight 1 in mode 2, sum of squares of x)
        var d: vec3<f32>;
        if (p.mode == 2u) {
            d = row_dot_gu(row, sg_lane, sg_size);
        } else {
            var e: vec2<f32>;
            if (k == 0u) {
                e = row_dot0(row, sg_lane, sg_size);
            } else if (k == 1u) {
                e = row_dot1(row, sg_lane, sg_size);
            } else {
                e = row_dot2(row, sg_lane, sg_size);
            }
            d = vec3<f32>(e.x, 0.0, e.y);
        }
        let t = subgroupAdd(d);
        let scale = norm_scale(t.z);
        let sum = t.x * scale;
        let u = t.y * scale;
        if (first == 0u && r == 0u) {
            write_xn(scale, sg_lane, sg_size);
        }
        if (sg_lane == 0u) {
            if (p.mode == 2u) {
                out0[row] = sum / (1.0 + exp(-sum)) * u;
                out1[row] = u;
            } else if (k == 0u) {
                out0[row] = sum;
                if (p.mode == 1u) {
                    res[row] += sum;
                }
            } else if (k == 1u) {
                out1[row] = sum;
            } else {
                out2[row] = sum;
            }
        }
    }
}
