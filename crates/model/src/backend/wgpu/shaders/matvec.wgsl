// Quantized matrix times one token's activations (decode): a workgroup of WG invocations takes
// RPW rows, S = WG / RPW invocations a row (64 and one row by default), summed by subgroup
// operations and one partial per subgroup in workgroup memory. With several rows a workgroup, S
// is at least the adapter's largest subgroup size, and a row's subgroups are consecutive ones
// (subgroups cover consecutive invocations, as on every driver met so far).
//
// The quads' loop, for S = 64 (the block dots take sixteen invocations a block): invocation i
// decodes weights 4q..4q+3 of the row for q = i, i + 64, ... (load_quadK, from the format file): one step of the workgroup reads 256 consecutive weights and
// 1 KiB of x, so the loads of a step are coalesced. The loop over a row (matvec_row.wgsl, one
// copy per weight binding) has no branch, so the loads of its eight written-out steps are in
// flight together (a branch inside it, even in a decoder, serialised them: 2-4x slower on an
// H100); which weight a row belongs to is decided once, outside it. A 2048-wide row is then one
// round of loads per invocation.
//
// Same bindings, parameters and modes as matmul.wgsl (0: out_k = W_k x; 1: out_0 = W_0 x and
// res += out_0; 2: out_1 = W_1 x and out_0 = silu(W_0 x) * out_1); the three weights may be of
// different formats. The `norm` variant also folds in the RMSNorm before the matmul: x is the
// un-normalised input, rows are dotted with x * nw, and since the lanes of a row read all of x
// once, they also sum its squares, so each row finds 1 / rms(x) and scales its sum by it; the
// first workgroup writes the normalised input to xn, as the RMSNorm op would. W_0 may be a part
// of a larger weight (as in matmul.wgsl): its rows' outputs then go to out0 and res from off0.
struct Params {
    cols: u32,
    n: u32,
    mode: u32,
    groups: u32, // rows over which the grid runs
    rows0: u32,
    rows1: u32,
    rows2: u32,
    rpw: u32, // rows per workgroup (1 here)
    eps: f32, // RMSNorm epsilon (norm variant)
    stride0: u32, // matmul.wgsl's (one row here)
    off0: u32, // out0's index of W_0's first row (0 unless W_0 is a part)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w0: array<u32>; // (rows0, blocks of the row)
@group(0) @binding(2) var<storage, read> w1: array<u32>;
@group(0) @binding(3) var<storage, read> w2: array<u32>;
@group(0) @binding(4) var<storage, read> x: array<vec4<f32>>; // (cols / 4)
@group(0) @binding(5) var<storage, read_write> out0: array<f32>; // (off0 + rows0)
@group(0) @binding(6) var<storage, read_write> out1: array<f32>; // (rows1)
@group(0) @binding(7) var<storage, read_write> out2: array<f32>; // (rows2)
@group(0) @binding(8) var<storage, read_write> res: array<f32>;  // (off0 + rows0)
{NORM_DECL}
{ROWS}
{GU}
const WG: u32 = {WG}u;
const RPW: u32 = {RPW}u;
const S: u32 = WG / RPW;
var<workgroup> part: array<vec3<f32>, WG>; // per subgroup: its share of its row's sums

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(subgroup_size) sg_size: u32, @builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_id) sg_id: u32, @builtin(num_subgroups) n_sg: u32) {
    let g = wid.x + wid.z * 32768u;
    if (g * RPW >= p.groups) {
        return; // the whole workgroup
    }
    // A row past the last (the last workgroup's, rows not a multiple of RPW) repeats the last
    // one and writes nothing: its invocations still reach the barrier.
    let own = g * RPW + lid / S;
    let live = own < p.groups;
    var row = min(own, p.groups - 1u);
    let lane = lid % S;
    var k = 0u;
    if (p.mode != 2u && row >= p.rows0) {
        row -= p.rows0;
        k = 1u;
        if (row >= p.rows1) {
            row -= p.rows1;
            k = 2u;
        }
    }
    // (sum of weight 0 or k, sum of weight 1 in mode 2, sum of squares of x), this invocation's
    // share: weights 4q..4q+3 for q = lane, lane + S, ...
    var d: vec3<f32>;
    if (p.mode == 2u) {
        d = row_dot_gu(row, lane, S);
    } else {
        var e: vec2<f32>;
        if (k == 0u) {
            e = row_dot0(row, lane, S);
        } else if (k == 1u) {
            e = row_dot1(row, lane, S);
        } else {
            e = row_dot2(row, lane, S);
        }
        d = vec3<f32>(e.x, 0.0, e.y);
    }
    let ds = subgroupAdd(d);
    if (sg_lane == 0u) {
        part[sg_id] = ds;
    }
    workgroupBarrier();
    // The partials of this row's subgroups (all of them with one row a workgroup, whatever the
    // subgroup size).
    var t = vec3<f32>(0.0);
    let per = select(n_sg, S / sg_size, RPW > 1u);
    let first = (lid / S) * per;
    for (var i = 0u; i < per; i++) {
        t += part[first + i];
    }
    let scale = norm_scale(t.z);
    let sum = t.x * scale;
    let u = t.y * scale;
    if (wid.x == 0u && wid.z == 0u) {
        write_xn(scale, lid, WG);
    }
    if (lane == 0u && live) {
        let o = p.off0 + row;
        if (p.mode == 2u) {
            out0[o] = sum / (1.0 + exp(-sum)) * u;
            out1[o] = u;
        } else if (k == 0u) {
            out0[o] = sum;
            if (p.mode == 1u) {
                res[o] += sum;
            }
        } else if (k == 1u) {
            out1[row] = sum;
        } else {
            out2[row] = sum;
        }
    }
}
