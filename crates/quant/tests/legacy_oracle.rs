//! Bit-exactness against ggml itself (llama.cpp commit 0c1e570).
//!
//! How the fixtures below were produced (the oracle is not part of the repository):
//! - `ggml/src/ggml-quants.c` and `ggml/src/ggml-cpu/quants.c` were compiled with plain
//!   `gcc -O2` (gcc 12.2, x86-64, no `-march`, so no FMA) and linked into a small C program that
//!   stubs `ggml_abort`, `ggml_row_size`, `ggml_type_size`, `ggml_type_name` and fills
//!   `ggml_table_f32_f16` with `ggml_compute_fp16_to_fp32`.
//! - It builds the inputs exactly as [`block_cases`] and [`float_cases`] do (both are hashed
//!   below, so a drift in the generator is reported as such).
//! - Quantized bytes: `quantize_q4_0/q4_1/q5_0/q5_1/q8_0(src, dst, 10 rows, 256, imatrix = NULL)`,
//!   i.e. what `ggml_quantize_chunk` runs for llama-quantize; Q8_1 from `quantize_row_q8_1_ref`.
//!   F16 / BF16 from `ggml_compute_fp32_to_fp16` / `ggml_compute_fp32_to_bf16` over the float
//!   cases followed by the block cases (the loops of `ggml_fp32_to_fp16_row` and
//!   `ggml_fp32_to_bf16_row_ref`).
//! - Dequantized values: `dequantize_row_*` (ggml has none for Q8_1) and the scalar
//!   fp16/bf16 → fp32 conversions, over the bytes above, as little-endian f32.
//! - Dots: weights from case `c`, activations of the paired type quantized by the reference from
//!   case `(c + 7) % 10`, through `ggml_vec_dot_*_generic`; for F32/F16/BF16 the scalar branch of
//!   `ggml_vec_dot_{f32,f16,bf16}` (f32 products summed in f64).
//!
//! Every hash is sha256 over the concatenation of all cases, as `sha256sum` prints it.

use bytemuck::Zeroable;
use half::{bf16, f16};
use rustorch_quant::dispatch;
use rustorch_quant::legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
use rustorch_quant::{BlockFormat, GgmlType};
use sha2::{Digest, Sha256};

const N: usize = 256;
const NCASES: usize = 10;

const INPUT_BLOCKS_SHA: &str = "2dafca3cc3a0862340c1f9460b807dd11930c37260f2ef5743a02c261530f81e";
const INPUT_FLOATS_SHA: &str = "77d8d6c02e999f05b6cbda52d33dd90187352a1437bf5b5f2fb3290b35264f92";

/// (type, sha256 of quantized bytes, sha256 of dequantized f32s or "" where ggml has none).
const EXPECTED: &[(GgmlType, &str, &str)] = &[
    (
        GgmlType::Q4_0,
        "9a3525d2a1934948112cfbf27fa222c21e54af6ca353bc94dcfaac07e6bacb3f",
        "6e4d08e30a3e9b9822c75f9f7327eac0bfb6441926b96bae8b75f4f9b1c1a90c",
    ),
    (
        GgmlType::Q4_1,
        "111b64caaab4e0ff883c572636c83a711974673da16a0621984876016e49fa62",
        "560cb794566f9ccf7fba3d611a6fb2761b9d81c4a51df396f8647a0f7ea0acc2",
    ),
    (
        GgmlType::Q5_0,
        "8b0b6467e52396e85ec14f261754b5219bd7411676a9924d0e79d471a01389e4",
        "27fd3c568e38caae9b3c099f566a19a8c988be5a73f26bee2ab21bdb6092cf97",
    ),
    (
        GgmlType::Q5_1,
        "30a7f1f637e551eab69760061fe12e0db6e63b9c1ce77104acde5f24b4913e86",
        "92d759e079b21992f4746627d607ca8750fd0b9f54ff6b36c5cf3726aa043d75",
    ),
    (
        GgmlType::Q8_0,
        "2dbc54de2ef1db4182780dc1467ff6b2db79c04e3a5574f415627889d4cc10ba",
        "15790cd9d33d8f2c51e56e33d2b319aea59fddfee911f3062de9a1786a2a0509",
    ),
    (
        GgmlType::Q8_1,
        "adb7dcd136ee6d4d1a103e6f93b683b902b6208929a57a85dd9dbb47f7e11140",
        "",
    ),
];

const EXPECTED_F16: (&str, &str) = (
    "4908bcb111321bd8394f9a819728d670dce4ae3ca5c523ecd1a651153b141d83",
    "4cedeb399b6358cafd0e122e40c726d2ac7ae82e248d039649e90c6ba52e7bf6",
);
const EXPECTED_BF16: (&str, &str) = (
    "4d50d0444bf36682180af93e253acd7e5eda216bd5473b3e4b01b45a36eaf667",
    "12bae2e994b81dd9c0547f7ead072838c367ecb942d1b1a2c573a5e243c8c72b",
);

/// f32 bits of ggml's dot for weights of case `c` (row) and each type (column).
const DOT_TYPES: [GgmlType; 8] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
];
#[rustfmt::skip]
const EXPECTED_DOTS: [[u32; 8]; NCASES] = [
    [0xc0ef5631, 0xc0ffe1e8, 0xc0f87410, 0xc0f63fc9, 0xc0fbba5d, 0xc0fdfb81, 0xc0fe023e, 0xc0fdc1a4],
    [0x47891418, 0x47ac0ce6, 0x47bd24e1, 0x47b2ef44, 0x47c00f51, 0x47c36333, 0x47c3829c, 0x47c3538a],
    [0xffc00000, 0xffc00000, 0xffc00000, 0xffc00000, 0xffc00000, 0x00000000, 0xffc00000, 0x00000000],
    [0x42378dee, 0x42378bb4, 0x42378dee, 0x42378bb4, 0x42379a96, 0x42394d27, 0x42398266, 0x42398de1],
    [0x4bf986ce, 0x4bf9f777, 0x4bf986cd, 0x4bfa39ce, 0x4bf9a141, 0x4bfb1ce2, 0x4bfb1412, 0x4bfb925b],
    [0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000],
    [0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x2f849fdd, 0x00000000, 0x2f843618],
    [0x46ba6fbb, 0x468e7790, 0x468a2583, 0x468f621f, 0x469ba46e, 0x469fc661, 0x469fcb85, 0x469fbce3],
    [0x00000000, 0xb8e22000, 0x00000000, 0xb8e22000, 0x00000000, 0x38a0f787, 0x38a0f800, 0x38a13576],
    [0xffc00000, 0xffc00000, 0xffc00000, 0xffc00000, 0xffc00000, 0x39957525, 0xffc00000, 0x39957c62],
];

struct XorShift32(u32);

impl XorShift32 {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }

    /// A 24-bit integer centred on zero times 2^-23: exact in f32, so C and Rust agree on it.
    fn uni(&mut self) -> f32 {
        ((self.next() >> 8) as i32 - 8_388_608) as f32 * (1.0 / 8_388_608.0)
    }
}

/// Ten rows of 256 finite values (eight 32-weight blocks each). In order: uniform in [-1, 1);
/// uniform × 1024; zeros; a constant per block (incl. -0.0); small noise with outliers up to
/// fp16's max; scales that are fp16 subnormals; scales below fp16's range; blocks whose largest
/// magnitude is negative, plus ±2 ties (first wins); exact rounding boundaries (halves at d = 1
/// for each format, d an fp16 tie); values whose scales overflow fp16.
fn block_cases() -> Vec<[f32; N]> {
    let mut r = XorShift32(0x9E37_79B9);
    let mut c = vec![[0.0f32; N]; NCASES];
    c[0] = std::array::from_fn(|_| r.uni());
    c[1] = std::array::from_fn(|_| r.uni() * 1024.0);
    let consts = [0.3f32, -0.3, 1.0, -7.0, 1e-3, 100.0, -2.5, -0.0];
    c[3] = std::array::from_fn(|i| consts[i / 32]);
    c[4] = std::array::from_fn(|_| r.uni() * 0.01);
    c[4][37] = 300.0;
    c[4][70] = -5000.0;
    c[4][100] = 60000.0;
    c[4][140] = -65504.0;
    c[4][200] = 1e-3;
    c[5] = std::array::from_fn(|_| r.uni() * f32::powi(2.0, -20));
    c[6] = std::array::from_fn(|_| r.uni() * f32::powi(2.0, -40));
    c[7] = std::array::from_fn(|_| r.uni() * 0.5);
    for b in 0..8 {
        c[7][b * 32 + (b * 5) % 32] = -1.0 - b as f32 * 0.125;
    }
    (c[7][3], c[7][9], c[7][35], c[7][41]) = (2.0, -2.0, -2.0, 2.0);
    let t11 = f32::powi(2.0, -11);
    for j in 0..32 {
        let jf = j as f32;
        let first = j == 0;
        c[8][j] = if first { 127.0 } else { jf - 15.5 };
        c[8][32 + j] = if first { -8.0 } else { (j % 16) as f32 - 7.5 };
        c[8][64 + j] = if first {
            15.0
        } else {
            (j % 15) as f32 + 0.5 - if j == 1 { 0.5 } else { 0.0 }
        };
        c[8][96 + j] = if first { -16.0 } else { (j % 31) as f32 - 15.5 };
        c[8][128 + j] = if first { 127.0 * (1.0 + t11) } else { jf };
        c[8][160 + j] = if first {
            127.0 * (1.0 + 3.0 * t11)
        } else {
            -jf
        };
        c[8][192 + j] = match j {
            0 => 31.0,
            1 => 0.0,
            _ => (j % 31) as f32 + 0.5,
        };
        c[8][224 + j] = (j as i32 - 16) as f32 * 0.25;
    }
    c[9] = std::array::from_fn(|_| r.uni() * 4.0);
    (c[9][5], c[9][71], c[9][128], c[9][200]) = (1e6, -3e5, 1e9, -7e4);
    c
}

/// 512 values for the element-wise float formats, NaNs allowed: 256 random bit patterns (every
/// class: NaNs, infinities, subnormals), 128 around fp16's overflow, 64 around its subnormals, and
/// 64 hand-picked patterns (fp16/bf16 ties, max, overflow thresholds, signalling NaNs, ±0).
fn float_cases() -> Vec<f32> {
    let mut r = XorShift32(0x1234_5678);
    let mut v: Vec<f32> = (0..256).map(|_| f32::from_bits(r.next())).collect();
    v.extend((0..128).map(|_| r.uni() * 70000.0));
    v.extend((0..64).map(|_| r.uni() * f32::powi(2.0, -14)));
    #[rustfmt::skip]
    let special: [u32; 64] = [
        0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001,
        0xFF812345, 0x7FBFFFFF, 0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001, 0x3F801000, 0x3F803000,
        0x3F801001, 0x33000000, 0x33000001, 0x33400000, 0x387FC000, 0x387FE000, 0x38800000, 0x3F808000,
        0x3F818000, 0x3F808001, 0x7F7FFFFF, 0xFF7FFFFF, 0x00000001, 0x00018000, 0x80008000, 0x7F7F8000,
        0x7F7F7FFF, 0x3DCCCCCD, 0xBDCCCCCD, 0x42F6E979, 0xC2F6E979, 0x3EAAAAAB, 0x00800000, 0x007FFFFF,
        0x807FFFFF, 0x47800000, 0xC7800000, 0x477FFFFF, 0x33800000, 0xB3800000, 0x337FFFFF, 0x32FFFFFF,
        0x3F7FF000, 0x3F7FF800, 0x3F7FFFFF, 0x40490FDB, 0xC0490FDB, 0x3F000000, 0x3F400000, 0x3FC00000,
        0x7F000000, 0x0F000000, 0x1F000000, 0x2F000000, 0x4F000000, 0x5F000000, 0x6F000000, 0x3C000000,
        0x3A000000,
    ];
    v.extend(special.iter().map(|&b| f32::from_bits(b)));
    v
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn flat(cases: &[[f32; N]]) -> Vec<f32> {
    cases.iter().flatten().copied().collect()
}

fn quantized(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let len = ty.row_bytes(x.len() as u64).unwrap() as usize;
    let mut q = vec![0u8; len];
    dispatch::quantize_row(ty, x, &mut q).unwrap();
    q
}

fn dequantized(ty: GgmlType, q: &[u8]) -> Vec<f32> {
    let n = q.len() / ty.type_size() * ty.block_size();
    let mut out = vec![0f32; n];
    dispatch::dequantize_row(ty, q, &mut out).unwrap();
    out
}

#[test]
fn inputs_are_the_oracles() {
    assert_eq!(
        sha256(bytemuck::cast_slice(&flat(&block_cases()))),
        INPUT_BLOCKS_SHA
    );
    assert_eq!(
        sha256(bytemuck::cast_slice(&float_cases())),
        INPUT_FLOATS_SHA
    );
}

#[test]
fn block_formats_match_ggml_bytes_and_values() {
    let x = flat(&block_cases());
    for &(ty, q_sha, dq_sha) in EXPECTED {
        let q = quantized(ty, &x);
        assert_eq!(sha256(&q), q_sha, "{ty}: quantized bytes differ from ggml");
        if !dq_sha.is_empty() {
            let dq = dequantized(ty, &q);
            assert_eq!(
                sha256(bytemuck::cast_slice(&dq)),
                dq_sha,
                "{ty}: dequantized values differ from ggml"
            );
        }
    }
}

#[test]
fn float_formats_match_ggml_bytes_and_values() {
    let mut x = float_cases();
    x.extend(flat(&block_cases()));
    for (ty, (q_sha, dq_sha)) in [
        (GgmlType::F16, EXPECTED_F16),
        (GgmlType::BF16, EXPECTED_BF16),
    ] {
        let q = quantized(ty, &x);
        assert_eq!(sha256(&q), q_sha, "{ty}: converted bytes differ from ggml");
        let dq = dequantized(ty, &q);
        assert_eq!(
            sha256(bytemuck::cast_slice(&dq)),
            dq_sha,
            "{ty}: values differ from ggml"
        );
    }
    // F32 "quantization" is a copy.
    assert_eq!(
        dequantized(GgmlType::F32, &quantized(GgmlType::F32, &x)).len(),
        x.len()
    );
}

#[test]
fn dots_match_ggml_generic_kernels() {
    let cases = block_cases();
    for (c, expected) in EXPECTED_DOTS.iter().enumerate() {
        let a = (c + 7) % NCASES;
        for (&ty, &bits) in DOT_TYPES.iter().zip(expected) {
            let dot_ty = dispatch::vec_dot_type(ty).unwrap();
            let w = quantized(ty, &cases[c]);
            let act = quantized(dot_ty, &cases[a]);
            let got = dispatch::vec_dot(ty, &w, &act).unwrap();
            assert_eq!(
                got.to_bits(),
                bits,
                "{ty} case {c}: got {got}, ggml {}",
                f32::from_bits(bits)
            );
        }
    }
}

/// The typed API and the byte API are the same code; check that the byte layer adds nothing.
#[test]
fn typed_api_matches_dispatch() {
    fn check<B: BlockFormat>(x: &[f32]) {
        let mut blocks = vec![B::zeroed(); x.len() / B::BLOCK];
        B::quantize(x, &mut blocks);
        let bytes = quantized(B::TYPE, x);
        assert_eq!(
            bytemuck::cast_slice::<B, u8>(&blocks),
            &bytes[..],
            "{}",
            B::TYPE
        );

        let mut out = vec![0f32; x.len()];
        B::dequantize(&blocks, &mut out);
        let via_bytes = dequantized(B::TYPE, &bytes);
        assert_eq!(
            bytemuck::cast_slice::<f32, u32>(&out),
            bytemuck::cast_slice::<f32, u32>(&via_bytes)
        );

        let mut act = vec![B::Dot::zeroed(); x.len() / B::Dot::BLOCK];
        let y: Vec<f32> = x.iter().rev().copied().collect();
        B::Dot::quantize(&y, &mut act);
        let typed = B::vec_dot(&blocks, &act);
        let bytes_dot = dispatch::vec_dot(B::TYPE, &bytes, bytemuck::cast_slice(&act)).unwrap();
        assert_eq!(typed.to_bits(), bytes_dot.to_bits(), "{}", B::TYPE);
    }
    let x = flat(&block_cases()[..2]);
    check::<f32>(&x);
    check::<f16>(&x);
    check::<bf16>(&x);
    check::<BlockQ4_0>(&x);
    check::<BlockQ4_1>(&x);
    check::<BlockQ5_0>(&x);
    check::<BlockQ5_1>(&x);
    check::<BlockQ8_0>(&x);
    check::<BlockQ8_1>(&x);
}
