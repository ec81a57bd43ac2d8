//! The fast kernels against the scalar reference, for every type and every ISA this machine has.
//!
//! - `quantize_act` must write exactly the bytes of `dispatch::quantize_row`.
//! - `gemm` must equal `dispatch::vec_dot` of each (weight row, activation row) pair up to float
//!   rounding. Integer block sums are exact in both; only the order of the float scaling and
//!   summing differs, so the tolerance is `2e-5 · M` where `M = Σ |terms|`, an upper bound of the
//!   magnitudes both sides add up: `Σ_i (|d·q_i| + |min_i|) · |a_i|` from dequantized rows. A wrong
//!   single product moves the result by about `M / n_cols >= 5e-4 · M`, well over that.
//!   Float weights (with F32 activations) are held to the f64 dot of the converted weights.
//!
//! Inputs are fresh random numbers every run; the seed is printed, and `KERNEL_TEST_SEED=<n>`
//! replays a run.

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rustorch_quant::dispatch::{dequantize_row, quantize_row, vec_dot, vec_dot_type};
use rustorch_quant::kernels::{mat_kernel, mat_kernel_for, Isa, MatKernel};
use rustorch_quant::GgmlType;

use GgmlType as T;

const QUANTIZED: [GgmlType; 10] = [
    T::Q8_0,
    T::Q4_1,
    T::Q5_0,
    T::Q4_K,
    T::Q6_K,
    T::Q4_0,
    T::Q5_1,
    T::Q5_K,
    T::Q3_K,
    T::Q2_K,
];
const FLOATS: [GgmlType; 3] = [T::F16, T::BF16, T::F32];
const ROW_LENGTHS: [usize; 4] = [256, 576, 1536, 2048];
const TOKENS: [usize; 5] = [1, 3, 4, 7, 16];
const N_ROWS: usize = 5;
const REL_TOL: f64 = 2e-5;

fn rng(test: &str) -> StdRng {
    let seed = match std::env::var("KERNEL_TEST_SEED") {
        Ok(s) => s.parse().expect("KERNEL_TEST_SEED is a u64"),
        Err(_) => rand::thread_rng().next_u64(),
    };
    eprintln!("{test}: KERNEL_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// Values with a random scale per row and some outliers, like activations and weights.
fn random_values(rng: &mut StdRng, n: usize) -> Vec<f32> {
    let scale = 10f32.powf(rng.gen_range(-2.0..1.0));
    let shift = rng.gen_range(-0.5..0.5) * scale;
    (0..n)
        .map(|_| {
            let v: f32 = rng.gen_range(-1.0..1.0) * scale + shift;
            if rng.gen_ratio(1, 50) {
                v * 8.0
            } else {
                v
            }
        })
        .collect()
}

fn quantized_row(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; x.len() / ty.block_size() * ty.type_size()];
    quantize_row(ty, x, &mut out).unwrap();
    out
}

fn dequantized(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; bytes.len() / ty.type_size() * ty.block_size()];
    dequantize_row(ty, bytes, &mut out).unwrap();
    out
}

/// Byte offsets of the f16 fields of a block: scales (`d`), then the mins' scale (`m`, `dmin`).
fn f16_fields(ty: GgmlType) -> (&'static [usize], &'static [usize]) {
    match ty {
        T::Q4_0 | T::Q5_0 | T::Q8_0 => (&[0], &[]),
        T::Q4_1 | T::Q5_1 | T::Q4_K | T::Q5_K => (&[0], &[2]),
        T::Q2_K => (&[80], &[82]),
        T::Q3_K => (&[108], &[]),
        T::Q6_K => (&[208], &[]),
        _ => (&[], &[]),
    }
}

/// Weight rows of random bits, with sane f16 scales so that every value is finite: every bit
/// pattern of the quants, scales and mins gets exercised, not just what the quantizer writes.
fn random_bits_rows(rng: &mut StdRng, ty: GgmlType, n_rows: usize, n_cols: usize) -> Vec<u8> {
    let mut w = vec![0u8; n_rows * n_cols / ty.block_size() * ty.type_size()];
    rng.fill_bytes(&mut w);
    let (d, m) = f16_fields(ty);
    for block in w.chunks_exact_mut(ty.type_size()) {
        for &at in d.iter().chain(m) {
            let v = half::f16::from_f32(rng.gen_range(-0.05..0.05));
            block[at..at + 2].copy_from_slice(&v.to_bits().to_le_bytes());
        }
    }
    w
}

/// `Σ_i (|d·q_i| + |min_i|) · |a_i|` for one pair of rows: the weights dequantized with their
/// mins' scale zeroed give `d·q`, the difference to the full dequantization gives the mins.
fn magnitude(ty: GgmlType, w_row: &[u8], a_vals: &[f32]) -> f64 {
    let full = dequantized(ty, w_row);
    let mut no_min = w_row.to_vec();
    let (_, m) = f16_fields(ty);
    for block in no_min.chunks_exact_mut(ty.type_size()) {
        for &at in m {
            block[at..at + 2].fill(0);
        }
    }
    let scaled = dequantized(ty, &no_min);
    full.iter()
        .zip(&scaled)
        .zip(a_vals)
        .map(|((&f, &s), &a)| (f64::from(s.abs()) + f64::from((f - s).abs())) * f64::from(a.abs()))
        .sum()
}

/// Runs `kernel.gemm` on `w` (`n_rows` rows of `n_cols`) and `n_tok` random activation rows, and
/// checks `quantize_act` and every output against the reference.
fn check_gemm(
    rng: &mut StdRng,
    kernel: &MatKernel,
    w: &[u8],
    n_rows: usize,
    n_cols: usize,
    n_tok: usize,
) {
    let (ty, act_ty) = (kernel.weight_type(), kernel.act_type());
    let ctx = format!(
        "{ty} x {act_ty} on {}, {n_rows} x {n_cols}, {n_tok} tokens",
        kernel.isa()
    );
    let w_row = kernel.weight_row_bytes(n_cols);
    let a_row = kernel.act_row_bytes(n_cols);

    let mut act = vec![0u8; n_tok * a_row];
    for t in 0..n_tok {
        let x = random_values(rng, n_cols);
        let dst = &mut act[t * a_row..][..a_row];
        kernel.quantize_act(&x, dst);
        let want = quantized_row(act_ty, &x);
        assert!(
            dst == want.as_slice(),
            "{ctx}: quantize_act differs from quantize_row, token {t}"
        );
    }

    let mut out = vec![f32::NAN; n_rows * n_tok];
    kernel.gemm(w, n_rows, &act, n_tok, n_cols, &mut out);
    let mut outs = vec![("gemm", out)];
    if kernel.has_packed_layout() {
        // The load-time layout: a lossless rewrite, and `gemm_packed` on it agrees too.
        let mut packed = vec![0u8; w.len()];
        kernel.pack(w, n_rows, n_cols, &mut packed);
        let mut back = vec![0u8; w.len()];
        kernel.unpack(&packed, n_rows, n_cols, &mut back);
        assert!(back == w, "{ctx}: unpack(pack(w)) != w");
        let mut out = vec![f32::NAN; n_rows * n_tok];
        kernel.gemm_packed(&packed, n_rows, &act, n_tok, n_cols, &mut out);
        outs.push(("gemm_packed", out));
    }

    for (what, out) in &outs {
        for t in 0..n_tok {
            let a = &act[t * a_row..][..a_row];
            let a_vals = dequantized(act_ty, a);
            for r in 0..n_rows {
                let wr = &w[r * w_row..][..w_row];
                let (want, m) = if ty.is_quantized() {
                    (
                        f64::from(vec_dot(ty, wr, a).unwrap()),
                        magnitude(ty, wr, &a_vals),
                    )
                } else {
                    let wv = dequantized(ty, wr);
                    let dot = wv
                        .iter()
                        .zip(&a_vals)
                        .map(|(&w, &a)| f64::from(w * a))
                        .sum();
                    let m = wv
                        .iter()
                        .zip(&a_vals)
                        .map(|(&w, &a)| f64::from((w * a).abs()))
                        .sum();
                    (dot, m)
                };
                let got = f64::from(out[r * n_tok + t]);
                let tol = REL_TOL * m + 1e-30;
                assert!(
                    (got - want).abs() <= tol,
                    "{ctx}, {what}: row {r} token {t}: got {got}, reference {want}, |diff| {} > \
                 tol {tol}",
                    (got - want).abs()
                );
            }
        }
    }
}

fn isas() -> Vec<Isa> {
    let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.is_available()).collect();
    eprintln!("ISAs available here: {isas:?}");
    isas
}

#[test]
fn gemm_matches_reference_on_quantized_random_data() {
    let mut rng = rng("gemm_matches_reference_on_quantized_random_data");
    for isa in isas() {
        for ty in QUANTIZED.into_iter().chain(FLOATS) {
            let kernel =
                mat_kernel_for(ty, isa).unwrap_or_else(|| panic!("{isa} has no kernel for {ty}"));
            assert_eq!(kernel.isa(), isa.name());
            for n_cols in ROW_LENGTHS.into_iter().filter(|n| n % ty.block_size() == 0) {
                let w = quantized_row(ty, &random_values(&mut rng, N_ROWS * n_cols));
                for n_tok in TOKENS {
                    check_gemm(&mut rng, kernel, &w, N_ROWS, n_cols, n_tok);
                }
            }
        }
    }
}

#[test]
fn gemm_matches_reference_on_random_bits() {
    let mut rng = rng("gemm_matches_reference_on_random_bits");
    for isa in isas() {
        for ty in QUANTIZED {
            let Some(kernel) = mat_kernel_for(ty, isa) else {
                continue;
            };
            for n_cols in [256, 768] {
                let w = random_bits_rows(&mut rng, ty, N_ROWS, n_cols);
                for n_tok in [1, 4, 5] {
                    check_gemm(&mut rng, kernel, &w, N_ROWS, n_cols, n_tok);
                }
            }
        }
    }
}

/// Tiles of many rows: kernels may take rows in groups (x86 Q4_0 repacks eight at a time with
/// four tokens or more, sixteen with AVX-512); the groups and the rows after the last one must all
/// be right.
#[test]
fn row_groups_and_leftover_rows() {
    let mut rng = rng("row_groups_and_leftover_rows");
    for isa in isas() {
        for ty in QUANTIZED {
            let Some(kernel) = mat_kernel_for(ty, isa) else {
                continue;
            };
            // 576 columns: 18 blocks, which packed layouts take as two groups of eight and two
            // left over. 40 rows: the AVX-512 prompt kernels take two groups of eight rows at a
            // time, then the fifth alone.
            for (n_rows, n_cols) in [(19, 768), (17, 576), (40, 512)] {
                if n_cols % ty.block_size() != 0 {
                    continue;
                }
                let w = quantized_row(ty, &random_values(&mut rng, n_rows * n_cols));
                for n_tok in [1, 3, 4, 9, 13, 16] {
                    check_gemm(&mut rng, kernel, &w, n_rows, n_cols, n_tok);
                }
            }
            let w = random_bits_rows(&mut rng, ty, 16, 256);
            check_gemm(&mut rng, kernel, &w, 16, 256, 12);
        }
    }
}

/// Whether `kernel` promises that `n_tok` tokens in one call give, to the bit, what `n_tok`
/// one-token calls give: the x86 kernels that dot each row with a few tokens in one pass (packed
/// Q4_0 and Q4_K, Q6_K; up to 16 tokens, in chunks of eight). Packed Q4_K with four tokens or
/// more sums each super-block exactly and scales it once per token, the one-token kernel scales
/// each sub-block: the two round differently. The NEON packed kernels do the same operations
/// per token whatever the tokens and rows of a pass (decode streams or not), for any number.
fn same_as_one_token(kernel: &MatKernel, packed: bool, n_tok: usize) -> bool {
    match (kernel.isa(), kernel.weight_type(), packed) {
        ("avx2" | "avx512vnni", T::Q4_0, true) | ("avx2" | "avx512vnni", T::Q6_K, false) => {
            n_tok <= 16
        }
        ("avx2" | "avx512vnni", T::Q4_K, true) => n_tok <= 3,
        ("neon", T::Q4_0 | T::Q4_K, true) => true,
        _ => false,
    }
}

/// A few tokens (the decode of a few sequences) over rows of the kernels that take them in one
/// pass: every output agrees with the reference, and where [`same_as_one_token`] promises it,
/// with one-token calls to the bit. Row counts that are not whole tiles of the passes (eight
/// rows, 64-row sub-tiles, two or four interleaved streams), rows of one to nine super-blocks
/// (Q4_0: and of 39 blocks, four packed groups and seven left over), and token counts around the
/// chunks of eight and the end of the few-token path (16).
#[test]
fn few_tokens_match_reference_and_one_token_calls() {
    let mut rng = rng("few_tokens_match_reference_and_one_token_calls");
    for isa in isas() {
        for ty in [T::Q4_K, T::Q4_0, T::Q6_K] {
            let Some(kernel) = mat_kernel_for(ty, isa) else {
                continue;
            };
            let shapes = [(1, 256), (7, 512), (67, 1024), (133, 2304), (10, 1248)];
            for (n_rows, n_cols) in shapes.into_iter().filter(|(_, n)| n % ty.block_size() == 0) {
                let w = quantized_row(ty, &random_values(&mut rng, n_rows * n_cols));
                let mut packed = vec![0u8; w.len()];
                if kernel.has_packed_layout() {
                    kernel.pack(&w, n_rows, n_cols, &mut packed);
                }
                let a_row = kernel.act_row_bytes(n_cols);
                for n_tok in (1..=9).chain([12, 16, 17, 24]) {
                    check_gemm(&mut rng, kernel, &w, n_rows, n_cols, n_tok);
                    let mut act = vec![0u8; n_tok * a_row];
                    for row in act.chunks_exact_mut(a_row) {
                        kernel.quantize_act(&random_values(&mut rng, n_cols), row);
                    }
                    let layouts: &[(bool, &[u8])] = if kernel.has_packed_layout() {
                        &[(false, &w), (true, &packed)]
                    } else {
                        &[(false, &w)]
                    };
                    for &(is_packed, w) in layouts {
                        if !same_as_one_token(kernel, is_packed, n_tok) {
                            continue;
                        }
                        let gemm = |act: &[u8], n: usize, out: &mut [f32]| {
                            if is_packed {
                                kernel.gemm_packed(w, n_rows, act, n, n_cols, out)
                            } else {
                                kernel.gemm(w, n_rows, act, n, n_cols, out)
                            }
                        };
                        let mut all = vec![f32::NAN; n_rows * n_tok];
                        gemm(&act, n_tok, &mut all);
                        let mut one = vec![f32::NAN; n_rows];
                        for (t, a) in act.chunks_exact(a_row).enumerate() {
                            gemm(a, 1, &mut one);
                            for (r, &x) in one.iter().enumerate() {
                                assert_eq!(
                                    all[r * n_tok + t].to_bits(),
                                    x.to_bits(),
                                    "{ty} on {isa} (packed: {is_packed}), {n_rows} x {n_cols}, \
                                     {n_tok} tokens: row {r} token {t} is {} in one call, {x} \
                                     alone",
                                    all[r * n_tok + t]
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn float_rows_of_any_length() {
    let mut rng = rng("float_rows_of_any_length");
    for isa in isas() {
        for ty in FLOATS {
            let Some(kernel) = mat_kernel_for(ty, isa) else {
                continue;
            };
            for n_cols in [1, 7, 16, 37, 100] {
                let w = quantized_row(ty, &random_values(&mut rng, 3 * n_cols));
                check_gemm(&mut rng, kernel, &w, 3, n_cols, 5);
            }
        }
    }
}

/// Many activation rows: the driver walks them in L2-sized groups; the group edges must not
/// drop or repeat a token.
#[test]
fn many_tokens_cross_activation_groups() {
    let mut rng = rng("many_tokens_cross_activation_groups");
    for isa in isas() {
        for ty in [T::Q4_K, T::Q8_0] {
            let Some(kernel) = mat_kernel_for(ty, isa) else {
                continue;
            };
            let n_cols = 4096;
            let w = quantized_row(ty, &random_values(&mut rng, 2 * n_cols));
            check_gemm(&mut rng, kernel, &w, 2, n_cols, 77);
        }
    }
}

/// Rows at odd addresses (a tensor at an odd offset of a buffer) give the same results.
#[test]
fn unaligned_buffers() {
    let mut rng = rng("unaligned_buffers");
    for isa in isas() {
        for ty in QUANTIZED.into_iter().chain(FLOATS) {
            let Some(kernel) = mat_kernel_for(ty, isa) else {
                continue;
            };
            let (n_rows, n_cols, n_tok) = (3, 512, 3);
            let w = quantized_row(ty, &random_values(&mut rng, n_rows * n_cols));
            let a_row = kernel.act_row_bytes(n_cols);
            let mut act = vec![0u8; n_tok * a_row];
            for row in act.chunks_exact_mut(a_row) {
                kernel.quantize_act(&random_values(&mut rng, n_cols), row);
            }
            let mut aligned = vec![0f32; n_rows * n_tok];
            kernel.gemm(&w, n_rows, &act, n_tok, n_cols, &mut aligned);

            let mut w_odd = vec![0u8; w.len() + 1];
            w_odd[1..].copy_from_slice(&w);
            let mut act_odd = vec![0u8; act.len() + 3];
            act_odd[3..].copy_from_slice(&act);
            let mut odd = vec![0f32; n_rows * n_tok];
            kernel.gemm(&w_odd[1..], n_rows, &act_odd[3..], n_tok, n_cols, &mut odd);
            assert_eq!(aligned, odd, "{ty} on {isa}");

            let x = random_values(&mut rng, n_cols);
            let mut q_odd = vec![0u8; a_row + 1];
            kernel.quantize_act(&x, &mut q_odd[1..]);
            assert_eq!(
                q_odd[1..],
                quantized_row(kernel.act_type(), &x),
                "{ty} on {isa}"
            );
        }
    }
}

/// Activation quantization on awkward inputs: zeros, ties, huge, tiny and subnormal values,
/// infinities. Only NaN is left unspecified.
#[test]
fn quantize_act_edge_cases_match_reference() {
    let mut rng = rng("quantize_act_edge_cases_match_reference");
    let specials = [
        0.0,
        -0.0,
        0.5,
        -0.5,
        1.5,
        -2.5,
        127.0,
        -127.0,
        1e-40,
        -1e-42,
        f32::MIN_POSITIVE,
        3.0e38,
        -3.0e38,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    for isa in isas() {
        for ty in [T::Q8_0, T::Q4_1, T::Q4_K, T::F16] {
            let Some(kernel) = mat_kernel_for(ty, isa) else {
                continue;
            };
            let n = 512;
            let mut cases: Vec<Vec<f32>> = vec![vec![0.0; n], vec![-0.0; n], vec![1e-41; n]];
            // Ties at every scale: integers times amax / 127 land on .5 boundaries.
            cases.push((0..n).map(|i| (i % 255) as f32 - 127.0).collect());
            cases.push((0..n).map(|i| (i % 64) as f32 * 0.5 - 16.0).collect());
            for _ in 0..20 {
                cases.push(
                    (0..n)
                        .map(|_| {
                            if rng.gen_ratio(1, 8) {
                                specials[rng.gen_range(0..specials.len())]
                            } else {
                                rng.gen_range(-4.0f32..4.0).round() * 0.25
                            }
                        })
                        .collect(),
                );
            }
            for x in &cases {
                let mut got = vec![0u8; kernel.act_row_bytes(n)];
                kernel.quantize_act(x, &mut got);
                let want = quantized_row(kernel.act_type(), x);
                assert!(got == want, "{ty} on {isa}: quantize_act differs on {x:?}");
            }
        }
    }
}

#[test]
fn table_and_types() {
    for ty in QUANTIZED.into_iter().chain(FLOATS) {
        let best = mat_kernel(ty).unwrap_or_else(|| panic!("no kernel for {ty}"));
        assert_eq!(best.weight_type(), ty);
        if ty.is_quantized() {
            assert_eq!(Some(best.act_type()), vec_dot_type(ty), "{ty}");
        } else {
            assert_eq!(best.act_type(), T::F32, "{ty}");
        }
        let best_isa = Isa::ALL
            .into_iter()
            .rev()
            .find(|i| i.is_available())
            .unwrap();
        if std::env::var("RUSTORCH_ISA").is_err() {
            assert_eq!(best.isa(), best_isa.name(), "{ty}");
        }
    }
    for ty in [T::Q8_1, T::Q8_K, T::IQ2_XXS, T::I32] {
        assert!(mat_kernel(ty).is_none(), "{ty}");
    }
    assert!(mat_kernel_for(T::Q4_K, Isa::Scalar).is_some());
}

#[test]
fn empty_shapes_are_fine() {
    for isa in isas() {
        let Some(k) = mat_kernel_for(T::Q4_K, isa) else {
            continue;
        };
        k.gemm(&[], 0, &[], 0, 256, &mut []);
        let mut out = [f32::NAN; 6];
        k.gemm(&[], 2, &[], 3, 0, &mut out);
        assert_eq!(out, [0.0; 6]);
        if k.has_packed_layout() {
            k.gemm_packed(&[], 0, &[], 0, 256, &mut []);
            let mut out = [f32::NAN; 6];
            k.gemm_packed(&[], 2, &[], 3, 0, &mut out);
            assert_eq!(out, [0.0; 6]);
        }
        k.quantize_act(&[], &mut []);
    }
}

fn q4k() -> &'static MatKernel {
    mat_kernel(T::Q4_K).unwrap()
}

#[test]
#[should_panic(expected = "not a whole number of q4_K blocks")]
fn gemm_rejects_partial_blocks() {
    q4k().gemm(&[0; 144], 1, &[0; 292], 1, 200, &mut [0.0]);
}

#[test]
#[should_panic(expected = "weights (bytes) has length 143")]
fn gemm_rejects_short_weights() {
    q4k().gemm(&[0; 143], 1, &[0; 292], 1, 256, &mut [0.0]);
}

#[test]
#[should_panic(expected = "activations (bytes) has length 584")]
fn gemm_rejects_wrong_activations() {
    q4k().gemm(&[0; 144], 1, &[0; 584], 1, 256, &mut [0.0]);
}

#[test]
#[should_panic(expected = "out (f32 values) has length 1")]
fn gemm_rejects_short_out() {
    q4k().gemm(&[0; 288], 2, &[0; 292], 1, 256, &mut [0.0]);
}

#[test]
#[should_panic(expected = "need 292 bytes")]
fn quantize_act_rejects_wrong_out() {
    q4k().quantize_act(&[0.0; 256], &mut [0; 291]);
}

#[test]
#[should_panic(expected = "overflow usize")]
fn gemm_rejects_overflowing_shapes() {
    q4k().gemm(&[], usize::MAX / 2, &[], 1, 256, &mut []);
}
