// What the two tiled prompt matmuls (matmul_tile.wgsl, matmul_coop.wgsl) share: a tile of 64
// weight rows x 64 tokens, its rows mapped onto the dispatch's weights, the loads of a step's 32
// columns (invocations 0..63 decode a row each, 64..127 copy the activations), and where a sum
// goes. Params and bindings: matmul_params.wgsl.

// Weight (0, 1, 2; 3: none) and row of row r of tile `tile`.
fn tile_row(tile: u32, r: u32) -> vec2<u32> {
    if (p.mode == 2u) {
        let row = tile * 32u + r % 32u;
        return vec2<u32>(select(3u, r / 32u, row < p.rows0), row);
    }
    var row = tile * 64u + r;
    if (row < p.rows0) {
        return vec2<u32>(0u, row);
    }
    row -= p.rows0;
    if (row < p.rows1) {
        return vec2<u32>(1u, row);
    }
    row -= p.rows1;
    return vec2<u32>(select(3u, 2u, row < p.rows2), row);
}

// Where row `row` of weight k's output for token t goes.
fn out_at(k: u32, row: u32, t: u32) -> u32 {
    if (k == 0u) {
        return t * p.stride0 + p.off0 + row;
    }
    return t * select(p.rows2, p.rows1, k == 1u) + row;
}

// Decoding invocations: the 32 weights of step c of their row (zeros past the last row).
fn fetch_w(kr: vec2<u32>, c: u32, row_words: u32, w: ptr<function, array<vec4<f32>, 8>>) {
    if (kr.x < 3u) {
        let blk = kr.y * row_words + (c / CPB) * BW;
        if (kr.x == 0u) {
            load_chunk0(blk, c % CPB, w);
        } else if (kr.x == 1u) {
            load_chunk1(blk, c % CPB, w);
        } else {
            load_chunk2(blk, c % CPB, w);
        }
    }
}

// Copying invocations (lid 64..127): their 8 of the 512 vec4s of step c's activations, 8 a
// token, consecutive invocations reading consecutive ones.
fn fetch_x(lid: u32, c: u32, t0: u32, xv: ptr<function, array<vec4<f32>, 8>>) {
    let xw = p.cols / 4u;
    for (var m = 0u; m < 8u; m++) {
        let e = m * 64u + lid - 64u;
        let t = e / 8u;
        var v = vec4<f32>(0.0);
        if (t0 + t < p.n) {
            v = x[(t0 + t) * xw + c * 8u + e % 8u];
        }
        (*xv)[m] = v;
    }
}

// Step c's loads for invocation lid: its row's weights (lid < 64) or its share of the activations.
fn fetch_step(
    lid: u32,
    kr: vec2<u32>,
    c: u32,
    row_words: u32,
    t0: u32,
    w: ptr<function, array<vec4<f32>, 8>>,
    xv: ptr<function, array<vec4<f32>, 8>>,
) {
    if (lid < 64u) {
        fetch_w(kr, c, row_words, w);
    } else {
        fetch_x(lid, c, t0, xv);
    }
}

// PREFETCH: step c + 1's weights and activations are loaded into registers before step c's sums
// (so their global loads are in flight meanwhile) and stored to workgroup memory after them;
// else each step loads, stores, then sums. Both kernels take it (`tile_prefetch`).
const PREFETCH: bool = {PREFETCH};

// Row r of tile `tile` for token t, its sum s (in mode 2, s is the gate row's sum and u its up
// row's, r < 32): written as the mode asks. Rows past the weights' and tokens past n are skipped.
fn put(tile: u32, r: u32, t: u32, s: f32, u: f32) {
    let kr = tile_row(tile, r);
    if (kr.x == 3u || (p.mode == 2u && r >= 32u) || t >= p.n) {
        return;
    }
    let o = out_at(kr.x, kr.y, t);
    if (p.mode == 2u) {
        out0[o] = s / (1.0 + exp(-s)) * u;
        out1[o] = u;
    } else if (kr.x == 0u) {
        out0[o] = s;
        if (p.mode == 1u) {
            res[o] += s;
        }
    } else if (kr.x == 1u) {
        out1[o] = s;
    } else {
        out2[o] = s;
    }
}
