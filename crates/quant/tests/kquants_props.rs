//! K-quant properties that do not need the oracle: ggml's own error bounds
//! (`tests/test-quantize-fns.cpp`), agreement of each scalar `vec_dot` with dequantize-then-dot,
//! and no panics on hostile bytes or non-finite floats.

use bytemuck::Zeroable;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rustorch_quant::{
    BlockFormat, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, GgmlType, QK_K,
};

fn quantize<B: BlockFormat>(x: &[f32]) -> Vec<B> {
    let mut blocks = vec![B::zeroed(); x.len() / B::BLOCK];
    B::quantize(x, &mut blocks);
    blocks
}

fn dequantize<B: BlockFormat>(blocks: &[B]) -> Vec<f32> {
    let mut out = vec![0.0; blocks.len() * B::BLOCK];
    B::dequantize(blocks, &mut out);
    out
}

/// Calls `f::<B>()` for every K-quant block type.
macro_rules! for_each_kquant {
    ($f:ident $(, $arg:expr)*) => {{
        $f::<BlockQ2K>($($arg),*);
        $f::<BlockQ3K>($($arg),*);
        $f::<BlockQ4K>($($arg),*);
        $f::<BlockQ5K>($($arg),*);
        $f::<BlockQ6K>($($arg),*);
        $f::<BlockQ8K>($($arg),*);
    }};
}

// ---- ggml's test-quantize-fns ----------------------------------------------------------------

const TEST_SIZE: usize = 32 * 128;

/// `generate_data`: `0.1 + amplitude * cosf(i + offset)`, the sum taken in double as in C++.
fn generate_data(offset: f32, amplitude: f32) -> Vec<f32> {
    (0..TEST_SIZE)
        .map(|i| (0.1f64 + (amplitude * (i as f32 + offset).cos()) as f64) as f32)
        .collect()
}

/// `array_rmse` as ggml writes it: sqrt of the summed squares over n (not over sqrt(n)).
fn array_rmse(a1: &[f32], a2: &[f32]) -> f32 {
    let sum: f64 = a1
        .iter()
        .zip(a2)
        .map(|(&a, &b)| ((a - b) as f64).powi(2))
        .sum();
    (sum.sqrt() as f32) / a1.len() as f32
}

/// `dot_product`: f32 products summed in f64.
fn dot_f64(a1: &[f32], a2: &[f32]) -> f64 {
    a1.iter().zip(a2).map(|(&a, &b)| (a * b) as f64).sum()
}

fn max_quantization_error(t: GgmlType) -> f32 {
    match t {
        GgmlType::Q2_K => 0.0075, // MAX_QUANTIZATION_TOTAL_ERROR_2BITS
        GgmlType::Q3_K => 0.0040, // MAX_QUANTIZATION_TOTAL_ERROR_3BITS
        _ => 0.002,               // MAX_QUANTIZATION_TOTAL_ERROR
    }
}

fn max_dot_product_error(t: GgmlType) -> f32 {
    match t {
        GgmlType::Q2_K => 0.04, // MAX_DOT_PRODUCT_ERROR_LOWBIT
        _ => 0.02,              // MAX_DOT_PRODUCT_ERROR
    }
}

fn ggml_error_bounds<B: BlockFormat<Dot = BlockQ8K>>() {
    let test_data = generate_data(0.0, 2.0);
    let test_data2 = generate_data(1.0, 2.0);

    let total_error = array_rmse(&test_data, &dequantize(&quantize::<B>(&test_data)));
    assert!(
        total_error < max_quantization_error(B::TYPE),
        "{:?} absolute quantization error {total_error}",
        B::TYPE
    );

    let result = B::vec_dot(
        &quantize::<B>(&test_data),
        &quantize::<BlockQ8K>(&test_data2),
    );
    let dot_ref = dot_f64(&test_data, &test_data2) as f32;
    let error = (result - dot_ref).abs() / TEST_SIZE as f32;
    assert!(
        error < max_dot_product_error(B::TYPE),
        "{:?} dot product error {error}",
        B::TYPE
    );
}

#[test]
fn ggml_quantize_fns_error_bounds() {
    for_each_kquant!(ggml_error_bounds);
}

// ---- vec_dot against dequantize-then-dot -----------------------------------------------------

/// Roughly normal (Irwin-Hall of 4), with a random scale and offset per call.
fn random_row(rng: &mut StdRng, n: usize) -> Vec<f32> {
    let scale = 10f32.powf(rng.gen_range(-3.0..3.0));
    let offset = rng.gen_range(-0.5f32..0.5) * scale;
    (0..n)
        .map(|_| {
            let s: f32 = (0..4).map(|_| rng.gen::<f32>()).sum();
            (s - 2.0) * 1.73 * scale + offset
        })
        .collect()
}

/// The scalar dot products keep integer sums exact and round only when scaling blocks and adding
/// the 8 lane sums (ggml's order). The f64 reference over dequantized values rounds each
/// dequantized weight once. Both errors are a few f32 ulps of the terms' magnitudes, so allow
/// 1e-6 * max|w| * Σ|a| (the worst of these 1200 trials uses 7% of it): far below what a wrong
/// scale, min or quant would cost.
fn vec_dot_matches_dequantized<B: BlockFormat<Dot = BlockQ8K>>(rng: &mut StdRng) {
    for trial in 0..200 {
        let n = QK_K * rng.gen_range(1..=16);
        let w = quantize::<B>(&random_row(rng, n));
        let a = quantize::<BlockQ8K>(&random_row(rng, n));
        let (wf, af) = (dequantize(&w), dequantize(&a));

        let want = dot_f64(&wf, &af);
        let got = B::vec_dot(&w, &a) as f64;
        let w_max = wf.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
        let a_sum: f64 = af.iter().map(|&v| v.abs() as f64).sum();
        let tol = 1e-6 * w_max * a_sum;
        assert!(
            (got - want).abs() <= tol,
            "{:?} trial {trial} n={n}: vec_dot {got} vs dequantized {want} (tol {tol})",
            B::TYPE
        );
    }
}

#[test]
fn vec_dot_agrees_with_dequantized_dot() {
    let mut rng = StdRng::seed_from_u64(0x6b71_7561);
    for_each_kquant!(vec_dot_matches_dequantized, &mut rng);
}

// ---- structural properties -------------------------------------------------------------------

/// More bits, less error, on the same gaussian data; and every format within a sane bound.
#[test]
fn error_shrinks_with_bits() {
    let mut rng = StdRng::seed_from_u64(7);
    let x = random_row(&mut rng, 64 * QK_K);
    let rel_rmse = |deq: Vec<f32>| {
        let err: f64 = x
            .iter()
            .zip(&deq)
            .map(|(&a, &b)| ((a - b) as f64).powi(2))
            .sum();
        let sig: f64 = x.iter().map(|&a| (a as f64).powi(2)).sum();
        (err / sig).sqrt()
    };
    let errs = [
        rel_rmse(dequantize(&quantize::<BlockQ2K>(&x))),
        rel_rmse(dequantize(&quantize::<BlockQ3K>(&x))),
        rel_rmse(dequantize(&quantize::<BlockQ4K>(&x))),
        rel_rmse(dequantize(&quantize::<BlockQ5K>(&x))),
        rel_rmse(dequantize(&quantize::<BlockQ6K>(&x))),
        rel_rmse(dequantize(&quantize::<BlockQ8K>(&x))),
    ];
    assert!(errs.windows(2).all(|p| p[1] < p[0]), "{errs:?}");
    // ~2^-bits relative error, with room: Q2_K <= 0.5, ..., Q8_K <= 0.01.
    let bounds = [0.5, 0.25, 0.12, 0.06, 0.03, 0.01];
    assert!(errs.iter().zip(bounds).all(|(e, b)| *e < b), "{errs:?}");
}

fn zeros_stay_zero<B: BlockFormat>() {
    let blocks = quantize::<B>(&[0.0; 2 * QK_K]);
    assert!(
        bytemuck::cast_slice::<B, u8>(&blocks)
            .iter()
            .all(|&b| b == 0),
        "{:?}",
        B::TYPE
    );
    assert!(dequantize(&blocks).iter().all(|&v| v == 0.0));
}

#[test]
fn all_zero_input_gives_all_zero_blocks() {
    for_each_kquant!(zeros_stay_zero);
}

#[test]
fn q8k_bsums_are_sums_of_16_quants() {
    let mut rng = StdRng::seed_from_u64(3);
    let blocks = quantize::<BlockQ8K>(&random_row(&mut rng, 8 * QK_K));
    for b in &blocks {
        for (j, &bsum) in b.bsums.iter().enumerate() {
            let sum: i32 = b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum();
            assert_eq!(bsum as i32, sum);
        }
        assert!(
            b.qs.iter().all(|&q| q >= -127),
            "Q8_K quants stay in [-127, 127]"
        );
    }
}

// ---- hostile input ---------------------------------------------------------------------------

/// Blocks read from a file may hold any bytes: dequantize and vec_dot must not panic (tests run
/// with overflow checks), whatever the scales, NaN or inf scale bits, or Q8_K bsums.
fn random_bytes_do_not_panic<B: BlockFormat<Dot = BlockQ8K>>(rng: &mut StdRng) {
    for _ in 0..50 {
        let mut w = vec![B::zeroed(); 4];
        let mut a = vec![BlockQ8K::zeroed(); 4];
        rng.fill_bytes(bytemuck::cast_slice_mut(&mut w));
        rng.fill_bytes(bytemuck::cast_slice_mut(&mut a));
        let _ = dequantize(&w);
        let _ = B::vec_dot(&w, &a);
    }
}

/// Weights may hold NaN, inf, subnormals or huge values: quantizing must not panic.
fn random_floats_do_not_panic<B: BlockFormat>(rng: &mut StdRng) {
    for _ in 0..20 {
        let x: Vec<f32> = (0..2 * QK_K)
            .map(|_| f32::from_bits(rng.next_u32()))
            .collect();
        let _ = dequantize(&quantize::<B>(&x));
    }
}

#[test]
fn hostile_input_does_not_panic() {
    let mut rng = StdRng::seed_from_u64(99);
    for_each_kquant!(random_bytes_do_not_panic, &mut rng);
    for_each_kquant!(random_floats_do_not_panic, &mut rng);
}
