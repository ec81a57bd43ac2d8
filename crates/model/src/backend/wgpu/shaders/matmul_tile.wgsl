// Quantized matrix times activations for prompts, by tiles: a workgroup of 128 invocations
// computes 64 weight rows x 64 tokens. Per step of 32 columns, invocations 0..63 decode one
// 32-weight chunk of a row each (load_chunkK, from the weight's format file) into workgroup
// memory, invocations 64..127 copy the 64 tokens' 32 activations there, and then every invocation
// accumulates 8 rows x 4 tokens out of workgroup memory: a decoded weight is read from workgroup
// memory by 16 invocations and an activation by 8, instead of each weight once per token from
// registers as in `matmul.wgsl`.
//
// The parameters, bindings and modes are `matmul.wgsl`'s (0: out_k = W_k x; 1: out_0 = W_0 x and
// res += out_0; 2: out_0 = silu(W_0 x) * (W_1 x), out_1 = W_1 x). A tile's rows run across the
// weights of the dispatch in modes 0 and 1; in mode 2 its first 32 rows are gate rows and its last
// 32 the same rows of up, so that an invocation holds both halves of its outputs.
//
// {TILE} is f32, or f16 where the adapter has `shader-f16`: the tiles then hold f16 weights and
// activations (half the workgroup memory and its traffic), and each four-term dot product is an
// f16 one (its products and their sum must stay within f16's range), added to f32 sums.
// Params and bindings: matmul_params.wgsl.

// A step's 32 columns of 64 rows and of 64 tokens, 8 vec4s each. Vec4 q of row (or token) r is
// at r * 8 + (q ^ (r & 7)): the 8 rows a decoding subgroup writes at once, and the 8 tokens
// an accumulating one reads at once, fall in different banks.
var<workgroup> wt: array<vec4<{TILE}>, 512>;
var<workgroup> xt: array<vec4<{TILE}>, 512>;

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let tile = wid.x + wid.z * 32768u;
    let t0 = wid.y * 64u;
    let n_chunk = p.cols / 32u;
    let row_words = (n_chunk / CPB) * BW;
    // Decoding invocations: their row.
    let kr = tile_row(tile, lid % 64u);
    // Accumulating invocations: rows i + 8a, tokens j + 16b.
    let i = lid / 16u;
    let j = lid % 16u;
    var acc: array<vec4<f32>, 8>;
    var w: array<vec4<f32>, 8>;
    var xv: array<vec4<f32>, 8>;
    if (PREFETCH) {
        fetch_step(lid, kr, 0u, row_words, t0, &w, &xv);
    }
    for (var c = 0u; c < n_chunk; c++) {
        if (!PREFETCH) {
            fetch_step(lid, kr, c, row_words, t0, &w, &xv);
        }
        if (lid < 64u) {
            for (var q = 0u; q < 8u; q++) {
                wt[lid * 8u + (q ^ (lid & 7u))] = vec4<{TILE}>(w[q]);
            }
        } else {
            for (var m = 0u; m < 8u; m++) {
                let e = m * 64u + lid - 64u;
                let t = e / 8u;
                let q = e % 8u;
                xt[t * 8u + (q ^ (t & 7u))] = vec4<{TILE}>(xv[m]);
            }
        }
        workgroupBarrier();
        if (PREFETCH && c + 1u < n_chunk) {
            fetch_step(lid, kr, c + 1u, row_words, t0, &w, &xv);
        }
        for (var q = 0u; q < 8u; q++) {
            let xq = q ^ (j & 7u);
            let x0 = xt[j * 8u + xq];
            let x1 = xt[(j + 16u) * 8u + xq];
            let x2 = xt[(j + 32u) * 8u + xq];
            let x3 = xt[(j + 48u) * 8u + xq];
            let wsw = q ^ (i & 7u);
            for (var a = 0u; a < 8u; a++) {
                let wv = wt[(i + 8u * a) * 8u + wsw];
                acc[a] += vec4<f32>(vec4<{TILE}>(dot(wv, x0), dot(wv, x1), dot(wv, x2), dot(wv, x3)));
            }
        }
        workgroupBarrier();
    }
    for (var a = 0u; a < 8u; a++) {
        for (var b = 0u; b < 4u; b++) {
            put(tile, i + 8u * a, t0 + j + 16u * b, acc[a][b], acc[(a + 4u) % 8u][b]);
        }
    }
}
