//! File types (`general.file_type`, llama.cpp's `llama_ftype`) and the per-tensor type choice that
//! llama-quantize makes for each of them (llama.cpp 0c1e570, `src/llama-quant.cpp`).
//!
//! The rules are reproduced exactly because the output files are checked byte for byte against
//! llama-quantize's: the same tensors must land on the same types, including the `_M` mixes that
//! raise `attn_v` and `ffn_down` on some layers and the fallbacks for rows that are not a whole
//! number of 256-weight super-blocks.

use rustorch_gguf::GgmlType;

/// A file type offered by `rustorch quantize`.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q2_K_S,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

impl FileType {
    pub const ALL: &'static [FileType] = &[
        FileType::F32,
        FileType::F16,
        FileType::BF16,
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q5_0,
        FileType::Q5_1,
        FileType::Q8_0,
        FileType::Q2_K,
        FileType::Q2_K_S,
        FileType::Q3_K_S,
        FileType::Q3_K_M,
        FileType::Q3_K_L,
        FileType::Q4_K_S,
        FileType::Q4_K_M,
        FileType::Q5_K_S,
        FileType::Q5_K_M,
        FileType::Q6_K,
    ];

    /// The name used on the command line (as llama-quantize's).
    pub fn name(self) -> &'static str {
        match self {
            FileType::F32 => "F32",
            FileType::F16 => "F16",
            FileType::BF16 => "BF16",
            FileType::Q4_0 => "Q4_0",
            FileType::Q4_1 => "Q4_1",
            FileType::Q5_0 => "Q5_0",
            FileType::Q5_1 => "Q5_1",
            FileType::Q8_0 => "Q8_0",
            FileType::Q2_K => "Q2_K",
            FileType::Q2_K_S => "Q2_K_S",
            FileType::Q3_K_S => "Q3_K_S",
            FileType::Q3_K_M => "Q3_K_M",
            FileType::Q3_K_L => "Q3_K_L",
            FileType::Q4_K_S => "Q4_K_S",
            FileType::Q4_K_M => "Q4_K_M",
            FileType::Q5_K_S => "Q5_K_S",
            FileType::Q5_K_M => "Q5_K_M",
            FileType::Q6_K => "Q6_K",
        }
    }

    /// Parses a command-line name, case-insensitively; `Q3_K` means Q3_K_M, `Q4_K` Q4_K_M and
    /// `Q5_K` Q5_K_M, as in llama-quantize.
    pub fn parse(s: &str) -> Option<FileType> {
        let up = s.to_ascii_uppercase();
        let alias = match up.as_str() {
            "Q3_K" => "Q3_K_M",
            "Q4_K" => "Q4_K_M",
            "Q5_K" => "Q5_K_M",
            other => other,
        };
        FileType::ALL.iter().copied().find(|t| t.name() == alias)
    }

    /// `llama_ftype` value written to `general.file_type`.
    pub fn id(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q5_0 => 8,
            FileType::Q5_1 => 9,
            FileType::Q2_K => 10,
            FileType::Q3_K_S => 11,
            FileType::Q3_K_M => 12,
            FileType::Q3_K_L => 13,
            FileType::Q4_K_S => 14,
            FileType::Q4_K_M => 15,
            FileType::Q5_K_S => 16,
            FileType::Q5_K_M => 17,
            FileType::Q6_K => 18,
            FileType::Q2_K_S => 21,
            FileType::BF16 => 32,
        }
    }

    /// The type most tensors get (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        match self {
            FileType::F32 => GgmlType::F32,
            FileType::F16 => GgmlType::F16,
            FileType::BF16 => GgmlType::BF16,
            FileType::Q4_0 => GgmlType::Q4_0,
            FileType::Q4_1 => GgmlType::Q4_1,
            FileType::Q5_0 => GgmlType::Q5_0,
            FileType::Q5_1 => GgmlType::Q5_1,
            FileType::Q8_0 => GgmlType::Q8_0,
            FileType::Q2_K | FileType::Q2_K_S => GgmlType::Q2_K,
            FileType::Q3_K_S | FileType::Q3_K_M | FileType::Q3_K_L => GgmlType::Q3_K,
            FileType::Q4_K_S | FileType::Q4_K_M => GgmlType::Q4_K,
            FileType::Q5_K_S | FileType::Q5_K_M => GgmlType::Q5_K,
            FileType::Q6_K => GgmlType::Q6_K,
        }
    }
}

/// Name of a `general.file_type` value, for `inspect` (covers every `llama_ftype`).
pub fn file_type_name(id: u32) -> &'static str {
    match id {
        0 => "all F32",
        1 => "mostly F16",
        2 => "mostly Q4_0",
        3 => "mostly Q4_1",
        7 => "mostly Q8_0",
        8 => "mostly Q5_0",
        9 => "mostly Q5_1",
        10 => "mostly Q2_K",
        11 => "mostly Q3_K_S",
        12 => "mostly Q3_K_M",
        13 => "mostly Q3_K_L",
        14 => "mostly Q4_K_S",
        15 => "mostly Q4_K_M",
        16 => "mostly Q5_K_S",
        17 => "mostly Q5_K_M",
        18 => "mostly Q6_K",
        19 => "mostly IQ2_XXS",
        20 => "mostly IQ2_XS",
        21 => "mostly Q2_K_S",
        22 => "mostly IQ3_XS",
        23 => "mostly IQ3_XXS",
        24 => "mostly IQ1_S",
        25 => "mostly IQ4_NL",
        26 => "mostly IQ3_S",
        27 => "mostly IQ3_M",
        28 => "mostly IQ2_S",
        29 => "mostly IQ2_M",
        30 => "mostly IQ4_XS",
        31 => "mostly IQ1_M",
        32 => "mostly BF16",
        36 => "mostly TQ1_0",
        37 => "mostly TQ2_0",
        38 => "mostly MXFP4_MOE",
        39 => "mostly NVFP4",
        40 => "mostly Q1_0",
        41 => "mostly Q2_0",
        _ => "unknown",
    }
}

/// What the type choice needs to know about the model (llama.cpp reads these from hparams).
#[derive(Debug, Clone)]
pub struct ModelFacts {
    pub arch: String,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_expert: usize,
}

impl ModelFacts {
    fn n_gqa(&self) -> usize {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(1)
    }

    fn is_falcon(&self) -> bool {
        self.arch == "falcon"
    }

    /// llama.cpp's `LLM_TYPE_70B` (only the mixes care): an 80-layer grouped-query Llama.
    fn is_70b(&self) -> bool {
        self.arch == "llama" && self.n_layer == 80 && self.n_head != self.n_head_kv
    }
}

/// One tensor as the type choice sees it.
#[derive(Debug, Clone)]
pub struct TensorFacts<'a> {
    pub name: &'a str,
    /// ggml order: `dims[0]` is the row length.
    pub dims: &'a [u64],
    pub ty: GgmlType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    Output,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

impl Category {
    fn of(name: &str) -> Category {
        if name == "output.weight" {
            Category::Output
        } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
            Category::TokenEmbd
        } else if name.contains("attn_qkv.weight") {
            Category::AttnQkv
        } else if name.contains("attn_kv_b.weight") {
            Category::AttnKvB
        } else if name.contains("attn_v.weight") {
            Category::AttnV
        } else if name.contains("attn_k.weight") {
            Category::AttnK
        } else if name.contains("attn_q.weight") {
            Category::AttnQ
        } else if name.contains("attn_output.weight") {
            Category::AttnOutput
        } else if name.contains("ffn_up") {
            Category::FfnUp
        } else if name.contains("ffn_gate") {
            Category::FfnGate
        } else if name.contains("ffn_down") {
            Category::FfnDown
        } else {
            Category::Other
        }
    }

    fn is_attn_v_like(self) -> bool {
        matches!(
            self,
            Category::AttnV | Category::AttnQkv | Category::AttnKvB
        )
    }
}

/// Whether llama-quantize quantizes this tensor at all (`tensor_allows_quantization`): 2-D+
/// tensors named `*weight`, except norms, positional embeddings, routers and a few small tables.
pub fn allows_quantization(name: &str, n_dims: usize) -> bool {
    if n_dims < 2 || !name.ends_with("weight") || name.contains("_norm.weight") {
        return false;
    }
    const KEEP: &[&str] = &[
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    if name == "position_embd.weight" || name == "token_types.weight" {
        return false;
    }
    !KEEP.iter().any(|k| name.contains(k))
}

/// `use_more_bits` of llama-quant.cpp: the first and last eighth of the layers and every third
/// layer in between get more bits in the `_M` mixes.
fn use_more_bits(i_layer: usize, n_layers: usize) -> bool {
    let (i, n) = (i_layer as i64, n_layers as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The per-file state of the type choice: counters of the tensors seen so far, which some mixes
/// depend on. Feed it the tensors in llama.cpp's order (see [`llama_tensor_order`]).
pub struct TypeChooser {
    ftype: FileType,
    model: ModelFacts,
    has_tied_embeddings: bool,
    n_attention_wv: usize,
    i_attention_wv: usize,
    i_ffn_down: usize,
    /// Tensors whose row length forced a fallback type.
    pub n_fallback: usize,
}

impl TypeChooser {
    /// `names` are all tensor names of the file (the counts and the tied-embedding check need them).
    pub fn new<'a>(
        ftype: FileType,
        model: ModelFacts,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut n_attention_wv = 0;
        let mut has_tied_embeddings = true;
        for name in names {
            let cat = Category::of(name);
            if cat.is_attn_v_like() {
                n_attention_wv += 1;
            }
            if cat == Category::Output {
                has_tied_embeddings = false;
            }
        }
        TypeChooser {
            ftype,
            model,
            has_tied_embeddings,
            n_attention_wv,
            i_attention_wv: 0,
            i_ffn_down: 0,
            n_fallback: 0,
        }
    }

    /// The type this tensor is written as (`llama_tensor_get_type`).
    pub fn choose(&mut self, t: &TensorFacts) -> GgmlType {
        if !allows_quantization(t.name, t.dims.len()) {
            return t.ty;
        }
        let default_type = self.ftype.default_type();
        if !default_type.is_quantized() {
            return default_type;
        }
        let chosen = self.mix_type(default_type, t);
        self.fallback(t, chosen)
    }

    /// `llama_tensor_get_type_impl` for the file types offered here.
    fn mix_type(&mut self, mut new_type: GgmlType, t: &TensorFacts) -> GgmlType {
        use FileType as F;
        use GgmlType as G;
        let ftype = self.ftype;
        let category = Category::of(t.name);
        let m = &self.model;
        let falcon = m.is_falcon();

        if category == Category::Output
            || (self.has_tied_embeddings && category == Category::TokenEmbd)
        {
            let nx = t.dims[0];
            if falcon || !nx.is_multiple_of(new_type.block_size() as u64) {
                new_type = G::Q8_0;
            } else if new_type != G::Q8_0 {
                new_type = G::Q6_K;
            }
        } else if category == Category::TokenEmbd {
            // Only the IQ and ternary mixes change the token embedding; none is offered here.
        } else if category.is_attn_v_like() {
            match ftype {
                F::Q2_K => new_type = if m.n_gqa() >= 4 { G::Q4_K } else { G::Q3_K },
                F::Q2_K_S if m.n_gqa() >= 4 => new_type = G::Q4_K,
                F::Q3_K_M => {
                    new_type = if self.i_attention_wv < 2 {
                        G::Q5_K
                    } else {
                        G::Q4_K
                    };
                }
                F::Q3_K_L => new_type = G::Q5_K,
                F::Q4_K_M | F::Q5_K_M
                    if use_more_bits(self.i_attention_wv, self.n_attention_wv) =>
                {
                    new_type = G::Q6_K;
                }
                F::Q4_K_S if self.i_attention_wv < 4 => new_type = G::Q5_K,
                _ => {}
            }
            if m.is_70b() && (new_type == G::Q3_K || new_type == G::Q4_K) {
                new_type = G::Q5_K;
            }
            if m.n_expert == 8 {
                new_type = G::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if category == Category::AttnK {
            if m.n_expert == 8 {
                new_type = G::Q8_0;
            }
        } else if category == Category::AttnQ {
            // Only the IQ3 mixes change attn_q.
        } else if category == Category::FfnDown {
            let (i_layer, n_layer) = (self.i_ffn_down, m.n_layer);
            match ftype {
                F::Q2_K => new_type = G::Q3_K,
                F::Q2_K_S if i_layer < n_layer / 8 => new_type = G::Q4_K,
                F::Q3_K_M => {
                    new_type = if i_layer < n_layer / 16 {
                        G::Q5_K
                    } else if !falcon || use_more_bits(i_layer, n_layer) {
                        G::Q4_K
                    } else {
                        G::Q3_K
                    };
                }
                F::Q3_K_L => new_type = if falcon { G::Q4_K } else { G::Q5_K },
                F::Q4_K_M => {
                    if falcon {
                        new_type = if i_layer < n_layer / 16 {
                            G::Q6_K
                        } else if use_more_bits(i_layer, n_layer) {
                            G::Q5_K
                        } else {
                            G::Q4_K
                        };
                    } else if use_more_bits(i_layer, n_layer) {
                        new_type = G::Q6_K;
                    }
                }
                F::Q5_K_M if use_more_bits(i_layer, n_layer) => new_type = G::Q6_K,
                F::Q4_K_S if !falcon && i_layer < n_layer / 8 => new_type = G::Q5_K,
                _ => {}
            }
            self.i_ffn_down += 1;
        } else if category == Category::AttnOutput {
            if !falcon {
                if m.n_expert == 8 {
                    if matches!(
                        ftype,
                        F::Q2_K | F::Q3_K_S | F::Q3_K_M | F::Q4_K_S | F::Q4_K_M
                    ) {
                        new_type = G::Q5_K;
                    }
                } else {
                    match ftype {
                        F::Q2_K => new_type = G::Q3_K,
                        F::Q3_K_M => new_type = G::Q4_K,
                        F::Q3_K_L => new_type = G::Q5_K,
                        _ => {}
                    }
                }
            } else if ftype == F::Q3_K_L {
                new_type = G::Q4_K;
            }
        } else if category == Category::AttnQkv {
            match ftype {
                F::Q3_K_M | F::Q3_K_L => new_type = G::Q4_K,
                F::Q4_K_M => new_type = G::Q5_K,
                F::Q5_K_M => new_type = G::Q6_K,
                _ => {}
            }
        }
        // FFN gate/up only change in the IQ3_XS mix, not offered here.
        new_type
    }

    /// `tensor_type_fallback`: a row that is not a whole number of blocks of the chosen type gets a
    /// type with 32-weight blocks, and F16 if even that does not fit.
    fn fallback(&mut self, t: &TensorFacts, target: GgmlType) -> GgmlType {
        let ncols = t.dims[0];
        if ncols.is_multiple_of(target.block_size() as u64) {
            return target;
        }
        self.n_fallback += 1;
        let ret = match target {
            GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::TQ1_0
            | GgmlType::TQ2_0
            | GgmlType::Q2_0 => GgmlType::Q4_0,
            GgmlType::Q4_K => GgmlType::Q5_0,
            GgmlType::Q5_K => GgmlType::Q5_1,
            GgmlType::Q6_K => GgmlType::Q8_0,
            other => other,
        };
        if !ncols.is_multiple_of(ret.block_size() as u64) {
            GgmlType::F16
        } else {
            ret
        }
    }
}

/// Layer index of a `blk.N.` tensor name (`-1` for the others), as llama.cpp's `sscanf`.
fn layer_of(name: &str) -> i64 {
    let Some(rest) = name.strip_prefix("blk.") else {
        return -1;
    };
    let digits: &str = &rest[..rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len())];
    if digits.is_empty() || !rest[digits.len()..].starts_with('.') {
        return -1;
    }
    digits.parse().unwrap_or(-1)
}

/// The order in which llama-quantize visits (and writes) tensors: non-layer tensors first, then
/// layer by layer, by name within each (`weight_name_comparer`). Returns indices into `names`.
pub fn llama_tensor_order(names: &[&str]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..names.len()).collect();
    idx.sort_by(|&a, &b| {
        let (la, lb) = (layer_of(names[a]), layer_of(names[b]));
        la.cmp(&lb).then_with(|| names[a].cmp(names[b]))
    });
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_more_bits_matches_llama_cpp() {
        // n = 30: n/8 = 3, 7n/8 = 26; layers 0..3, 26..30 and (i-3)%3==2 → 5, 8, 11, ...
        let more: Vec<usize> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(
            more,
            vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]
        );
    }

    #[test]
    fn order_is_layer_then_name() {
        let names = [
            "blk.10.a",
            "blk.2.b",
            "output.weight",
            "blk.2.a",
            "token_embd.weight",
        ];
        let order: Vec<&str> = llama_tensor_order(&names)
            .into_iter()
            .map(|i| names[i])
            .collect();
        assert_eq!(
            order,
            [
                "output.weight",
                "token_embd.weight",
                "blk.2.a",
                "blk.2.b",
                "blk.10.a"
            ]
        );
    }

    #[test]
    fn parse_names() {
        assert_eq!(FileType::parse("q4_k_m"), Some(FileType::Q4_K_M));
        assert_eq!(FileType::parse("Q4_K"), Some(FileType::Q4_K_M));
        assert_eq!(FileType::parse("Q7"), None);
    }
}
