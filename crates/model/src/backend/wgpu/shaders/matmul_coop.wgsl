// Quantized matrix times activations for prompts, by tiles summed with cooperative matrices
// (tensor cores through VK_KHR_cooperative_matrix, simdgroup matrices on Metal): the tiles of
// matmul_tile.wgsl (64 weight rows x 64 tokens a workgroup of 128 invocations, the weights
// decoded from their format 32 columns a step; shared parts in matmul_tiles.wgsl), held in f16
// and multiplied S x S x S at a time into f32 sums, one subgroup of 32 per quarter of the tile.
//
// Subgroup g takes 32 rows x 32 tokens (tokens 32(g / 2).. + 31): in modes 0 and 1 rows
// 32(g % 2).. + 31, in mode 2 gate rows 16(g % 2).. + 15 and their up rows (32 further on), so
// that gate and up sums meet in one place. The same shape in every mode keeps every loop over a
// subgroup's matrices a constant one (unrolled, its sums indexed by constants: registers). At the
// end every subgroup stores its sums to workgroup memory (ct) and the whole workgroup writes them
// out as matmul_tile.wgsl does.
//
// {S} is 16 or 8 (Metal's only size); the matrix loads, multiply-adds and stores are mma_a,
// mma_b, mma and mma_store, from coop_hw.wgsl (the hardware's) or coop_emu.wgsl (the same
// arithmetic per invocation, for adapters without cooperative matrices: the tests).
// Params and bindings: matmul_params.wgsl.

const S: u32 = {S}u;
// f16s a row of wt and a token of xt: a step's 32 columns and 8 of padding (80 bytes: every
// matrix starts at a multiple of 16 bytes, and rows fall across banks); f32s a token of ct.
const WS: u32 = 40u;
const CS: u32 = 68u;
// Row and token matrices of a subgroup (S x S each): 32 rows x 32 tokens.
const NR: u32 = 32u / S;
const NT: u32 = 32u / S;

var<workgroup> wt: array<f16, 2560>; // 64 rows x WS
var<workgroup> xt: array<f16, 2560>; // 64 tokens x WS
var<workgroup> ct: array<f32, 4352>; // 64 tokens x CS

// Row of the tile where subgroup g's row matrix r starts (see the top).
fn block_row(g: u32, r: u32) -> u32 {
    if (p.mode == 2u) {
        return 16u * (g % 2u) + (r % (16u / S)) * S + 32u * (r / (16u / S));
    }
    return 32u * (g % 2u) + r * S;
}

// Token of the tile where subgroup g's token matrix t starts.
fn block_tok(g: u32, t: u32) -> u32 {
    return 32u * (g / 2u) + t * S;
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32{SG_ID_ARG}) {
    {SG_ID_LET}
    let lane = lid % 32u;
    let tile = wid.x + wid.z * 32768u;
    let t0 = wid.y * 64u;
    let n_chunk = p.cols / 32u;
    let row_words = (n_chunk / CPB) * BW;
    let kr = tile_row(tile, lid % 64u);
    // The sums start from zeros loaded from ct, zeroed here.
    for (var e = lid; e < 4352u; e += 128u) {
        ct[e] = 0.0;
    }
    workgroupBarrier();
    var acc: array<MatC, NR * NT>;
    for (var m = 0u; m < NR * NT; m++) {
        acc[m] = mma_zero(lane);
    }
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
                let h = vec4<f16>(w[q]);
                let o = lid * WS + q * 4u;
                wt[o] = h.x;
                wt[o + 1u] = h.y;
                wt[o + 2u] = h.z;
                wt[o + 3u] = h.w;
            }
        } else {
            for (var m = 0u; m < 8u; m++) {
                let e = m * 64u + lid - 64u;
                let h = vec4<f16>(xv[m]);
                let o = (e / 8u) * WS + (e % 8u) * 4u;
                xt[o] = h.x;
                xt[o + 1u] = h.y;
                xt[o + 2u] = h.z;
                xt[o + 3u] = h.w;
            }
        }
        workgroupBarrier();
        if (PREFETCH && c + 1u < n_chunk) {
            fetch_step(lid, kr, c + 1u, row_words, t0, &w, &xv);
        }
        workgroupBarrier();
        for (var k = 0u; k < 32u; k += S) {
            var bm: array<MatB, NT>;
            for (var t = 0u; t < NT; t++) {
                bm[t] = mma_b(block_tok(g, t) * WS + k);
            }
            for (var r = 0u; r < NR; r++) {
                let a = mma_a(block_row(g, r) * WS + k);
                for (var t = 0u; t < NT; t++) {
                    acc[r * NT + t] = mma(a, bm[t], acc[r * NT + t], lane);
                }
            }
        }
        workgroupBarrier();
    }
    for (var r = 0u; r < NR; r++) {
        for (var t = 0u; t < NT; t++) {
            mma_store(acc[r * NT + t], block_tok(g, t) * CS + block_row(g, r), lane);
        }
    }
    workgroupBarrier();
    // As matmul_tile.wgsl's invocations: rows i + 8a, tokens j + 16b.
    let i = lid / 16u;
    let j = lid % 16u;
    for (var a = 0u; a < 8u; a++) {
        for (var b = 0u; b < 4u; b++) {
            let o = (j + 16u * b) * CS + i + 8u * a;
            put(tile, i + 8u * a, t0 + j + 16u * b, ct[o], ct[o + select(0u, 32u, a < 4u)]);
        }
    }
}
