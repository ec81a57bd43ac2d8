// out[t] = table[token of step row t], rows decoded from the table's block format. A table larger
// than one binding is bound a part at a time (rows row0..row0 + part_rows; all of them
// otherwise): each dispatch writes the rows whose token its part holds.
struct Params {
    rows: u32,
    cols: u32,
    n: u32,
    row0: u32,
    part_rows: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wq: array<u32>;     // (part_rows, blocks of the row)
@group(0) @binding(2) var<storage, read> step: array<vec4<u32>>; // per row: token, sequence, position
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>; // (n, cols / 4)

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n_chunk = p.cols / 32u;
    let c = gid.x;
    let t = gid.y;
    if (c >= n_chunk || t >= p.n) {
        return;
    }
    let tok = min(step[t].x, p.rows - 1u);
    if (tok < p.row0 || tok - p.row0 >= p.part_rows) {
        return;
    }
    let row_words = (n_chunk / CPB) * BW;
    var w: array<vec4<f32>, 8>;
    load_chunk((tok - p.row0) * row_words + (c / CPB) * BW, c % CPB, &w);
    let ob = t * (p.cols / 4u) + c * 8u;
    for (var j = 0u; j < 8u; j++) {
        out[ob + j] = w[j];
    }
}
