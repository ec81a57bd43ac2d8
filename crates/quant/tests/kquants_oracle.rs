//! Bit-exactness of the K-quants against llama.cpp itself.
//!
//! `kquants_fixtures.txt` holds sha256 sums of what llama.cpp 0c1e570's own C code produced for the
//! inputs generated below (its header says exactly how). Each case checks, per type:
//! - `q`: the quantized bytes of `quantize_q*_K(src, dst, nrows, n_per_row, NULL)`, the call
//!   `llama-quantize` makes without an imatrix (for Q8_K: `quantize_row_q8_K_ref`);
//! - `deq`: `dequantize_row_q*_K` of those bytes, as little-endian f32;
//! - `dot`: `ggml_vec_dot_q*_K_q8_K_generic` of each quantized row against the Q8_K quantization
//!   of an activation row, as f32 bit patterns.
//!
//! Set `RUSTORCH_KQ_DUMP=<dir>` to write our bytes as `<dir>/<case>/<type>.{q,deq,dot}`, the
//! layout the oracle writes, so a mismatch can be located with `cmp`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytemuck::Zeroable;
use rustorch_quant::{
    BlockFormat, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, QK_K,
};
use sha2::{Digest, Sha256};

const FIXTURES: &str = include_str!("kquants_fixtures.txt");

/// xorshift32, and floats from it through exact operations only, as the oracle's `gen.h`.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
    /// Uniform in [0, 1), a multiple of 2^-24.
    fn unif(&mut self) -> f32 {
        (self.next() >> 8) as f32 * (1.0 / 16_777_216.0)
    }
    /// Irwin-Hall of 4, scaled to sd ~1. Summed left to right, like the C.
    fn gauss(&mut self) -> f32 {
        let (a, b, c, d) = (self.unif(), self.unif(), self.unif(), self.unif());
        (a + b + c + d - 2.0) * 1.732_050_8
    }
}

#[derive(Clone, Copy)]
enum Dist {
    Gauss,
    Uniform,
    UniformPos,
    Heavy,
    Outliers,
    Zeros,
    Const,
    ZeroSub,
    Scaled,
    NegMax,
    Ints,
    Sparse,
    MixedScale,
    NonFinite,
    /// Each group of 16 draws a shape and a power-of-two scale `2^(p .. p + 69)`.
    Sweep,
}

struct Case {
    name: &'static str,
    dist: Dist,
    nrows: usize,
    n_per_row: usize,
    p: f32,
    seed: u32,
}

const fn case(
    name: &'static str,
    dist: Dist,
    nrows: usize,
    n_per_row: usize,
    p: f32,
    seed: u32,
) -> Case {
    Case {
        name,
        dist,
        nrows,
        n_per_row,
        p,
        seed,
    }
}

/// The oracle's `CASES`, in the same order with the same parameters.
const CASES: &[Case] = &[
    case("gauss", Dist::Gauss, 4, 4096, 1.0, 1),
    case("uniform", Dist::Uniform, 3, 1024, 1.0, 2),
    case("uniform_pos", Dist::UniformPos, 2, 512, 3.0, 3),
    case("heavy", Dist::Heavy, 2, 2048, 1.0, 4),
    case("outliers", Dist::Outliers, 4, 1024, 50.0, 5),
    case("zeros", Dist::Zeros, 2, 512, 0.0, 6),
    case("const_pos", Dist::Const, 1, 256, 0.75, 7),
    case("const_neg", Dist::Const, 2, 512, -1.25, 8),
    case("zero_sub", Dist::ZeroSub, 3, 1024, 1.0, 9),
    case("tiny", Dist::Scaled, 2, 1024, 1e-6, 10),
    case("subnormal_d", Dist::Scaled, 2, 512, 3e-4, 11),
    case("below_eps", Dist::Scaled, 1, 256, 1e-17, 12),
    case("large", Dist::Scaled, 2, 512, 3e4, 13),
    case("neg_max", Dist::NegMax, 3, 768, 2.0, 14),
    case("all_neg", Dist::UniformPos, 2, 256, -3.0, 15),
    case("ints", Dist::Ints, 2, 1024, 0.5, 16),
    case("sparse", Dist::Sparse, 2, 2048, 1.0, 17),
    case("mixed_scale", Dist::MixedScale, 2, 4096, 1.0, 18),
    case("rows_256", Dist::Gauss, 5, 256, 0.1, 19),
    case("nonfinite", Dist::NonFinite, 1, 512, 1.0, 20),
    case("sweep", Dist::Sweep, 16, 4096, -56.0, 21),
    case("sweep_huge", Dist::Sweep, 2, 1024, 14.0, 22),
];

impl Case {
    fn len(&self) -> usize {
        self.nrows * self.n_per_row
    }

    fn input(&self) -> Vec<f32> {
        let mut r = Rng(self.seed.wrapping_mul(2_654_435_761).wrapping_add(12345));
        let p = self.p;
        let (mut sw_mode, mut sw_scale, mut sw_off) = (0, 0.0f32, 0.0f32);
        (0..self.len())
            .map(|i| match self.dist {
                Dist::Gauss | Dist::Scaled => p * r.gauss(),
                Dist::Uniform => p * (2.0 * r.unif() - 1.0),
                Dist::UniformPos => p * (0.25 + r.unif()),
                Dist::Heavy => {
                    let g = r.gauss();
                    let u = r.unif();
                    p * g / (u + 0.02)
                }
                Dist::Outliers => {
                    let g = r.gauss();
                    let pick = r.next() % 64;
                    if pick == 0 {
                        p * g
                    } else {
                        g
                    }
                }
                Dist::Zeros => 0.0,
                Dist::Const => p,
                Dist::ZeroSub => {
                    let (b, k) = (i / 256, i % 256);
                    let v = r.gauss();
                    if k / 16 == (b * 5) % 16 || k / 32 == (b * 3) % 8 {
                        0.0
                    } else {
                        v
                    }
                }
                Dist::NegMax => p * (r.unif() * 1.25 - 1.0),
                Dist::Ints => p * ((r.next() % 17) as i32 - 8) as f32,
                Dist::Sparse => {
                    let g = r.gauss();
                    let pick = r.next() % 20;
                    if pick == 0 {
                        g
                    } else {
                        0.0
                    }
                }
                Dist::MixedScale => r.gauss() * (1u32 << ((i / 16) % 16)) as f32 * (1.0 / 256.0),
                Dist::NonFinite => {
                    let v = r.gauss();
                    match i {
                        37 => f32::from_bits(0x7F80_0000),
                        300 => f32::from_bits(0xFFC0_0000),
                        301 => f32::from_bits(0x7FC0_0000),
                        400 => f32::from_bits(0xFF80_0000),
                        _ => v,
                    }
                }
                Dist::Sweep => {
                    if i % 16 == 0 {
                        let m = r.next();
                        sw_mode = m % 8;
                        sw_scale = f32::from_bits(
                            ((127 + p as i32 + ((m >> 3) % 70) as i32) as u32) << 23,
                        );
                        sw_off = (((m >> 10) % 5) as i32 - 2) as f32 * 0.5;
                    }
                    match sw_mode {
                        0 => 0.0,
                        1 => sw_scale,
                        2 => -sw_scale * (0.5 + r.unif()),
                        3 => sw_scale * (0.5 + r.unif()),
                        _ => sw_scale * (r.gauss() + sw_off),
                    }
                }
            })
            .collect()
    }

    fn activations(&self) -> Vec<f32> {
        let mut r = Rng(self.seed.wrapping_mul(40503).wrapping_add(777));
        (0..self.len()).map(|_| r.gauss()).collect()
    }
}

/// `(case, item)` -> expected value, e.g. `("gauss", "q4_K.q")` -> sha256 hex.
fn fixtures() -> BTreeMap<(String, String), String> {
    FIXTURES
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut it = l.splitn(3, ' ');
            let (c, item, v) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
            ((c.to_owned(), item.to_owned()), v.to_owned())
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn dump(case: &str, item: &str, bytes: &[u8]) {
    if let Some(dir) = std::env::var_os("RUSTORCH_KQ_DUMP") {
        let dir = PathBuf::from(dir).join(case);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(item), bytes).unwrap();
    }
}

/// Compare against the fixture, collecting mismatches so one run reports all of them.
fn check(
    fx: &BTreeMap<(String, String), String>,
    case: &str,
    item: &str,
    got: String,
    bad: &mut Vec<String>,
) {
    match fx.get(&(case.to_owned(), item.to_owned())) {
        Some(want) if *want == got => {}
        Some(want) => bad.push(format!("{case} {item}: want {want}, got {got}")),
        None => bad.push(format!("{case} {item}: no fixture")),
    }
}

/// Quantize a whole case as one tensor, dequantize it, and dot each row with the activations.
fn run_type<B>(
    name: &str,
    c: &Case,
    x: &[f32],
    act: &[BlockQ8K],
    fx: &BTreeMap<(String, String), String>,
    bad: &mut Vec<String>,
) where
    B: BlockFormat<Dot = BlockQ8K>,
{
    let mut blocks = vec![B::zeroed(); x.len() / QK_K];
    B::quantize(x, &mut blocks);
    let q = bytemuck::cast_slice::<B, u8>(&blocks);
    dump(c.name, &format!("{name}.q"), q);
    check(fx, c.name, &format!("{name}.q"), sha256_hex(q), bad);

    let mut deq = vec![0.0f32; x.len()];
    B::dequantize(&blocks, &mut deq);
    let deq = f32_bytes(&deq);
    dump(c.name, &format!("{name}.deq"), &deq);
    check(fx, c.name, &format!("{name}.deq"), sha256_hex(&deq), bad);

    if B::TYPE != rustorch_quant::GgmlType::Q8_K {
        let per_row = c.n_per_row / QK_K;
        let dots: Vec<f32> = blocks
            .chunks_exact(per_row)
            .zip(act.chunks_exact(per_row))
            .map(|(w, a)| B::vec_dot(w, a))
            .collect();
        dump(c.name, &format!("{name}.dot"), &f32_bytes(&dots));
        let hex: Vec<String> = dots
            .iter()
            .map(|d| format!("{:08x}", d.to_bits()))
            .collect();
        check(fx, c.name, &format!("{name}.dot"), hex.join(" "), bad);
    }
}

#[test]
fn kquants_match_llama_cpp_bit_for_bit() {
    let fx = fixtures();
    let mut bad = Vec::new();
    for c in CASES {
        let x = c.input();
        check(&fx, c.name, "input", sha256_hex(&f32_bytes(&x)), &mut bad);

        let mut act = vec![BlockQ8K::zeroed(); c.len() / QK_K];
        BlockQ8K::quantize(&c.activations(), &mut act);

        run_type::<BlockQ2K>("q2_K", c, &x, &act, &fx, &mut bad);
        run_type::<BlockQ3K>("q3_K", c, &x, &act, &fx, &mut bad);
        run_type::<BlockQ4K>("q4_K", c, &x, &act, &fx, &mut bad);
        run_type::<BlockQ5K>("q5_K", c, &x, &act, &fx, &mut bad);
        run_type::<BlockQ6K>("q6_K", c, &x, &act, &fx, &mut bad);
        run_type::<BlockQ8K>("q8_K", c, &x, &act, &fx, &mut bad);
    }
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn every_fixture_is_checked() {
    // 1 input + 6 types * (q, deq) + 5 types * dot, per case.
    assert_eq!(fixtures().len(), CASES.len() * (1 + 6 * 2 + 5));
}
