//! The matmuls of attention over an f16 KV cache: `C = A · B`, `A` in f32 and `B` in f16, both
//! row-major with any row stride.
//!
//! Attention uses it twice per KV head, both times with the cache as `B`, read where it lies:
//! scores `S = Q · Kᵀ` with the keys stored transposed (`B = Kᵀ`, one row per head dimension, one
//! column per position) and outputs `O = P · V` with the values stored by position (`B = V`). Each
//! kernel keeps a tile of `C` in registers, `MR` rows of `A` by `NV` vectors of `B`'s columns, and
//! per step `l` widens one row of `B` from f16 and adds `a[i][l] · b[l][j]` with one fused
//! multiply-add per element: an outer product, so each widened `B` value serves `MR` rows and each
//! broadcast `A` value `NV` vectors.
//!
//! Every version computes each output with the same fused multiply-adds in the same order (`l`
//! ascending, starting from zero or from `C`), so all give the same bits as [`gemm_f16_reference`]
//! (checked on random shapes by `tests/attn.rs`).

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::kernels::Isa;

/// The operands' extents, with the slices they are read from or written to checked against them.
fn check(m: usize, n: usize, k: usize, a: (&[f32], usize), b: (&[f16], usize), c: (&[f32], usize)) {
    let need = |rows: usize, cols: usize, stride: usize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * stride + cols
        }
    };
    assert!(
        a.0.len() >= need(m, k, a.1) && (m <= 1 || a.1 >= k),
        "gemm_f16: A is too short"
    );
    assert!(
        b.0.len() >= need(k, n, b.1) && (k <= 1 || b.1 >= n),
        "gemm_f16: B is too short"
    );
    assert!(
        c.0.len() >= need(m, n, c.1) && (m <= 1 || c.1 >= n),
        "gemm_f16: C is too short"
    );
}

/// `c[i·ldc + j] = Σ_l a[i·lda + l] · b[l·ldb + j]` for `i < m`, `j < n`, `l < k` (plus the
/// existing `c` when `accumulate`), on the best kernel the CPU has. Panics if a slice is too short
/// for its extent and stride.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f16(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f16],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    gemm_f16_on(Isa::detected(), m, n, k, a, lda, b, ldb, c, ldc, accumulate);
}

/// [`gemm_f16`] on the kernel for `isa` (`Scalar` and `Neon`: the portable one). Panics if the CPU
/// lacks `isa`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f16_on(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f16],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    assert!(isa.is_available(), "gemm_f16: {isa} is not available");
    check(m, n, k, (a, lda), (b, ldb), (c, ldc));
    if m == 0 || n == 0 {
        return;
    }
    match isa {
        // SAFETY: the CPU has the ISA's features (checked above) and the extents fit the slices
        // (`check`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { x86::gemm_avx512(m, n, k, a, lda, b, ldb, c, ldc, accumulate) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::gemm_avx2(m, n, k, a, lda, b, ldb, c, ldc, accumulate) },
        _ => gemm_portable(m, n, k, a, lda, b, ldb, c, ldc, accumulate),
    }
}

/// The definition, one output at a time: the oracle of the tests.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f16_reference(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f16],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    check(m, n, k, (a, lda), (b, ldb), (c, ldc));
    for i in 0..m {
        for j in 0..n {
            let mut s = if accumulate { c[i * ldc + j] } else { 0.0 };
            for l in 0..k {
                s = a[i * lda + l].mul_add(b[l * ldb + j].to_f32(), s);
            }
            c[i * ldc + j] = s;
        }
    }
}

/// Columns of `B` the portable kernel widens at a time.
const PORTABLE_COLS: usize = 64;

/// Without x86 SIMD (aarch64, or x86 without AVX2): each `PORTABLE_COLS`-wide panel of `B` is
/// widened once into f32 (`half`'s slice conversion, vectorized where the CPU can), then every row
/// of `C` is summed along the panel in loops the compiler vectorizes.
#[allow(clippy::too_many_arguments)]
fn gemm_portable(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f16],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    thread_local! {
        /// The widened panel, grown to the longest `k` once (decode allocates nothing per token).
        static PANEL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    PANEL.with_borrow_mut(|panel| {
        if panel.len() < k * PORTABLE_COLS {
            panel.resize(k * PORTABLE_COLS, 0.0);
        }
        let mut j0 = 0;
        while j0 < n {
            let w = PORTABLE_COLS.min(n - j0);
            for l in 0..k {
                b[l * ldb + j0..l * ldb + j0 + w]
                    .convert_to_f32_slice(&mut panel[l * PORTABLE_COLS..l * PORTABLE_COLS + w]);
            }
            for i in 0..m {
                let row = &mut c[i * ldc + j0..i * ldc + j0 + w];
                if !accumulate {
                    row.fill(0.0);
                }
                for l in 0..k {
                    let x = a[i * lda + l];
                    for (s, &y) in row
                        .iter_mut()
                        .zip(&panel[l * PORTABLE_COLS..l * PORTABLE_COLS + w])
                    {
                        *s = x.mul_add(y, *s);
                    }
                }
            }
            j0 += w;
        }
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    /// One vector width's operations, inlined into a `#[target_feature]` entry point.
    trait Lanes {
        /// f32 lanes of a vector.
        const N: usize;
        /// Rows of `C` a kernel tile holds.
        const MR: usize;
        /// Vectors of columns a kernel tile holds.
        const NV: usize;
        type V: Copy;
        unsafe fn zero() -> Self::V;
        unsafe fn splat(p: *const f32) -> Self::V;
        unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
        /// `n` (`1..=N`) lanes of f32 or f16, the rest zero.
        unsafe fn load(p: *const f32, n: usize) -> Self::V;
        unsafe fn load_f16(p: *const f16, n: usize) -> Self::V;
        /// The first `n` lanes.
        unsafe fn store(p: *mut f32, v: Self::V, n: usize);
    }

    /// AVX-512: six rows by four 16-lane vectors, 24 accumulators of the 32 registers.
    struct Zmm;

    impl Lanes for Zmm {
        const N: usize = 16;
        const MR: usize = 6;
        const NV: usize = 4;
        type V = __m512;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(p: *const f32) -> __m512 {
            _mm512_set1_ps(*p)
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32, n: usize) -> __m512 {
            if n == 16 {
                _mm512_loadu_ps(p)
            } else {
                _mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, p)
            }
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const f16, n: usize) -> __m512 {
            let h = if n == 16 {
                _mm256_loadu_si256(p.cast())
            } else {
                _mm256_maskz_loadu_epi16(((1u32 << n) - 1) as u16, p.cast())
            };
            _mm512_cvtph_ps(h)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512, n: usize) {
            if n == 16 {
                _mm512_storeu_ps(p, v)
            } else {
                _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as u16, v)
            }
        }
    }

    /// AVX2: four rows by two 8-lane vectors, so that the accumulators, the widened row and the
    /// broadcast fit the 16 registers.
    struct Ymm;

    impl Lanes for Ymm {
        const N: usize = 8;
        const MR: usize = 4;
        const NV: usize = 2;
        type V = __m256;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(p: *const f32) -> __m256 {
            _mm256_broadcast_ss(&*p)
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32, n: usize) -> __m256 {
            if n == 8 {
                _mm256_loadu_ps(p)
            } else {
                let mut t = [0f32; 8];
                std::ptr::copy_nonoverlapping(p, t.as_mut_ptr(), n);
                _mm256_loadu_ps(t.as_ptr())
            }
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const f16, n: usize) -> __m256 {
            if n == 8 {
                _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
            } else {
                let mut t = [f16::ZERO; 8];
                std::ptr::copy_nonoverlapping(p, t.as_mut_ptr(), n);
                _mm256_cvtph_ps(_mm_loadu_si128(t.as_ptr().cast()))
            }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256, n: usize) {
            if n == 8 {
                _mm256_storeu_ps(p, v)
            } else {
                let mut t = [0f32; 8];
                _mm256_storeu_ps(t.as_mut_ptr(), v);
                std::ptr::copy_nonoverlapping(t.as_ptr(), p, n);
            }
        }
    }

    /// One tile of `C`: `MR` rows by `NV` vectors, the last vector `last` lanes wide (`N` for a
    /// whole one; `PART` says it is not, so that whole tiles compile without the checks).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<L: Lanes, const MR: usize, const NV: usize, const PART: bool>(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f16,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        last: usize,
    ) {
        let width = |v: usize| if PART && v == NV - 1 { last } else { L::N };
        let mut acc = [[L::zero(); NV]; MR];
        if accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                for (v, x) in row.iter_mut().enumerate() {
                    *x = L::load(c.add(r * ldc + v * L::N), width(v));
                }
            }
        }
        for l in 0..k {
            let bl = b.add(l * ldb);
            let mut bv = [L::zero(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = L::load_f16(bl.add(v * L::N), width(v));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let s = L::splat(a.add(r * lda + l));
                for (x, &y) in row.iter_mut().zip(&bv) {
                    *x = L::fma(s, y, *x);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                L::store(c.add(r * ldc + v * L::N), x, width(v));
            }
        }
    }

    /// Rows `0..m` of one column block, `MR` at a time, then the rest.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn rows<L: Lanes, const NV: usize, const PART: bool>(
        m: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f16,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        last: usize,
    ) {
        let mut i = 0;
        macro_rules! go {
            ($mr:literal) => {
                tile::<L, $mr, NV, PART>(
                    k,
                    a.add(i * lda),
                    lda,
                    b,
                    ldb,
                    c.add(i * ldc),
                    ldc,
                    accumulate,
                    last,
                )
            };
        }
        while m - i >= L::MR {
            if L::MR == 6 {
                go!(6)
            } else {
                go!(4)
            }
            i += L::MR;
        }
        match m - i {
            0 => {}
            1 => go!(1),
            2 => go!(2),
            3 => go!(3),
            4 => go!(4),
            _ => go!(5),
        }
    }

    /// Column blocks of `NV` whole vectors, then single vectors, then a partial one.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm<L: Lanes, const NV: usize>(
        m: usize,
        n: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f16,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let mut j = 0;
        while n - j >= NV * L::N {
            rows::<L, NV, false>(m, k, a, lda, b.add(j), ldb, c.add(j), ldc, accumulate, L::N);
            j += NV * L::N;
        }
        while n - j >= L::N {
            rows::<L, 1, false>(m, k, a, lda, b.add(j), ldb, c.add(j), ldc, accumulate, L::N);
            j += L::N;
        }
        if j < n {
            rows::<L, 1, true>(
                m,
                k,
                a,
                lda,
                b.add(j),
                ldb,
                c.add(j),
                ldc,
                accumulate,
                n - j,
            );
        }
    }

    /// # Safety
    /// The CPU has AVX-512 F, BW and VL; the extents fit the slices.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm_avx512(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        lda: usize,
        b: &[f16],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    ) {
        gemm::<Zmm, { Zmm::NV }>(
            m,
            n,
            k,
            a.as_ptr(),
            lda,
            b.as_ptr(),
            ldb,
            c.as_mut_ptr(),
            ldc,
            accumulate,
        )
    }

    /// # Safety
    /// The CPU has AVX2, FMA and F16C; the extents fit the slices.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm_avx2(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        lda: usize,
        b: &[f16],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    ) {
        gemm::<Ymm, { Ymm::NV }>(
            m,
            n,
            k,
            a.as_ptr(),
            lda,
            b.as_ptr(),
            ldb,
            c.as_mut_ptr(),
            ldc,
            accumulate,
        )
    }
}
