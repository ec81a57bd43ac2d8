//! The vectorized exp / SiLU / softmax pieces: the scalar `exp` against f64's, and the SIMD
//! versions against the scalar ones bit for bit, on random inputs and edge values.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustorch_quant::vecmath::{
    self, exp, exp_sub_sum, exp_sub_sum_scalar, silu_mul, silu_mul_scalar,
};

fn ulps(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

#[test]
fn exp_is_within_two_ulp_of_f64() {
    let mut rng = StdRng::seed_from_u64(0x5eed_e4b0);
    let mut worst = 0;
    for i in 0..400_000 {
        let x: f32 = if i % 2 == 0 {
            rng.gen_range(-86.5f32..88.7)
        } else {
            rng.gen_range(-20f32..20.0)
        };
        let want = (f64::from(x)).exp() as f32;
        let got = exp(x);
        let d = ulps(got, want);
        worst = worst.max(d);
        assert!(d <= 2, "exp({x}) = {got}, f64 says {want} ({d} ulp)");
    }
    eprintln!("worst: {worst} ulp");
    assert_eq!(exp(0.0), 1.0);
    assert_eq!(exp(-0.0), 1.0);
    assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    assert_eq!(exp(-100.0), 0.0);
    assert_eq!(exp(f32::INFINITY), f32::INFINITY);
    assert_eq!(exp(89.0), f32::INFINITY);
    assert!(exp(88.7).is_finite());
    assert!(exp(f32::NAN).is_nan());
}

/// Random values with the edge cases mixed in.
fn values(rng: &mut StdRng, n: usize, range: f32) -> Vec<f32> {
    const EDGES: [f32; 10] = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        88.72,
        -86.61,
        -87.5,
        100.0,
        -100.0,
        1e-30,
    ];
    (0..n)
        .map(|i| {
            if i % 13 == 5 {
                EDGES[(i / 13) % EDGES.len()]
            } else {
                rng.gen_range(-range..range)
            }
        })
        .collect()
}

fn same_bits(a: &[f32], b: &[f32], what: &str) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            "{what}: element {i}: {x} vs scalar {y}"
        );
    }
}

#[test]
fn silu_mul_matches_scalar_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0051);
    for len in [0, 1, 7, 8, 9, 31, 100, 5632] {
        let g = values(&mut rng, len, 30.0);
        let u = values(&mut rng, len, 4.0);
        let (mut fast, mut slow) = (g.clone(), g.clone());
        silu_mul(&mut fast, &u);
        silu_mul_scalar(&mut slow, &u);
        same_bits(&fast, &slow, &format!("silu_mul, {len} values"));
        // And it is SiLU: compare finite results with f64.
        for ((&x, &u), &y) in g.iter().zip(&u).zip(&slow) {
            if x.is_finite() && u.is_finite() && x.abs() < 80.0 {
                let want = f64::from(x) / (1.0 + (-f64::from(x)).exp()) * f64::from(u);
                assert!(
                    (f64::from(y) - want).abs() <= 1e-6 * want.abs() + 1e-30,
                    "silu({x}) * {u} = {y}, want {want}"
                );
            }
        }
    }
}

#[test]
fn exp_sub_sum_matches_scalar() {
    let mut rng = StdRng::seed_from_u64(0x5eed_50f7);
    for len in [1, 5, 8, 17, 64, 513, 2048] {
        let p = values(&mut rng, len, 40.0);
        let max = p
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .fold(f32::NEG_INFINITY, f32::max);
        let (mut fast, mut slow) = (p.clone(), p.clone());
        let s_fast = exp_sub_sum(&mut fast, max);
        let s_slow = exp_sub_sum_scalar(&mut slow, max);
        same_bits(&fast, &slow, &format!("exp_sub_sum, {len} values"));
        // The sums add the same f32 values in another order, in f64.
        if s_slow.is_finite() {
            assert!(
                (s_fast - s_slow).abs() <= 1e-12 * s_slow.abs(),
                "{len} values: sum {s_fast} vs scalar {s_slow}"
            );
        } else {
            assert_eq!(s_fast, s_slow, "{len} values: sums");
        }
    }
}

/// The AVX2 transpose (where the CPU has it) against the definition, on every edge case of the
/// 8 x 8 blocks: rows and columns from 0 to 19, and a destination stride wider than the rows
/// (the untouched gaps must stay as they were).
#[test]
fn transpose_into_matches_definition() {
    let mut rng = StdRng::seed_from_u64(7);
    for nr in 0..20 {
        for n in 0..20 {
            let src = values(&mut rng, nr * n, 10.0);
            let ld = nr + 3;
            let mut dst = vec![f32::NAN; n.max(1) * ld];
            // SAFETY: `dst` has `n * ld >= (n - 1) * ld + nr` elements; `src` is `nr * n` long.
            unsafe { vecmath::transpose_into(&src, nr, n, dst.as_mut_ptr(), ld) };
            for t in 0..n {
                for r in 0..ld {
                    let got = dst[t * ld + r];
                    if r < nr {
                        assert_eq!(
                            got.to_bits(),
                            src[r * n + t].to_bits(),
                            "nr {nr} n {n} t {t} r {r}"
                        );
                    } else {
                        assert!(got.is_nan(), "nr {nr} n {n}: wrote the gap at t {t} r {r}");
                    }
                }
            }
        }
    }
}
