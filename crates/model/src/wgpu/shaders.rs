//! WGSL sources, put together per weight format and per subgroup support.
//!
//! Every kernel is a `.wgsl` file beside this one. Kernels that read a quantized weight
//! (`matmul`, `embed`) are completed with one format file that defines `BW` (words per block),
//! `CPB` (32-weight chunks per block) and `load_chunk`; kernels that sum over a workgroup are
//! completed with `reduce_sg.wgsl` (subgroup sums) or `reduce_wg.wgsl` (workgroup memory only).

use rustorch_gguf::GgmlType;

const COMMON: &str = include_str!("shaders/common.wgsl");
const REDUCE_SG: &str = include_str!("shaders/reduce_sg.wgsl");
const REDUCE_WG: &str = include_str!("shaders/reduce_wg.wgsl");
const KSCALE: &str = include_str!("shaders/formats/kscale.wgsl");

pub const MATMUL: &str = include_str!("shaders/matmul.wgsl");
/// Decode mat-vec with a subgroup per row (adapters with subgroups only).
pub const MATVEC: &str = include_str!("shaders/matvec.wgsl");
pub const EMBED: &str = include_str!("shaders/embed.wgsl");
pub const RMS_NORM: &str = include_str!("shaders/rms_norm.wgsl");
pub const ROPE_KV: &str = include_str!("shaders/rope_kv.wgsl");
pub const KV_STORE: &str = include_str!("shaders/kv_store.wgsl");
pub const ATTENTION: &str = include_str!("shaders/attention.wgsl");
pub const ATTN_COMBINE: &str = include_str!("shaders/attn_combine.wgsl");
pub const SWIGLU: &str = include_str!("shaders/swiglu.wgsl");
pub const ADD: &str = include_str!("shaders/add.wgsl");
pub const COPY: &str = include_str!("shaders/copy.wgsl");
pub const ARGMAX: &str = include_str!("shaders/argmax.wgsl");

/// Kernels that take no weight format.
pub const PLAIN: &[(&str, &str)] = &[
    ("rms_norm", RMS_NORM),
    ("rope_kv", ROPE_KV),
    ("kv_store", KV_STORE),
    ("attention", ATTENTION),
    ("attn_combine", ATTN_COMBINE),
    ("swiglu", SWIGLU),
    ("add", ADD),
    ("copy", COPY),
    ("argmax", ARGMAX),
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
    let mut s = String::new();
    let reduces = body.contains("reduce_sum(");
    // naga 27 takes subgroup operations without WGSL's `enable subgroups;` (which it rejects);
    // the device feature SUBGROUP is what allows them.
    s.push_str(COMMON);
    if reduces {
        s.push_str(if subgroups { REDUCE_SG } else { REDUCE_WG });
    }
    if let Some(ty) = ty {
        let mut fmt = String::new();
        if matches!(ty, GgmlType::Q4_K | GgmlType::Q5_K) {
            fmt.push_str(KSCALE);
        }
        fmt.push_str(format_src(ty).expect("a format in FORMATS"));
        if body.contains("load_chunk0(") {
            // One copy of the decoder per weight binding w0, w1, w2.
            for i in 0..3 {
                let copy = fmt
                    .replace("wq[", &format!("w{i}["))
                    .replace("load_chunk(", &format!("load_chunk{i}("))
                    .replace("kscale_byte(", &format!("kscale_byte{i}("))
                    .replace("kscale_min(", &format!("kscale_min{i}("));
                for line in copy.lines() {
                    if i == 0 || !line.starts_with("const ") {
                        s.push_str(line);
                        s.push('\n');
                    }
                }
            }
        } else {
            s.push_str(&fmt);
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
        for (name, body) in PLAIN {
            v.push((format!("{name}/sg={sg}"), compose(body, None, sg, 1)));
        }
        for &ty in FORMATS {
            for nt in [1, MATMUL_NT] {
                v.push((
                    format!("matmul/{ty}/nt={nt}/sg={sg}"),
                    compose(MATMUL, Some(ty), sg, nt),
                ));
            }
            if sg {
                v.push((format!("matvec/{ty}"), compose(MATVEC, Some(ty), true, 1)));
            }
            v.push((
                format!("embed/{ty}/sg={sg}"),
                compose(EMBED, Some(ty), sg, 1),
            ));
        }
    }
    v
}

/// Weight bytes as the kernels read them: whole 32-bit words per block. Formats whose block is
/// not a multiple of 4 bytes get 2 bytes of padding: after the leading f16 scale (Q4_0, Q5_0,
/// Q8_0, so the quants are word-aligned) or at the end (Q6_K). Nothing is dequantized.
pub fn repack(ty: GgmlType, data: &[u8]) -> Option<Vec<u32>> {
    use GgmlType as T;
    // (block bytes in the file, byte after which 2 bytes of padding go)
    let (block, pad_at) = match ty {
        T::Q4_0 => (18, Some(2)),
        T::Q5_0 => (22, Some(2)),
        T::Q8_0 => (34, Some(2)),
        T::Q6_K => (210, Some(210)),
        T::F32 | T::F16 | T::Q4_1 | T::Q5_1 | T::Q4_K | T::Q5_K => (4, None),
        _ => return None,
    };
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
