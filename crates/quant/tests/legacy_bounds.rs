//! Error bounds for the float and legacy formats.
//!
//! `ggml_style_*` port llama.cpp's `tests/test-quantize-fns.cpp`: its data (`0.1 + A·cos(i + o)`),
//! its error measures (note `array_rmse` is `sqrt(Σ diff²) / n`, not a true RMSE) and its thresholds.
//! The rest check the same properties on seeded random data, per element, and hold each scalar
//! `vec_dot` to the dot of the dequantized rows.

use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustorch_quant::dispatch::{dequantize_row, quantize_row, vec_dot, vec_dot_type};
use rustorch_quant::legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
use rustorch_quant::{BlockFormat, GgmlType};

// test-quantize-fns.cpp's thresholds for these formats.
const MAX_QUANTIZATION_REFERENCE_ERROR: f32 = 0.0001;
const MAX_QUANTIZATION_TOTAL_ERROR: f32 = 0.002;
const MAX_DOT_PRODUCT_ERROR: f32 = 0.02;

/// F32 and Q8_1 are not in ggml's loop (no `to_float` / no `vec_dot`); they get the same limits.
const TYPES: [GgmlType; 9] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
];

/// `generate_data`: `i + offset` in f32, `cosf`, then `0.1 + …` in double, stored as float.
fn generate_data(offset: f32, n: usize, amplitude: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (0.1f64 + f64::from(amplitude * (i as f32 + offset).cos())) as f32)
        .collect()
}

fn array_rmse(a1: &[f32], a2: &[f32]) -> f32 {
    let sum: f64 = a1
        .iter()
        .zip(a2)
        .map(|(&a, &b)| f64::from(a - b).powi(2))
        .sum();
    (sum as f32).sqrt() / a1.len() as f32
}

fn dot_product(a1: &[f32], a2: &[f32]) -> f32 {
    a1.iter()
        .zip(a2)
        .map(|(&a, &b)| f64::from(a * b))
        .sum::<f64>() as f32
}

fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
    quantize_row(ty, x, &mut q).unwrap();
    q
}

fn round_trip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    dequantize_row(ty, &quantize(ty, x), &mut out).unwrap();
    out
}

/// ggml's dot check: weights in `ty`, activations in its `vec_dot_type`, against the f32 dot.
fn dot_product_error(ty: GgmlType, x: &[f32], y: &[f32]) -> f32 {
    let w = quantize(ty, x);
    let a = quantize(vec_dot_type(ty).unwrap(), y);
    let result = vec_dot(ty, &w, &a).unwrap();
    (result - dot_product(x, y)).abs() / x.len() as f32
}

#[test]
fn ggml_style_vec_dot_f32() {
    for n in [
        1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 33, 63, 67, 127, 129, 193, 255, 1023,
    ] {
        let a = generate_data(0.0, n, 2.0);
        let b = generate_data(1.0, n, 2.0);
        let result = vec_dot(
            GgmlType::F32,
            bytemuck::cast_slice(&a),
            bytemuck::cast_slice(&b),
        );
        let error = (result.unwrap() - dot_product(&a, &b)).abs() / n as f32;
        assert!(error < MAX_QUANTIZATION_REFERENCE_ERROR, "n={n}: {error}");
    }
}

#[test]
fn ggml_style_quantization_and_dot_errors() {
    let test_size = 32 * 128;
    let data = generate_data(0.0, test_size, 2.0);
    let data2 = generate_data(1.0, test_size, 2.0);
    for ty in TYPES {
        let total = array_rmse(&data, &round_trip(ty, &data));
        assert!(
            total < MAX_QUANTIZATION_TOTAL_ERROR,
            "{ty}: total error {total}"
        );
        let dot = dot_product_error(ty, &data, &data2);
        assert!(dot < MAX_DOT_PRODUCT_ERROR, "{ty}: dot error {dot}");
    }
}

/// Rows of 32-weight blocks with a different power-of-two magnitude per block, so scales span a
/// wide range while staying in fp16's normal range; some blocks are made all-positive or
/// all-negative to exercise the min/offset formats.
fn random_rows(rng: &mut StdRng, n: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(n);
    for _ in 0..n / 32 {
        let scale = f32::powi(2.0, rng.gen_range(-6..=6));
        let shift = [0.0f32, 0.0, 1.0, -1.0][rng.gen_range(0..4)];
        x.extend((0..32).map(|_| (rng.gen_range(-1.0f32..1.0) + shift) * scale));
    }
    x
}

/// Largest error one element of `block` may show after a round trip through `ty`: half a step
/// of rounding (a whole step on the clamped side of Q4_0/Q5_0, whose scale comes from the signed
/// extreme), plus the scale's and offset's own fp16 rounding carried through the largest code.
fn max_elem_error(ty: GgmlType, block: &[f32]) -> f32 {
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (min, max) = block
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let fp16_rel = f32::powi(2.0, -10);
    let step_err = |d: f32, steps: f32| d * steps * 1.001;
    match ty {
        GgmlType::F32 => 0.0,
        GgmlType::F16 => amax * f32::powi(2.0, -11),
        GgmlType::BF16 => amax * f32::powi(2.0, -8),
        GgmlType::Q4_0 => step_err(amax / 8.0, 1.0) + amax * fp16_rel,
        GgmlType::Q5_0 => step_err(amax / 16.0, 1.0) + amax * fp16_rel,
        GgmlType::Q8_0 | GgmlType::Q8_1 => step_err(amax / 127.0, 0.5) + amax * fp16_rel,
        GgmlType::Q4_1 => step_err((max - min) / 15.0, 0.5) + (max - min + min.abs()) * fp16_rel,
        GgmlType::Q5_1 => step_err((max - min) / 31.0, 0.5) + (max - min + min.abs()) * fp16_rel,
        _ => unreachable!(),
    }
}

#[test]
fn round_trip_error_is_bounded_per_element() {
    let mut rng = StdRng::seed_from_u64(0x5EED_0001);
    for _ in 0..20 {
        let x = random_rows(&mut rng, 4096);
        for ty in TYPES {
            let y = round_trip(ty, &x);
            for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
                let bound = max_elem_error(ty, xb);
                for (j, (&u, &v)) in xb.iter().zip(yb).enumerate() {
                    assert!(
                        (u - v).abs() <= bound,
                        "{ty} block {b} elem {j}: {u} -> {v}, bound {bound}"
                    );
                }
            }
        }
        // ggml's threshold is not scale-free, so apply it at its data's amplitude (±2).
        let x: Vec<f32> = (0..4096).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
        for ty in TYPES {
            let total = array_rmse(&x, &round_trip(ty, &x));
            assert!(total < MAX_QUANTIZATION_TOTAL_ERROR, "{ty}: {total}");
        }
    }
}

/// `vec_dot` against an f64 dot of the dequantized rows. Per block the integer sum is exact; what
/// remains is f32 rounding of the block's scale products and of the running f32 sum, so the
/// tolerance is `4 · n_blocks · 2^-24 · Σ |block dot|` (float formats sum in f64: `2^-22 · Σ|w·a|`).
/// Q4_1/Q5_1 also use the activation's `s = fp16(d · Σq)` where the dequantized row has
/// `fp16(d) · Σq`: that adds `|m| · |s| · 2^-9` per block (`extra`).
fn check_dot<B: BlockFormat>(x: &[f32], y: &[f32], extra: impl Fn(&B, &B::Dot) -> f64) {
    let mut w = vec![<B as bytemuck::Zeroable>::zeroed(); x.len() / B::BLOCK];
    let mut a = vec![<B::Dot as bytemuck::Zeroable>::zeroed(); y.len() / B::Dot::BLOCK];
    B::quantize(x, &mut w);
    B::Dot::quantize(y, &mut a);
    let (mut wx, mut ay) = (vec![0f32; x.len()], vec![0f32; y.len()]);
    B::dequantize(&w, &mut wx);
    B::Dot::dequantize(&a, &mut ay);

    let per_block: Vec<f64> = wx
        .chunks(B::BLOCK)
        .zip(ay.chunks(B::BLOCK))
        .map(|(p, q)| {
            p.iter()
                .zip(q)
                .map(|(&u, &v)| f64::from(u) * f64::from(v))
                .sum()
        })
        .collect();
    let reference: f64 = per_block.iter().sum();
    let abs_sum: f64 = per_block.iter().map(|t| t.abs()).sum();
    let rel = if B::BLOCK == 1 {
        f64::powi(2.0, -22)
    } else {
        4.0 * w.len() as f64 * f64::powi(2.0, -24)
    };
    let tol = rel * abs_sum + w.iter().zip(&a).map(|(p, q)| extra(p, q)).sum::<f64>() + 1e-30;

    let got = f64::from(B::vec_dot(&w, &a));
    assert!(
        (got - reference).abs() <= tol,
        "{}: vec_dot {got} vs dequantized dot {reference}, tolerance {tol}",
        B::TYPE
    );
}

fn q8_1_sum_term(m: f16, a: &BlockQ8_1) -> f64 {
    f64::from(m.to_f32().abs()) * f64::from(a.s.to_f32().abs()) * f64::powi(2.0, -9)
}

#[test]
fn vec_dot_matches_dequantized_dot() {
    let mut rng = StdRng::seed_from_u64(0x5EED_0002);
    for _ in 0..50 {
        let x = random_rows(&mut rng, 1024);
        let y = random_rows(&mut rng, 1024);
        check_dot::<f32>(&x, &y, |_, _| 0.0);
        check_dot::<f16>(&x, &y, |_, _| 0.0);
        check_dot::<bf16>(&x, &y, |_, _| 0.0);
        check_dot::<BlockQ4_0>(&x, &y, |_, _| 0.0);
        check_dot::<BlockQ5_0>(&x, &y, |_, _| 0.0);
        check_dot::<BlockQ8_0>(&x, &y, |_, _| 0.0);
        check_dot::<BlockQ8_1>(&x, &y, |_, _| 0.0);
        check_dot::<BlockQ4_1>(&x, &y, |w, a| q8_1_sum_term(w.m, a));
        check_dot::<BlockQ5_1>(&x, &y, |w, a| q8_1_sum_term(w.m, a));
    }
}

#[test]
fn q8_1_sum_is_scale_times_code_sum() {
    let mut rng = StdRng::seed_from_u64(0x5EED_0003);
    let x = random_rows(&mut rng, 1024);
    let mut blocks = vec![<BlockQ8_1 as bytemuck::Zeroable>::zeroed(); 32];
    BlockQ8_1::quantize(&x, &mut blocks);
    for (b, xb) in blocks.iter().zip(x.chunks(32)) {
        // `s` uses the f32 scale before it is rounded into `d`.
        let d = xb
            .iter()
            .fold(0f32, |m, v| if m > v.abs() { m } else { v.abs() })
            / 127.0;
        let sum: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
        assert_eq!(b.s, rustorch_quant::float::fp32_to_fp16(sum as f32 * d));
        assert_eq!(b.d, rustorch_quant::float::fp32_to_fp16(d));
    }
}
