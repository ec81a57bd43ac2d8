//! The attention matmuls (`attn::gemm_f16`): every kernel the CPU has against the one-output-at-a-
//! time definition, bit for bit, on random shapes, strides and values, fresh and accumulating.

use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustorch_quant::attn::{gemm_f16_on, gemm_f16_reference};
use rustorch_quant::kernels::Isa;

fn random_case(rng: &mut StdRng, m: usize, n: usize, k: usize, isa: Isa) {
    let lda = k + rng.gen_range(0..3);
    let ldb = n + rng.gen_range(0..20);
    let ldc = n + rng.gen_range(0..5);
    let a: Vec<f32> = (0..m * lda).map(|_| rng.gen_range(-2f32..2.0)).collect();
    let b: Vec<f16> = (0..k * ldb)
        .map(|_| f16::from_f32(rng.gen_range(-3f32..3.0)))
        .collect();
    let c0: Vec<f32> = (0..m * ldc).map(|_| rng.gen_range(-1f32..1.0)).collect();
    for accumulate in [false, true] {
        let (mut want, mut got) = (c0.clone(), c0.clone());
        gemm_f16_reference(m, n, k, &a, lda, &b, ldb, &mut want, ldc, accumulate);
        gemm_f16_on(isa, m, n, k, &a, lda, &b, ldb, &mut got, ldc, accumulate);
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert_eq!(
                w.to_bits(),
                g.to_bits(),
                "{isa}: m={m} n={n} k={k} accumulate={accumulate}: c[{i}] = {g}, want {w}"
            );
        }
    }
}

#[test]
fn every_kernel_matches_the_definition_bit_for_bit() {
    let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.is_available()).collect();
    eprintln!("kernels checked: {isas:?}");
    let mut rng = StdRng::seed_from_u64(0xa77e_4d00);
    for &isa in &isas {
        // Every row remainder and column remainder of the tiles, with short and long sums.
        for m in 1..=13 {
            for n in [1, 7, 8, 15, 16, 17, 33, 64, 65, 100, 130] {
                let k = rng.gen_range(0..70);
                random_case(&mut rng, m, n, k, isa);
            }
        }
        // The shapes attention uses: scores (query rows × positions, head_dim long) and outputs
        // (query rows × head_dim, positions long).
        for (m, n, k) in [
            (8, 300, 64),
            (256, 48, 64),
            (256, 64, 300),
            (8, 128, 517),
            (3, 64, 1),
        ] {
            random_case(&mut rng, m, n, k, isa);
        }
    }
}

#[test]
fn empty_extents_leave_c_alone() {
    let mut c = vec![1.5f32; 4];
    for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
        gemm_f16_on(isa, 0, 4, 3, &[], 3, &[f16::ONE; 12], 4, &mut c, 4, false);
        gemm_f16_on(isa, 1, 0, 3, &[1.0; 3], 3, &[], 0, &mut c, 4, false);
        assert_eq!(c, vec![1.5; 4]);
        // No terms: zero, or C unchanged when accumulating.
        gemm_f16_on(isa, 1, 4, 0, &[], 0, &[], 4, &mut c, 4, true);
        assert_eq!(c, vec![1.5; 4]);
        gemm_f16_on(isa, 1, 4, 0, &[], 0, &[], 4, &mut c, 4, false);
        assert_eq!(c, vec![0.0; 4]);
        c.fill(1.5);
    }
}

#[test]
#[should_panic(expected = "B is too short")]
fn short_operands_panic_before_reading() {
    let mut c = vec![0f32; 4];
    gemm_f16_reference(1, 4, 2, &[1.0, 2.0], 2, &[f16::ONE; 5], 4, &mut c, 4, false);
}
