//! Fast CPU matrix kernels: one weight type times a batch of activation rows.
//!
//! [`mat_kernel`] picks, once per process, the best instruction set the CPU reports at run time
//! (`is_x86_feature_detected!` / `is_aarch64_feature_detected!`, never `target-cpu=native`) and
//! returns that ISA's [`MatKernel`] for a weight type: a function to quantize an activation row into
//! the type's activation format, and a `gemm` that dots every weight row of a tile with every
//! activation row. The backend splits weight rows across threads; kernels never spawn any.
//!
//! Exactness, checked by `tests/kernels.rs` on fresh random inputs for every ISA this machine has:
//! - `quantize_act` writes exactly the bytes of [`crate::dispatch::quantize_row`] (ggml's `_ref`
//!   quantizers, not its SIMD ones: those round halves to even and scale by `127 / amax`). The only
//!   exception is NaN input, where the result is unspecified (ggml's is too).
//! - `gemm` matches [`crate::dispatch::vec_dot`] up to float rounding: the integer dot of each
//!   block is exact, only the order of the float scaling and summing differs.
//!
//! Float weights (F32, F16, BF16) take F32 activations: nothing is rounded, and the dot is a plain
//! f32 FMA over the converted weights.
//!
//! Activations must come from `quantize_act`. Their 8-bit codes then lie in `[-127, 127]`, which the
//! x86 kernels rely on (`maddubs` saturates at ±32767 and the sign trick cannot negate -128), and
//! so does NEON without `sdot` (its 16-bit sums of two `i8` products would wrap on -128 · -128);
//! other bytes give wrong sums, never undefined behaviour.
//!
//! `gemm` allocates nothing once a thread has run it: the x86 Q8_0 / Q8_1 kernels convert the
//! activations' f16 scales once per call into a buffer kept per thread.
//!
//! Some kernels also have a faster weight layout made once at load time
//! ([`MatKernel::has_packed_layout`], [`MatKernel::pack`], [`MatKernel::gemm_packed`]; so far
//! Q4_0 and Q4_K, on x86 and NEON): rows keep their size, `gemm_packed` is held to the same
//! reference on the same random inputs, and [`MatKernel::unpack`] gives the GGUF bytes back.
//!
//! Set `RUSTORCH_ISA=scalar|avx2|avx512vnni|neon` to cap the choice (benchmarks, bisecting).
//! The AVX-512 kernels need Rust 1.89 (stable AVX-512 intrinsics and target features).

#[cfg(target_arch = "aarch64")]
mod neon;
// Only the x86 and NEON kernels read the packed layouts.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
mod packed;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::fmt;
use std::sync::OnceLock;

use crate::GgmlType;

/// An instruction set a kernel is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// The crate's scalar reference code; always available.
    Scalar,
    /// AVX2 + FMA + F16C (x86-64).
    Avx2,
    /// The AVX2 kernels with AVX-512 VNNI dot products on 256-bit vectors (`vpdpbusd`,
    /// `vpdpwssd`) and AVX-512VL's 32 vector registers.
    Avx512Vnni,
    /// NEON (aarch64), with `sdot` where the CPU has the dot-product extension.
    Neon,
}

impl Isa {
    /// Every ISA, worst first.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni, Isa::Neon];

    /// The name [`MatKernel::isa`] reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Neon => "neon",
        }
    }

    /// Whether this binary has kernels for `self` and the CPU it runs on supports them.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512Vnni => x86::is_available(self),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => neon::is_available(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The cap `RUSTORCH_ISA` sets (an ISA name; unset or empty: none). An unknown name is an
    /// error, for the program to report before it computes anything; [`Isa::detected`] ignores it.
    pub fn cap_from_env() -> Result<Option<Isa>, String> {
        let Some(value) = std::env::var_os("RUSTORCH_ISA") else {
            return Ok(None);
        };
        let name = value.to_string_lossy();
        if name.is_empty() {
            return Ok(None);
        }
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == name)
            .map(Some)
            .ok_or_else(|| {
                let names: Vec<&str> = Isa::ALL.iter().map(|i| i.name()).collect();
                format!(
                    "RUSTORCH_ISA={name:?} is not an ISA name (expected one of: {})",
                    names.join(", ")
                )
            })
    }

    /// The best available ISA, detected on first use and then fixed for the process.
    /// `RUSTORCH_ISA` (an ISA name) caps it, for benchmarks and bisecting.
    pub fn detected() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let cap = Isa::cap_from_env().ok().flatten();
            Isa::ALL
                .into_iter()
                .rev()
                .filter(|&isa| cap.is_none_or(|cap| isa <= cap))
                .find(|isa| isa.is_available())
                .unwrap_or(Isa::Scalar)
        })
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Quantizes one activation row. Safety contract: `out.len()` is `x.len()` values' worth of the
/// activation type (checked by [`MatKernel::quantize_act`]), and the CPU supports the kernel's ISA.
type QuantizeFn = unsafe fn(x: &[f32], out: &mut [u8]);

/// The body of [`MatKernel::gemm`]. Safety contract: every length was checked against the shape
/// by [`MatKernel::gemm`], and the CPU supports the kernel's ISA.
type GemmFn =
    unsafe fn(w: &[u8], n_rows: usize, act: &[u8], n_tok: usize, n_cols: usize, out: &mut [f32]);

/// Rewrites `n_rows` rows of `n_cols` values between the GGUF layout and a load-time one. The
/// caller checked the lengths.
type RowsFn = fn(w: &[u8], n_rows: usize, n_cols: usize, out: &mut [u8]);

/// A weight layout made at load time, and the `gemm` that reads it (see [`packed`]).
#[derive(Clone, Copy)]
struct Packed {
    pack: RowsFn,
    unpack: RowsFn,
    gemm: GemmFn,
}

/// Kernels for one weight type, chosen once at run time.
pub struct MatKernel {
    weight_type: GgmlType,
    act_type: GgmlType,
    isa: Isa,
    quantize_act: QuantizeFn,
    gemm: GemmFn,
    packed: Option<Packed>,
}

impl fmt::Debug for MatKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MatKernel")
            .field("weight_type", &self.weight_type)
            .field("act_type", &self.act_type)
            .field("isa", &self.isa)
            .finish_non_exhaustive()
    }
}

/// The kernels for weights of type `ty` on the best ISA this CPU has, or `None` if no kernel
/// handles `ty`. An ISA without a kernel of its own for `ty` falls back to the next best.
pub fn mat_kernel(ty: GgmlType) -> Option<&'static MatKernel> {
    let best = Isa::detected();
    Isa::ALL
        .into_iter()
        .rev()
        .filter(|&isa| isa <= best)
        .find_map(|isa| mat_kernel_for(ty, isa))
}

/// The kernels of `isa` itself for weights of type `ty`: `None` if the ISA is not available here
/// (see [`Isa::is_available`]) or has no kernel of its own for `ty`. For tests and benchmarks.
pub fn mat_kernel_for(ty: GgmlType, isa: Isa) -> Option<&'static MatKernel> {
    if !isa.is_available() {
        return None;
    }
    let table: &'static [MatKernel] = match isa {
        Isa::Scalar => scalar::table(),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => x86::table(isa),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => neon::table(),
        #[allow(unreachable_patterns)]
        _ => &[],
    };
    table.iter().find(|k| k.weight_type == ty)
}

/// The eight 6-bit scales and mins of the Q4_K / Q5_K block whose 12 scale bytes are at `p`,
/// as four little-endian words of bytes `[sc0..4], [sc4..8], [m0..4], [m4..8]` (ggml's `utmp`
/// shuffle of `get_scale_min_k4`'s packing). Plain integer code, shared by every ISA's kernels.
///
/// # Safety
/// `p` points to 12 readable bytes.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
#[inline(always)]
unsafe fn scales_mins_k4_words(p: *const u8) -> [u32; 4] {
    let word = |i: usize| u32::from_le_bytes(p.add(4 * i).cast::<[u8; 4]>().read_unaligned());
    let (u0, u1, u2) = (word(0), word(1), word(2));
    let (low6, low4, top2) = (0x3f3f_3f3f, 0x0f0f_0f0f, 0x0303_0303);
    [
        u0 & low6,
        (u2 & low4) | (((u0 >> 6) & top2) << 4),
        u1 & low6,
        ((u2 >> 4) & low4) | (((u1 >> 6) & top2) << 4),
    ]
}

/// `n_cols` values of `ty` in bytes, with the panics of [`MatKernel`]'s length checks.
fn row_bytes(ty: GgmlType, n_cols: usize, what: &str) -> usize {
    let block = ty.block_size();
    assert!(
        n_cols.is_multiple_of(block),
        "{what}: {n_cols} columns are not a whole number of {ty} blocks of {block}"
    );
    (n_cols / block)
        .checked_mul(ty.type_size())
        .unwrap_or_else(|| panic!("{what}: a row of {n_cols} {ty} values overflows usize"))
}

/// `rows * row_bytes`, panicking on overflow.
fn total(rows: usize, row_bytes: usize, what: &str) -> usize {
    rows.checked_mul(row_bytes)
        .unwrap_or_else(|| panic!("{what}: {rows} rows of {row_bytes} bytes overflow usize"))
}

impl MatKernel {
    const fn new(
        weight_type: GgmlType,
        act_type: GgmlType,
        isa: Isa,
        quantize_act: QuantizeFn,
        gemm: GemmFn,
    ) -> Self {
        MatKernel {
            weight_type,
            act_type,
            isa,
            quantize_act,
            gemm,
            packed: None,
        }
    }

    /// This kernel with a load-time weight layout.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    const fn with_packed(mut self, pack: RowsFn, unpack: RowsFn, gemm: GemmFn) -> Self {
        self.packed = Some(Packed { pack, unpack, gemm });
        self
    }

    /// The weight type this kernel reads.
    pub fn weight_type(&self) -> GgmlType {
        self.weight_type
    }

    /// The activation format `gemm` expects: ggml's `vec_dot_type` for quantized weights (Q8_0 for
    /// Q4_0 / Q5_0 / Q8_0, Q8_1 for Q4_1 / Q5_1, Q8_K for the K-quants), F32 for float weights.
    pub fn act_type(&self) -> GgmlType {
        self.act_type
    }

    /// The instruction set of this kernel: "avx512vnni", "avx2", "neon" or "scalar".
    pub fn isa(&self) -> &'static str {
        self.isa.name()
    }

    /// Bytes of one weight row of `n_cols` values. Panics if `n_cols` is not whole blocks.
    pub fn weight_row_bytes(&self, n_cols: usize) -> usize {
        row_bytes(self.weight_type, n_cols, "weight row")
    }

    /// Bytes of one activation row of `n_cols` values (what [`Self::quantize_act`] writes).
    /// Panics if `n_cols` is not whole blocks.
    pub fn act_row_bytes(&self, n_cols: usize) -> usize {
        row_bytes(self.act_type, n_cols, "activation row")
    }

    /// Quantizes one activation row of `x.len()` values into `out` (act_type's row bytes).
    ///
    /// Panics if `x.len()` is not a whole number of activation blocks or `out` is not exactly
    /// one row.
    pub fn quantize_act(&self, x: &[f32], out: &mut [u8]) {
        let expected = self.act_row_bytes(x.len());
        assert_eq!(
            out.len(),
            expected,
            "quantize_act: {} values of {} need {expected} bytes, got {}",
            x.len(),
            self.act_type,
            out.len()
        );
        // SAFETY: `out` holds exactly `x.len()` values of the activation type (checked above), and
        // kernels of an ISA are only handed out when the CPU supports it (`mat_kernel_for`).
        unsafe { (self.quantize_act)(x, out) }
    }

    /// `out[r * n_tok + t] = dot(weight row r, activation row t)` for r in 0..n_rows, t in 0..n_tok.
    /// `w`: n_rows consecutive weight rows of `n_cols` values; `act`: n_tok consecutive activation
    /// rows from [`Self::quantize_act`].
    ///
    /// Panics if `n_cols` is not a whole number of blocks of both types, or if `w`, `act` or `out`
    /// do not have exactly the lengths the shape implies.
    pub fn gemm(
        &self,
        w: &[u8],
        n_rows: usize,
        act: &[u8],
        n_tok: usize,
        n_cols: usize,
        out: &mut [f32],
    ) {
        if self.check_gemm(w, n_rows, act, n_tok, n_cols, out) {
            // SAFETY: every length matches the shape (checked above), and kernels of an ISA are
            // only handed out when the CPU supports it (`mat_kernel_for`).
            unsafe { (self.gemm)(w, n_rows, act, n_tok, n_cols, out) }
        }
    }

    /// Whether this kernel has a faster layout for its weights, made once at load time by
    /// [`Self::pack`] and read by [`Self::gemm_packed`]. Rows keep their size in it.
    pub fn has_packed_layout(&self) -> bool {
        self.packed.is_some()
    }

    /// Rewrites `n_rows` weight rows of `n_cols` values into the load-time layout (see
    /// [`Self::has_packed_layout`]); `out` has the length of `w`.
    ///
    /// Panics if the kernel has no such layout or the lengths do not match the shape.
    pub fn pack(&self, w: &[u8], n_rows: usize, n_cols: usize, out: &mut [u8]) {
        let packed = self.packed.expect("pack: this kernel has no packed layout");
        self.check_rows("pack", w, n_rows, n_cols, out);
        (packed.pack)(w, n_rows, n_cols, out)
    }

    /// The inverse of [`Self::pack`]: rows back in the GGUF layout (for an embedding lookup).
    ///
    /// Panics if the kernel has no packed layout or the lengths do not match the shape.
    pub fn unpack(&self, w: &[u8], n_rows: usize, n_cols: usize, out: &mut [u8]) {
        let packed = self
            .packed
            .expect("unpack: this kernel has no packed layout");
        self.check_rows("unpack", w, n_rows, n_cols, out);
        (packed.unpack)(w, n_rows, n_cols, out)
    }

    /// [`Self::gemm`] on weights rewritten by [`Self::pack`].
    ///
    /// Panics as [`Self::gemm`] does, and if the kernel has no packed layout.
    pub fn gemm_packed(
        &self,
        w: &[u8],
        n_rows: usize,
        act: &[u8],
        n_tok: usize,
        n_cols: usize,
        out: &mut [f32],
    ) {
        let packed = self
            .packed
            .expect("gemm_packed: this kernel has no packed layout");
        if self.check_gemm(w, n_rows, act, n_tok, n_cols, out) {
            // SAFETY: as in `gemm`.
            unsafe { (packed.gemm)(w, n_rows, act, n_tok, n_cols, out) }
        }
    }

    fn check_rows(&self, what: &str, w: &[u8], n_rows: usize, n_cols: usize, out: &[u8]) {
        let len = total(n_rows, self.weight_row_bytes(n_cols), what);
        assert!(
            w.len() == len && out.len() == len,
            "{what}: {n_rows} rows of {n_cols} {} values are {len} bytes, got {} in and {} out",
            self.weight_type,
            w.len(),
            out.len()
        );
    }

    /// Checks `gemm`'s lengths (panicking on a mismatch); false if there is nothing to compute.
    fn check_gemm(
        &self,
        w: &[u8],
        n_rows: usize,
        act: &[u8],
        n_tok: usize,
        n_cols: usize,
        out: &[f32],
    ) -> bool {
        let w_len = total(n_rows, self.weight_row_bytes(n_cols), "gemm weights");
        let act_len = total(n_tok, self.act_row_bytes(n_cols), "gemm activations");
        let out_len = n_rows
            .checked_mul(n_tok)
            .unwrap_or_else(|| panic!("gemm: {n_rows} x {n_tok} outputs overflow usize"));
        let check = |what: &str, expected: usize, actual: usize| {
            assert_eq!(
                actual, expected,
                "gemm ({} x {n_cols} {} by {n_tok} rows of {}): {what} has length {actual}, \
                 expected {expected}",
                n_rows, self.weight_type, self.act_type
            );
        };
        check("weights (bytes)", w_len, w.len());
        check("activations (bytes)", act_len, act.len());
        check("out (f32 values)", out_len, out.len());
        out_len != 0
    }
}
