//! WGSL sources, put together per weight format and per subgroup support.
//!
//! Every kernel is a `.wgsl` file beside this one. Kernels that read a quantized weight
//! (`matmul`, `embed`) are completed with one format file that defines `BW` (words per block),
//! `CPB` (32-weight chunks per block) and `load_chunk`; kernels that sum over a workgroup are
//! completed with `reduce_sg.wgsl` (subgroup sums and maxima) or `reduce_wg.wgsl` (workgroup memory
//! only).

use rustorch_gguf::GgmlType;

const COMMON: &str = include_str!("shaders/common.wgsl");
const REDUCE_SG: &str = include_str!("shaders/reduce_sg.wgsl");
const REDUCE_WG: &str = include_str!("shaders/reduce_wg.wgsl");
const KSCALE: &str = include_str!("shaders/formats/kscale.wgsl");

pub const MATMUL: &str = concat!(
    include_str!("shaders/matmul.wgsl"),
    include_str!("shaders/matmul_params.wgsl")
);
/// The prompt matmul by 64-row x 64-token tiles in workgroup memory (same bindings and modes).
pub const MATMUL_TILE: &str = concat!(
    include_str!("shaders/matmul_tile.wgsl"),
    include_str!("shaders/matmul_tiles.wgsl"),
    include_str!("shaders/matmul_params.wgsl")
);
/// The same tiles summed with cooperative matrices ([`matmul_coop`]).
const MATMUL_COOP: &str = concat!(
    include_str!("shaders/matmul_coop.wgsl"),
    include_str!("shaders/matmul_tiles.wgsl"),
    include_str!("shaders/matmul_params.wgsl")
);
/// Decode mat-vec with a workgroup per row (adapters with subgroups only), completed by
/// [`matvec`] with the row loops and one of the plain / norm parts below.
const MATVEC: &str = include_str!("shaders/matvec.wgsl");
/// The loop over one row of weight `K_` of the mat-vec, one copy per weight binding.
const MATVEC_ROW: &str = include_str!("shaders/matvec_row.wgsl");
/// The loop over one row of weight `K_` in whole blocks, for formats with a block dot
/// ([`block_dot`]).
const MATVEC_ROWB: &str = include_str!("shaders/matvec_rowb.wgsl");
/// Gate and up rows of the mat-vec (SwiGLU mode): by four-weight quads, or by blocks where both
/// weights have a block dot.
const MATVEC_GU: &str = include_str!("shaders/matvec_gu.wgsl");
const MATVEC_GUB: &str = include_str!("shaders/matvec_gub.wgsl");
const MATVEC_PLAIN: &str = include_str!("shaders/matvec_plain.wgsl");
const MATVEC_NORM: &str = include_str!("shaders/matvec_norm.wgsl");
pub const EMBED: &str = include_str!("shaders/embed.wgsl");
pub const RMS_NORM: &str = include_str!("shaders/rms_norm.wgsl");
/// RoPE's rotation (`rope.wgsl`), which `rope_kv` and the fused attention share.
const ROPE: &str = include_str!("shaders/rope.wgsl");
/// Where a position lives in a layer's KV cache (`kv_slot.wgsl`: block tables for a paged layer,
/// a ring for a sliding-window one), which the cache store, `rope_kv` and attention share.
const KV_SLOT: &str = include_str!("shaders/kv_slot.wgsl");
pub const ROPE_KV: &str = concat!(
    include_str!("shaders/rope_kv.wgsl"),
    include_str!("shaders/rope.wgsl"),
    include_str!("shaders/kv_slot.wgsl")
);
pub const KV_STORE: &str = concat!(
    include_str!("shaders/kv_store.wgsl"),
    include_str!("shaders/kv_slot.wgsl")
);
pub const ATTENTION: &str = include_str!("shaders/attention.wgsl");
/// The attention kernel, plain or with the decode step's RoPE and cache store folded in
/// (`fused`; the cache then bound read-write, and RoPE's frequency factors bound too).
fn attention(fused: bool) -> String {
    let factors = if fused {
        "@group(0) @binding(10) var<storage, read> factors: array<f32>;
fn rope_factor(i: u32) -> f32 {
    if (p.has_factors == 1u) {
        return factors[i];
    }
    return 1.0;
}"
    } else {
        "fn rope_factor(i: u32) -> f32 {
    return 1.0;
}"
    };
    (ATTENTION.to_string() + ROPE + KV_SLOT)
        .replace("{FACTORS}", factors)
        .replace("{FUSED}", if fused { "true" } else { "false" })
        .replace("{KV}", if fused { "read_write" } else { "read" })
        .replace(
            "{STORE}",
            if fused {
                "kc[c] = vec4<{KVT}>(kr); vc[c] = vec4<{KVT}>(vnew);"
            } else {
                ""
            },
        )
}

/// `src` with the float type `placeholder` set to f16 (`f16`, where the adapter has
/// `shader-f16`; the module then enables it, once) or f32. Sources without it are returned as
/// they are.
fn float_typed(src: &str, placeholder: &str, f16: bool) -> String {
    const ENABLE: &str = "enable f16;\n";
    if !src.contains(placeholder) {
        src.to_string()
    } else if !f16 {
        src.replace(placeholder, "f32")
    } else if src.starts_with(ENABLE) {
        src.replace(placeholder, "f16")
    } else {
        format!("{ENABLE}{}", src.replace(placeholder, "f16"))
    }
}

/// `src` with the KV cache's element type `{KVT}` set: f16 (where the adapter has
/// `shader-f16`; the CPU and CUDA backends keep f16 caches too) or f32.
fn kv_typed(src: &str, f16: bool) -> String {
    float_typed(src, "{KVT}", f16)
}

/// The complete module of a kernel that takes no weight format (one of [`PLAIN`]), with or
/// without subgroups, over an f16 KV cache where `kv16`.
pub fn plain(body: &str, subgroups: bool, kv16: bool) -> String {
    kv_typed(&compose(body, None, subgroups, 1), kv16)
}

/// The complete attention module ([`attention`]'s source), over an f16 KV cache where `kv16`.
pub fn attention_module(fused: bool, subgroups: bool, kv16: bool) -> String {
    plain(&attention(fused), subgroups, kv16)
}

/// Bytes of workgroup memory [`attention_tile`]'s kernel takes for heads of `head_dim`, and its
/// tile: (bytes, query rows, keys).
pub fn attention_tile_shape(head_dim: usize) -> Option<(usize, usize, usize)> {
    if head_dim == 0 || !head_dim.is_multiple_of(4) || head_dim > 256 {
        return None;
    }
    let hd4 = head_dim / 4;
    let tq = if head_dim <= 128 { 16 } else { 8 };
    let tk = (4096 / head_dim).clamp(8, 64);
    let bytes = 16 * (tq * hd4 + tk * hd4) + 4 * tq * tk + 4 * tk + 16 + 4;
    Some((bytes, tq, tk))
}

/// The prompt attention by tiles of query rows and keys (`attention_tile.wgsl`) for heads of
/// `head_dim` (a multiple of 4 up to 256), over an f16 cache where `kv16` (else f32).
pub fn attention_tile(head_dim: usize, kv16: bool) -> Option<String> {
    let (_, tq, tk) = attention_tile_shape(head_dim)?;
    let hd4 = head_dim / 4;
    let src = compose(
        &(include_str!("shaders/attention_tile.wgsl").to_string() + KV_SLOT),
        None,
        false,
        1,
    );
    Some(kv_typed(
        &src.replace("{TQ}", &tq.to_string())
            .replace("{TK}", &tk.to_string())
            .replace("{HD4}", &hd4.to_string())
            .replace("{QN}", &(tq * hd4).to_string())
            .replace("{KN}", &(tk * hd4).to_string())
            .replace("{PN}", &(tq * tk).to_string()),
        kv16,
    ))
}

pub const ATTN_COMBINE: &str = include_str!("shaders/attn_combine.wgsl");
pub const SWIGLU: &str = include_str!("shaders/swiglu.wgsl");
pub const GEGLU: &str = include_str!("shaders/geglu.wgsl");
pub const ADD_BIAS: &str = include_str!("shaders/add_bias.wgsl");
pub const SCALE: &str = include_str!("shaders/scale.wgsl");
pub const ADD: &str = include_str!("shaders/add.wgsl");
pub const COPY: &str = include_str!("shaders/copy.wgsl");
pub const ARGMAX: &str = include_str!("shaders/argmax.wgsl");
/// The 8-bit activations of the decode mat-vec over 8-bit activations ([`matvec_q8`]).
pub const QUANTIZE_Q8: &str = include_str!("shaders/quantize_q8.wgsl");

/// Kernels that take no weight format.
pub const PLAIN: &[(&str, &str)] = &[
    ("rms_norm", RMS_NORM),
    ("rope_kv", ROPE_KV),
    ("kv_store", KV_STORE),
    ("attn_combine", ATTN_COMBINE),
    ("swiglu", SWIGLU),
    ("geglu", GEGLU),
    ("add", ADD),
    ("add_bias", ADD_BIAS),
    ("scale", SCALE),
    ("copy", COPY),
    ("argmax", ARGMAX),
    ("quantize_q8", QUANTIZE_Q8),
];

/// Weight formats the matmul and embedding kernels decode.
pub const FORMATS: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Tokens per workgroup of the prompt matmul (the decode matmul takes one).
pub const MATMUL_NT: u32 = 8;

fn format_src(ty: GgmlType) -> Option<&'static str> {
    use GgmlType as T;
    Some(match ty {
        T::F32 => include_str!("shaders/formats/f32.wgsl"),
        T::F16 => include_str!("shaders/formats/f16.wgsl"),
        T::Q4_0 => include_str!("shaders/formats/q4_0.wgsl"),
        T::Q4_1 => include_str!("shaders/formats/q4_1.wgsl"),
        T::Q5_0 => include_str!("shaders/formats/q5_0.wgsl"),
        T::Q5_1 => include_str!("shaders/formats/q5_1.wgsl"),
        T::Q8_0 => include_str!("shaders/formats/q8_0.wgsl"),
        T::Q4_K => include_str!("shaders/formats/q4_k.wgsl"),
        T::Q5_K => include_str!("shaders/formats/q5_k.wgsl"),
        T::Q6_K => include_str!("shaders/formats/q6_k.wgsl"),
        _ => return None,
    })
}

/// The complete source of kernel `body`, for weight format `ty` where it reads one, with or
/// without subgroup operations, with `{NT}` set to `nt`.
pub fn compose(body: &str, ty: Option<GgmlType>, subgroups: bool, nt: u32) -> String {
    compose_formats(body, ty.map(|t| [t; 3]), subgroups, nt)
}

/// The tiled prompt matmul for weights of format `ty`, its tiles in f16 where `f16` (the adapter
/// has `shader-f16`) or f32, the next step's loads before this step's sums where `prefetch`.
pub fn matmul_tile(ty: GgmlType, f16: bool, prefetch: bool) -> String {
    let src = compose(MATMUL_TILE, Some(ty), false, 1).replace("{PREFETCH}", &prefetch.to_string());
    float_typed(&src, "{TILE}", f16)
}

/// How [`matmul_coop`] multiplies its tiles: S x S x S cooperative matrices (`size` 16, or 8:
/// Metal's only size) by the hardware, or the same arithmetic per invocation (`emulated`: adapters
/// without them, for the tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coop {
    pub size: u32,
    pub emulated: bool,
}

/// The tiled prompt matmul for weights of format `ty` with f16 tiles multiplied into f32 sums by
/// cooperative matrices (`matmul_coop.wgsl`; the hardware's need the adapter's subgroups), the
/// next step's loads before this step's sums where `prefetch`.
pub fn matmul_coop(ty: GgmlType, coop: Coop, prefetch: bool) -> String {
    let (mma, arg, id) = if coop.emulated {
        (
            include_str!("shaders/coop_emu.wgsl"),
            "",
            "let g = lid / 32u;",
        )
    } else {
        (
            include_str!("shaders/coop_hw.wgsl"),
            ", @builtin(subgroup_id) g: u32",
            "",
        )
    };
    let enable = if coop.emulated {
        "enable f16;\n"
    } else {
        "enable f16;\nenable wgpu_cooperative_matrix;\n"
    };
    let body = format!("{MATMUL_COOP}{mma}")
        .replace("{S}", &coop.size.to_string())
        .replace("{SG_ID_ARG}", arg)
        .replace("{SG_ID_LET}", id)
        .replace("{PREFETCH}", &prefetch.to_string());
    format!("{enable}{}", compose(&body, Some(ty), false, 1))
}

/// Whether the decode mat-vec reads format `ty` by block dots.
pub fn has_block_dot(ty: GgmlType) -> bool {
    block_dot(ty).is_some()
}

/// The decode mat-vec's block dot of format `ty` (sixteen invocations a 256-weight block, the
/// block's scales loaded once for their 16 weights), where it has one: Q4_K and Q6_K. Q6_K's
/// builds its floats without integer-to-float conversions.
fn block_dot(ty: GgmlType) -> Option<&'static str> {
    match ty {
        GgmlType::Q4_K => Some(include_str!("shaders/formats/q4_k_blk.wgsl")),
        GgmlType::Q6_K => Some(include_str!("shaders/formats/q6_k_blk.wgsl")),
        _ => None,
    }
}

/// The decode mat-vec over weights of formats `fmts` (bindings w0, w1, w2), with the RMSNorm of
/// its input folded in where `norm` (see `matvec.wgsl`). Weights of a format with a block dot
/// are read by whole blocks (`matvec_rowb.wgsl`), the others by quads.
pub fn matvec(fmts: [GgmlType; 3], norm: bool) -> String {
    matvec_with(fmts, norm, MvShape::ONE)
}

/// The decode mat-vec's workgroup: `wg` invocations taking `rpw` rows, `wg / rpw` invocations a
/// row (a multiple of 16, the block dots' invocations a block; with several rows a workgroup, no
/// less than the adapter's largest subgroup).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MvShape {
    pub wg: u32,
    pub rpw: u32,
}

impl MvShape {
    /// 64 invocations a row, one row a workgroup (the kernel before shapes could be chosen).
    pub const ONE: MvShape = MvShape { wg: 64, rpw: 1 };

    /// Invocations a row.
    pub fn per_row(self) -> u32 {
        self.wg / self.rpw
    }

    /// `WGxRPW` (as the `mv` option names it), e.g. `128x1`.
    pub fn parse(s: &str) -> Option<MvShape> {
        let (wg, rpw) = s.split_once('x').unwrap_or((s, "1"));
        let shape = MvShape {
            wg: wg.trim().parse().ok()?,
            rpw: rpw.trim().parse().ok()?,
        };
        let ok = (16..=1024).contains(&shape.wg)
            && shape.rpw >= 1
            && shape.wg.is_multiple_of(shape.rpw)
            && shape.per_row().is_multiple_of(16);
        ok.then_some(shape)
    }
}

impl std::fmt::Display for MvShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.wg, self.rpw)
    }
}

/// [`matvec`], with block dots only where `blocks`, and workgroups of `shape`.
pub fn matvec_with(fmts: [GgmlType; 3], norm: bool, shape: MvShape) -> String {
    matvec_body(fmts, norm, shape, block_dot)
}

/// The decode mat-vec over 8-bit activations (`quantize_q8.wgsl`'s), for weights whose formats
/// all have a packed 8-bit block dot ([`has_q8_dot`]); no RMSNorm fold (the quantisation does it).
pub fn matvec_q8(fmts: [GgmlType; 3], shape: MvShape) -> String {
    let body = matvec_body(fmts, false, shape, q8_dot);
    body.replace(
        "var<storage, read> x: array<vec4<f32>>;",
        "var<storage, read> x: array<u32>; // 8-bit activations (quantize_q8.wgsl)",
    )
}

/// Whether the decode mat-vec can read weights of format `ty` over 8-bit activations.
pub fn has_q8_dot(ty: GgmlType) -> bool {
    q8_dot(ty).is_some()
}

/// The block dot over 8-bit activations (`dot4I8Packed`) of format `ty`: Q4_K and Q6_K.
fn q8_dot(ty: GgmlType) -> Option<&'static str> {
    match ty {
        GgmlType::Q4_K => Some(include_str!("shaders/formats/q4_k_q8.wgsl")),
        GgmlType::Q6_K => Some(include_str!("shaders/formats/q6_k_q8.wgsl")),
        _ => None,
    }
}

fn matvec_body(
    fmts: [GgmlType; 3],
    norm: bool,
    shape: MvShape,
    blk: fn(GgmlType) -> Option<&'static str>,
) -> String {
    let rows: String = (0..3)
        .map(|k| match blk(fmts[k]) {
            Some(dot) => {
                // The block dot and its helpers, once per weight.
                let dot = ["dotblk", "q6f", "q6x"]
                    .iter()
                    .fold(rename(dot, "wq", &format!("w{k}")), |d, f| {
                        rename(&d, f, &format!("{f}{k}"))
                    });
                MATVEC_ROWB.replace("K_", &k.to_string()) + &dot
            }
            None => MATVEC_ROW.replace("K_", &k.to_string()),
        })
        .collect();
    let gu = if blk(fmts[0]).is_some() && blk(fmts[1]).is_some() {
        MATVEC_GUB
    } else {
        MATVEC_GU
    };
    let body = MATVEC
        .replace("{ROWS}", &rows)
        .replace("{GU}", gu)
        .replace("{NORM_DECL}", if norm { MATVEC_NORM } else { MATVEC_PLAIN })
        .replace("{WG}", &shape.wg.to_string())
        .replace("{RPW}", &shape.rpw.to_string());
    compose_formats(&body, Some(fmts), true, 1)
}

/// Whether `b` can be part of a WGSL identifier.
fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `src` with the identifier `from` (whole words only) renamed to `to`.
fn rename(src: &str, from: &str, to: &str) -> String {
    let bytes = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while let Some(at) = src[i..].find(from) {
        let (s, e) = (i + at, i + at + from.len());
        let whole =
            (s == 0 || !ident_byte(bytes[s - 1])) && (e == bytes.len() || !ident_byte(bytes[e]));
        out.push_str(&src[i..s]);
        out.push_str(if whole { to } else { from });
        i = e;
    }
    out.push_str(&src[i..]);
    out
}

/// [`compose`] with a format per weight binding: kernels that read `w0`, `w1`, `w2` (those that
/// call `load_chunk0`, `load_quad0` or `dotblk0`) get one decoder per binding, its names suffixed
/// with the binding's number (`load_quad1`, `BW1`); `BW`, `CPB` and `QB` are binding 0's.
fn compose_formats(body: &str, fmts: Option<[GgmlType; 3]>, subgroups: bool, nt: u32) -> String {
    let mut s = String::new();
    let reduces = body.contains("reduce_sum(") || body.contains("reduce_max(");
    // naga (27 to 30) takes subgroup operations without `enable subgroups;` (which it rejects);
    // the device feature SUBGROUP is what allows them.
    s.push_str(COMMON);
    if reduces {
        s.push_str(if subgroups { REDUCE_SG } else { REDUCE_WG });
    }
    let fmt = |ty: GgmlType| {
        let mut f = String::new();
        if matches!(ty, GgmlType::Q4_K | GgmlType::Q5_K) {
            f.push_str(KSCALE);
        }
        f.push_str(format_src(ty).expect("a format in FORMATS"));
        f
    };
    if let Some(fmts) = fmts {
        if ["load_chunk0(", "load_quad0(", "dotblk0("]
            .iter()
            .any(|f| body.contains(f))
        {
            for (i, &ty) in fmts.iter().enumerate() {
                let mut copy = rename(&fmt(ty), "wq", &format!("w{i}"));
                for name in [
                    "load_chunk",
                    "load_quad",
                    "q6k_scale",
                    "kscale_byte",
                    "kscale_min",
                    "BW",
                    "CPB",
                    "QB",
                ] {
                    copy = rename(&copy, name, &format!("{name}{i}"));
                }
                s.push_str(&copy);
            }
            s.push_str("const BW: u32 = BW0;\nconst CPB: u32 = CPB0;\nconst QB: u32 = QB0;\n");
        } else {
            s.push_str(&fmt(fmts[0]));
        }
    }
    let (args, lets) = if subgroups {
        (
            ", @builtin(subgroup_size) sg_size: u32, @builtin(subgroup_invocation_id) sg_lane: u32",
            "",
        )
    } else {
        ("", "let sg_size = 64u;\n    let sg_lane = 0u;")
    };
    s.push_str(
        &body
            .replace("{NT}", &nt.to_string())
            .replace("{SG_ARGS}", args)
            .replace("{SG_LETS}", lets),
    );
    s
}

/// Every module the backend can build: `(name, source)`, both subgroup variants. Tests translate
/// each to MSL and SPIR-V.
pub fn all_modules() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for sg in [false, true] {
        for kv16 in [false, true] {
            for (name, body) in PLAIN {
                if kv16 && !body.contains("{KVT}") {
                    continue;
                }
                v.push((format!("{name}/sg={sg}/kv16={kv16}"), plain(body, sg, kv16)));
            }
            for fused in [false, true] {
                v.push((
                    format!("attention/fused={fused}/sg={sg}/kv16={kv16}"),
                    attention_module(fused, sg, kv16),
                ));
            }
            if !sg {
                for hd in [64, 80, 96, 128, 256] {
                    v.push((
                        format!("attention_tile/hd={hd}/kv16={kv16}"),
                        attention_tile(hd, kv16).expect("a head size the tiles take"),
                    ));
                }
            }
        }
        for &ty in FORMATS {
            for nt in [1, MATMUL_NT] {
                v.push((
                    format!("matmul/{ty}/nt={nt}/sg={sg}"),
                    compose(MATMUL, Some(ty), sg, nt),
                ));
            }
            if !sg {
                for (f16, pf) in [(false, false), (true, false), (false, true)] {
                    v.push((
                        format!("matmul_tile/{ty}/f16={f16}/prefetch={pf}"),
                        matmul_tile(ty, f16, pf),
                    ));
                }
                // Metal's simdgroup matrices are 8 x 8 (16 x 16 ones: vulkan_modules).
                for (size, emulated, pf) in [(8, false, false), (8, false, true), (8, true, true)] {
                    let coop = Coop { size, emulated };
                    v.push((
                        format!("matmul_coop/{ty}/{coop:?}/prefetch={pf}"),
                        matmul_coop(ty, coop, pf),
                    ));
                }
                let coop = Coop {
                    size: 16,
                    emulated: true,
                };
                v.push((
                    format!("matmul_coop/{ty}/{coop:?}/prefetch=false"),
                    matmul_coop(ty, coop, false),
                ));
            }
            if sg {
                for norm in [false, true] {
                    v.push((format!("matvec/{ty}/norm={norm}"), matvec([ty; 3], norm)));
                }
            }
            v.push((
                format!("embed/{ty}/sg={sg}"),
                compose(EMBED, Some(ty), sg, 1),
            ));
        }
    }
    // Weights of mixed formats in one mat-vec (Q4_K_M's q/k/v).
    use GgmlType as T;
    v.push((
        "matvec/q4_K,q4_K,q6_K".into(),
        matvec([T::Q4_K, T::Q4_K, T::Q6_K], true),
    ));
    // Over 8-bit activations: each format, and Q4_K_M's mixes.
    for fmts in [
        [T::Q4_K; 3],
        [T::Q6_K; 3],
        [T::Q4_K, T::Q4_K, T::Q6_K],
        [T::Q6_K, T::Q4_K, T::Q6_K],
    ] {
        v.push((
            format!("matvec_q8/{},{},{}", fmts[0], fmts[1], fmts[2]),
            matvec_q8(fmts, MvShape { wg: 128, rpw: 4 }),
        ));
    }
    // Block dots beside quads in one mat-vec, and gate/up by blocks of two formats.
    v.push((
        "matvec/q6_K,q4_0,q4_K".into(),
        matvec([T::Q6_K, T::Q4_0, T::Q4_K], false),
    ));
    v.push((
        "matvec/q4_K,q6_K,q4_K".into(),
        matvec([T::Q4_K, T::Q6_K, T::Q4_K], true),
    ));
    // Other workgroup shapes (the `mv` option), blocks and quads, plain and with the norm.
    for shape in ["128x1", "256x1", "64x2", "128x4", "256x2", "256x4"] {
        let shape = MvShape::parse(shape).expect("a shape");
        for (fmts, norm) in [
            ([T::Q4_K, T::Q4_K, T::Q6_K], true),
            ([T::Q6_K; 3], false),
            ([T::Q4_0; 3], true),
        ] {
            v.push((
                format!("matvec/{},{},{}/{shape}", fmts[0], fmts[1], fmts[2]),
                matvec_with(fmts, norm, shape),
            ));
        }
    }
    v
}

/// Modules only the Vulkan backend builds (no MSL translation): the tiled matmul by 16 x 16
/// cooperative matrices, which Metal lacks. Tests translate each to SPIR-V.
pub fn vulkan_modules() -> Vec<(String, String)> {
    let coop = Coop {
        size: 16,
        emulated: false,
    };
    FORMATS
        .iter()
        .flat_map(|&ty| {
            [false, true].map(|pf| {
                (
                    format!("matmul_coop/{ty}/{coop:?}/prefetch={pf}"),
                    matmul_coop(ty, coop, pf),
                )
            })
        })
        .collect()
}

/// Weight bytes as the kernels read them: whole 32-bit words per block. Formats whose block is
/// not a multiple of 4 bytes get 2 bytes of padding: after the leading f16 scale (Q4_0, Q5_0,
/// Q8_0, so the quants are word-aligned) or at the end (Q6_K). Nothing is dequantized.
pub fn repack(ty: GgmlType, data: &[u8]) -> Option<Vec<u32>> {
    let (block, pad_at) = padding(ty)?;
    if !data.len().is_multiple_of(block) {
        return None;
    }
    let mut bytes = Vec::with_capacity(data.len() / block * (block + 2) + 4);
    match pad_at {
        None => bytes.extend_from_slice(data),
        Some(at) => {
            for b in data.chunks_exact(block) {
                bytes.extend_from_slice(&b[..at]);
                bytes.extend_from_slice(&[0, 0]);
                bytes.extend_from_slice(&b[at..]);
            }
        }
    }
    // One spare word so that no binding is empty.
    bytes.resize(bytes.len().div_ceil(4) * 4 + 4, 0);
    Some(
        bytes
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect(),
    )
}

/// How [`repack`] pads format `ty`: (block bytes in the file, byte after which 2 bytes of padding
/// go); blocks of formats without padding count as 4 bytes.
fn padding(ty: GgmlType) -> Option<(usize, Option<usize>)> {
    use GgmlType as T;
    Some(match ty {
        T::Q4_0 => (18, Some(2)),
        T::Q5_0 => (22, Some(2)),
        T::Q8_0 => (34, Some(2)),
        T::Q6_K => (210, Some(210)),
        T::F32 | T::F16 | T::Q4_1 | T::Q5_1 | T::Q4_K | T::Q5_K => (4, None),
        _ => return None,
    })
}

/// Bytes that `row_bytes` bytes of format `ty` (whole blocks) take once [`repack`]ed, without
/// its spare word.
pub fn packed_row_bytes(ty: GgmlType, row_bytes: usize) -> Option<usize> {
    let (block, pad_at) = padding(ty)?;
    let pad = if pad_at.is_some() { 2 } else { 0 };
    row_bytes
        .is_multiple_of(block)
        .then(|| row_bytes / block * (block + pad))
}
