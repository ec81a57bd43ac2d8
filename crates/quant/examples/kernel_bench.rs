//! Single-thread speed of `MatKernel::gemm` per ISA.
//!
//! ```text
//! cargo run -p rustorch-quant --release --example kernel_bench [-- q4_K q8_0 ...]
//! ```
//!
//! For each weight type (default: q4_K) a 5632 x 2048 matrix (TinyLlama's `ffn_up`: 5632 rows of
//! 2048 values) is multiplied, in tiles of 64 rows as the CPU backend calls it, by
//! - one activation row (decode, memory-bound): weight bytes streamed per second, once with the
//!   matrix hot in cache and once cycling through copies totalling more than any L3 (cold);
//! - 64 activation rows (prompt processing, compute-bound): 2 · rows · cols · tokens per second;
//! - 1 to 32 activation rows, cold, in the backend's decode tiles (a quarter of the rows each):
//!   microseconds per token (the decode of a few sequences).
//!
//! Measured on the dev box (AMD EPYC, Zen 4, 2 cores shared with other jobs, so ±10%), best of
//! repeated runs; "ggml" is llama.cpp 0c1e570's `vec_dot` built `-march=native`, called per row
//! pair in the same tiling (its repacked GEMM path was not measured). Q4_0, Q4_K and Q6_K with 64
//! tokens run the kernels' own eight-row repacking (`kernels/x86/repack*.rs`):
//!
//! | type | n_tok=1 GB/s: avx2 / avx512vnni / ggml | n_tok=64 GFLOP/s: avx2 / avx512vnni / ggml |
//! |------|-----------------------------------------|--------------------------------------------|
//! | q4_0 | 20.1 / 23.1 / —    | 137 / 234 / —  |
//! | q4_K | 20.8 / 22.2 / 21.8 | 138 / 248 / 76 |
//! | q6_K | 26.6 / 29.7 / 30.2 | 134 / 206 / 73 |
//! | q8_0 | 31.3 / 34.9 / 31.8 |  74 /  93 / 59 |
//! | q4_1 | 17.8 / 19.1 / 14.1 |  80 /  94 / 45 |
//! | q5_0 | 16.3 / 20.8 / 15.1 |  70 / 109 / 29 |
//! | f16  | 33.8 / 32.9 / —    |  75 /  74 / —  |
//!
//! Q4_0 in its load-time packed layout (`+packed` rows; `MatKernel::pack`), same machine:
//! n_tok=1 34-40 GB/s hot, 22-25 cold with avx512vnni (the cold figure is one thread's single
//! stream; the backend reads four streams per thread, see `DECODE_STREAMS`); n_tok=64 as the
//! GGUF layout (the eight-row kernel repacks both into the same scratch).
//!
//! A few tokens, cold, microseconds per token with avx512vnni, same machine: the kernels with a
//! few-token pass (`RowKernel::FEW_TOKENS` in `kernels/x86`), and in brackets the eight-row
//! repacking they take instead from 4 tokens with `FEW_TOKENS = 1`:
//!
//! | type        | n_tok: 1 | 2   | 3   | 4         | 8         | 16        |
//! |-------------|----------|-----|-----|-----------|-----------|-----------|
//! | q4_K packed | 258      | 156 | 129 | 112 (392) | 110 (232) | 116 (156) |
//! | q4_0 packed | 245      | 137 | 152 | 126 (353) | 130 (220) | 126 (153) |
//! | q6_K        | 347      | 206 | 165 | 164 (700) | 146 (431) | 152 (272) |

use std::hint::black_box;
use std::time::{Duration, Instant};

use rustorch_quant::dispatch::quantize_row;
use rustorch_quant::kernels::{mat_kernel_for, Isa, MatKernel};
use rustorch_quant::GgmlType;

const N_ROWS: usize = 5632;
const N_COLS: usize = 2048;
const TILE_ROWS: usize = 64;
const COLD_BYTES: usize = 512 << 20;
/// Token counts of the few-token timing.
const FEW_TOKENS: [usize; 8] = [1, 2, 3, 4, 8, 12, 16, 32];

/// A deterministic spread of values (no `rand` outside dev-dependencies).
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// `gemm` (or `gemm_packed` on packed weights) over all rows of `w`, tile by tile.
fn run(k: &MatKernel, packed: bool, w: &[u8], act: &[u8], n_tok: usize, out: &mut [f32]) {
    run_tiles(k, packed, w, act, n_tok, TILE_ROWS, out)
}

/// [`run`] with tiles of `tile_rows` rows.
fn run_tiles(
    k: &MatKernel,
    packed: bool,
    w: &[u8],
    act: &[u8],
    n_tok: usize,
    tile_rows: usize,
    out: &mut [f32],
) {
    let w_tile = tile_rows * k.weight_row_bytes(N_COLS);
    for (wt, ot) in w.chunks(w_tile).zip(out.chunks_mut(tile_rows * n_tok)) {
        let rows = ot.len() / n_tok;
        if packed {
            k.gemm_packed(wt, rows, act, n_tok, N_COLS, ot);
        } else {
            k.gemm(wt, rows, act, n_tok, N_COLS, ot);
        }
    }
}

/// Seconds per call of `f`: the best of several batches filling at least `budget` in total.
fn time(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut best = f64::INFINITY;
    while start.elapsed() < budget {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn bench(ty: GgmlType, isa: Isa, packed: bool) {
    let Some(k) = mat_kernel_for(ty, isa) else {
        return;
    };
    if packed && !k.has_packed_layout() {
        return;
    }
    let row_bytes = k.weight_row_bytes(N_COLS);
    let mut w = vec![0u8; N_ROWS * row_bytes];
    let x = values(N_ROWS * N_COLS, 1);
    for (xr, wr) in x.chunks(N_COLS).zip(w.chunks_mut(row_bytes)) {
        quantize_row(ty, xr, wr).unwrap();
    }
    if packed {
        let mut p = vec![0u8; w.len()];
        k.pack(&w, N_ROWS, N_COLS, &mut p);
        w = p;
    }
    let a_bytes = k.act_row_bytes(N_COLS);
    let mut act = vec![0u8; 64 * a_bytes];
    for (t, row) in act.chunks_mut(a_bytes).enumerate() {
        k.quantize_act(&values(N_COLS, 100 + t as u32), row);
    }
    let budget = Duration::from_millis(if isa == Isa::Scalar { 300 } else { 1000 });

    let mut out = vec![0f32; N_ROWS * 64];
    let hot = time(budget, || {
        run(k, packed, &w, &act[..a_bytes], 1, &mut out[..N_ROWS])
    });

    let copies = COLD_BYTES.div_ceil(w.len());
    let cold_set: Vec<Vec<u8>> = (0..copies).map(|_| w.clone()).collect();
    let mut i = 0;
    let cold = time(budget, || {
        i = (i + 1) % copies;
        run(
            k,
            packed,
            &cold_set[i],
            &act[..a_bytes],
            1,
            &mut out[..N_ROWS],
        );
    });

    // A few tokens (decode of a few sequences), cold weights in the backend's decode tiles (a
    // quarter of the rows each): microseconds per token.
    let few: Vec<String> = FEW_TOKENS
        .iter()
        .map(|&n| {
            let s = time(budget, || {
                i = (i + 1) % copies;
                let out = &mut out[..N_ROWS * n];
                run_tiles(
                    k,
                    packed,
                    &cold_set[i],
                    &act[..n * a_bytes],
                    n,
                    N_ROWS / 4,
                    out,
                );
            });
            format!("{n}:{:.0}", s * 1e6 / n as f64)
        })
        .collect();
    drop(cold_set);

    let prompt = time(budget, || run(k, packed, &w, &act, 64, &mut out));
    black_box(&out);

    let gbs = |s: f64| w.len() as f64 / s / 1e9;
    let gflops = 2.0 * (N_ROWS * N_COLS * 64) as f64 / prompt / 1e9;
    let quant = time(Duration::from_millis(100), || {
        k.quantize_act(black_box(&x[..N_COLS]), &mut act[..a_bytes]);
    });
    println!(
        "{:>5} {:>17}  n_tok=1: {:6.1} GB/s hot {:6.1} GB/s cold ({:7.1} us)   \
         n_tok=64: {:6.1} GFLOP/s ({:6.2} ms)   quantize_act: {:5.2} us   \
         cold us/token by n_tok: {}",
        ty.name(),
        if packed {
            format!("{}+packed", isa.name())
        } else {
            isa.name().to_string()
        },
        gbs(hot),
        gbs(cold),
        cold * 1e6,
        gflops,
        prompt * 1e3,
        quant * 1e6,
        few.join(" "),
    );
}

fn main() {
    let types: Vec<GgmlType> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(|name| {
            *GgmlType::ALL
                .iter()
                .find(|t| t.name().eq_ignore_ascii_case(&name))
                .unwrap_or_else(|| panic!("unknown type {name}"))
        })
        .collect();
    let types = if types.is_empty() {
        vec![GgmlType::Q4_K]
    } else {
        types
    };
    println!(
        "{N_ROWS} x {N_COLS} weights, tiles of {TILE_ROWS} rows, one thread; \
         best of repeated runs"
    );
    for ty in types {
        for isa in Isa::ALL {
            bench(ty, isa, false);
            bench(ty, isa, true);
        }
    }
}
