//! Per-model pre-tokenizer settings: llama.cpp's `tokenizer.ggml.pre` names, what each one
//! changes in the vocabulary's flags, and the regexes each applies before BPE.
//!
//! The tables are transcribed from `llama-vocab.cpp` (`llama_vocab::impl::load` and
//! `llm_tokenizer_bpe`'s constructor); keep them in the same order so the two can be diffed.

/// llama.cpp's `llama_vocab_pre_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PreType {
    Afmoe,
    Bailingmoe,
    Bloom,
    Chameleon,
    Chatglm4,
    Codeshell,
    CommandR,
    Dbrx,
    Deepseek3Llm,
    DeepseekCoder,
    DeepseekLlm,
    Default,
    Exaone,
    ExaoneMoe,
    Falcon,
    Gemma4,
    Gpt2,
    Gpt3Finnish,
    Gpt4o,
    GraniteDocling,
    GraniteEmbMulti,
    Grok2,
    Hunyuan,
    HunyuanDense,
    HyV4,
    Jais,
    Jais2,
    JoyaiLlm,
    KimiK2,
    Laguna,
    Llama3,
    Mellum2,
    Minerva,
    Minicpm5,
    MinimaxM2,
    Mpt,
    Olmo,
    Poro,
    Qwen2,
    Qwen35,
    Refact,
    SarvamMoe,
    SeedCoder,
    Smaug,
    Smollm,
    SolarOpen,
    Spark25,
    Stablelm2,
    Starcoder,
    Superbpe,
    Tekken,
    TinyAya,
    Trillion,
    Ufakzeka,
    Viking,
    Whitespace,
    Youtu,
}

use PreType as P;

/// The flags a pre-tokenizer name changes from the BPE defaults.
pub(crate) mod tweak {
    /// `clean_spaces = false`
    pub const CLEAN_OFF: u8 = 1;
    /// whole words found in the vocabulary skip the merges
    pub const IGNORE_MERGES: u8 = 2;
    /// `add_bos = true` (before the metadata's `add_bos_token`)
    pub const ADD_BOS: u8 = 4;
    /// no default BOS token
    pub const NO_BOS: u8 = 8;
    pub const ADD_SEP: u8 = 16;
    /// spaces become U+2581 before BPE, as in SentencePiece
    pub const ESCAPE_WS: u8 = 32;
}
use tweak::*;

/// `tokenizer.ggml.pre` values llama.cpp knows, the type each selects, and its tweaks.
/// An absent value means `Default`; any other is an error, as in llama.cpp.
pub(crate) const NAMES: &[(&[&str], PreType, u8)] = &[
    (&["default"], P::Default, 0),
    (&["minicpm5"], P::Minicpm5, IGNORE_MERGES),
    (
        &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
        ],
        P::Llama3,
        IGNORE_MERGES | ADD_BOS,
    ),
    (&["deepseek-llm"], P::DeepseekLlm, CLEAN_OFF),
    (&["deepseek-coder"], P::DeepseekCoder, CLEAN_OFF),
    (&["deepseek-v3"], P::Deepseek3Llm, CLEAN_OFF),
    (&["spark2_5"], P::Spark25, CLEAN_OFF),
    (&["youtu"], P::Youtu, CLEAN_OFF | IGNORE_MERGES),
    (&["falcon"], P::Falcon, 0),
    (&["mpt"], P::Mpt, 0),
    (&["starcoder"], P::Starcoder, 0),
    (
        &[
            "gpt-2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
        ],
        P::Gpt2,
        0,
    ),
    (&["jais-2"], P::Jais2, 0),
    (
        &["gemma4", "granite-embed-multi-311m"],
        P::Gemma4,
        ESCAPE_WS,
    ),
    (&["sarvam-moe"], P::SarvamMoe, ESCAPE_WS | CLEAN_OFF),
    (
        &["jina-v1-en", "jina-v2-code", "roberta-bpe"],
        P::Gpt2,
        ADD_SEP,
    ),
    (&["whitespace"], P::Whitespace, 0),
    (&["refact"], P::Refact, 0),
    (&["command-r"], P::CommandR, CLEAN_OFF),
    (
        &["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2"],
        P::Qwen2,
        CLEAN_OFF,
    ),
    (&["qwen35"], P::Qwen35, CLEAN_OFF),
    (&["stablelm2"], P::Stablelm2, 0),
    (&["olmo"], P::Olmo, 0),
    (&["dbrx"], P::Dbrx, 0),
    (&["smaug-bpe"], P::Smaug, 0),
    (&["poro-chat"], P::Poro, CLEAN_OFF),
    (&["chatglm-bpe"], P::Chatglm4, NO_BOS),
    (&["glm4", "glm5"], P::Chatglm4, NO_BOS | IGNORE_MERGES),
    (&["viking"], P::Viking, CLEAN_OFF),
    (&["jais"], P::Jais, 0),
    (&["tekken"], P::Tekken, CLEAN_OFF | IGNORE_MERGES | ADD_BOS),
    (&["smollm"], P::Smollm, CLEAN_OFF),
    (&["codeshell"], P::Codeshell, 0),
    (&["bloom"], P::Bloom, 0),
    (&["gpt3-finnish"], P::Gpt3Finnish, 0),
    (&["exaone"], P::Exaone, 0),
    (&["exaone4"], P::Gpt2, 0),
    (&["exaone-moe"], P::ExaoneMoe, 0),
    (&["chameleon"], P::Chameleon, ADD_BOS | CLEAN_OFF),
    (&["minerva-7b"], P::Minerva, 0),
    (&["megrez"], P::Qwen2, 0),
    (
        &["gpt-4o", "llama4", "kanana2", "talkie"],
        P::Gpt4o,
        CLEAN_OFF,
    ),
    (
        &["granite-embed-multi-97m"],
        P::GraniteEmbMulti,
        CLEAN_OFF | IGNORE_MERGES,
    ),
    (&["tiny_aya", "cohere2moe"], P::TinyAya, CLEAN_OFF),
    (&["superbpe"], P::Superbpe, CLEAN_OFF),
    (&["trillion"], P::Trillion, CLEAN_OFF),
    (&["granite-docling"], P::GraniteDocling, CLEAN_OFF),
    (
        &["bailingmoe", "bailingmoe2", "llada-moe"],
        P::Bailingmoe,
        CLEAN_OFF,
    ),
    (&["seed-coder"], P::SeedCoder, CLEAN_OFF),
    (&["hunyuan"], P::Hunyuan, CLEAN_OFF),
    (&["hunyuan-dense"], P::HunyuanDense, CLEAN_OFF),
    (&["hy_v4"], P::HyV4, CLEAN_OFF),
    (&["joyai-llm"], P::JoyaiLlm, CLEAN_OFF),
    (&["kimi-k2"], P::KimiK2, CLEAN_OFF),
    (&["ufakzeka"], P::Ufakzeka, CLEAN_OFF),
    (&["grok-2"], P::Grok2, CLEAN_OFF),
    (&["afmoe"], P::Afmoe, CLEAN_OFF),
    (&["laguna"], P::Laguna, CLEAN_OFF),
    (&["minimax-m2"], P::MinimaxM2, CLEAN_OFF),
    (&["solar-open"], P::SolarOpen, CLEAN_OFF),
    (&["mellum2"], P::Mellum2, 0),
];

pub(crate) fn lookup(name: &str) -> Option<(PreType, u8)> {
    NAMES
        .iter()
        .find(|(names, _, _)| names.contains(&name))
        .map(|&(_, t, f)| (t, f))
}

/// The regexes a pre-tokenizer applies in order, and whether words are then GPT-2 byte-encoded.
pub(crate) fn regexes(t: PreType) -> (&'static [&'static str], bool) {
    match t {
        P::Llama3 => (&[
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ], true),
        P::Jais2 => (&[
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s{512}(?!\\S)|\\s{256}(?!\\S)|\\s{128}(?!\\S)|\\s{64}(?!\\S)|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|\\s{4}(?!\\S)|\\s{1,2}(?!\\S)|\\s{1}",
        ], true),
        P::Dbrx | P::Smaug => (&[
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ], true),
        P::DeepseekLlm => (&[
            "[\r\n]",
            "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
            "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
            "\\s+$",
            "[一-龥ࠀ-一가-퟿]+",
            "\\p{N}+",
        ], true),
        P::Deepseek3Llm | P::HunyuanDense | P::JoyaiLlm | P::HyV4 => (&[
            "\\p{N}{1,3}",
            "[一-龥぀-ゟ゠-ヿ]+",
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
        ], true),
        P::Spark25 => (&[
            "\\p{N}{1,3}",
            "[一-龥぀-ゟ゠-ヿ]+",
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+",
            "\\p{N}",
        ], true),
        P::Youtu => (&[
            "[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥぀-ゟ゠-ヿ]+",
            "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ], true),
        P::DeepseekCoder => (&[
            "[\r\n]",
            "\\s?\\p{L}+",
            "\\s?\\p{P}+",
            "[一-龥ࠀ-一가-퟿]+",
            "\\p{N}",
        ], true),
        P::Falcon => (&[
            "[\\p{P}\\$\\+<=>\\^~\\|`]+",
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
            "[0-9][0-9][0-9]",
        ], true),
        P::Starcoder | P::Refact | P::CommandR | P::Smollm | P::Codeshell | P::Exaone | P::Minerva | P::Mellum2 => (&[
            "\\p{N}",
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
        ], true),
        P::Gpt2 | P::Mpt | P::Olmo | P::Jais | P::Trillion | P::GraniteDocling => (&[
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
        ], true),
        P::Stablelm2 | P::Qwen2 | P::Hunyuan | P::SolarOpen => (&[
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ], true),
        P::Qwen35 => (&[
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ], true),
        P::Poro | P::Bloom | P::Gpt3Finnish => (&[
            " ?[^(\\s|.,!?…。，、।۔،)]+",
        ], true),
        P::Chatglm4 => (&[
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ], true),
        P::Viking => (&[
            " ?[^(\\s|.,!?…。，、।۔،)]+",
            "\\p{N}",
        ], true),
        P::Tekken => (&[
            "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ], true),
        P::Chameleon => (&[
            "<sentinel:[0-9]+>",
            "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
            "([\\t\\n]|    |  )",
            "\\p{N}",
            "[\\p{P}!-/:-@\\[-`{-~]",
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
        ], true),
        P::Gpt4o | P::MinimaxM2 => (&[
            "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ], true),
        P::GraniteEmbMulti => (&[
            "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))*((?=[\\p{L}\\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))+((?=[\\p{L}\\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ], true),
        P::TinyAya => (&[
            "\\d{1,3}(?=(?:\\d{3})*\\b)",
            "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ], true),
        P::KimiK2 => (&[
            "\\p{Han}+",
        ], true),
        P::Superbpe => (&[
            "\\p{N}+",
            "(?=(\\d{3})+(?!\\d))",
        ], true),
        P::Bailingmoe => (&[
            "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
        ], true),
        P::SeedCoder => (&[
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ], true),
        P::Ufakzeka => (&[
            "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ], true),
        P::Grok2 => (&[
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ], true),
        P::Afmoe => (&[
            "\\p{AFMoE_digits}",
            "[一-鿿㐀-䶿豈-﫿぀-ゟ゠-ヿ･-ﾟ⼀-⿟เ-๿຀-໿ក-៿က-႟ꩠ-ꩿꧠ-꧿가-힯ᄀ-ᇿ]+",
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ], true),
        P::Laguna => (&[
            "[^\\n]+|[\\n]+",
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ], true),
        P::ExaoneMoe => (&[
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
        ], true),
        P::Gemma4 => (&[
            "[^\\n]+|[\\n]+",
        ], false),
        P::SarvamMoe => (&[
            "[^\\n]+|[\\n]+",
        ], false),
        P::Minicpm5 => (&[
            "\\p{N}{1,3}",
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ], true),
        P::Whitespace => (&[
            "\\S+",
        ], false),
        _ => (&[
            "[\\p{P}\\$\\+<=>\\^~\\|]+",
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
            "\\p{N}+",
            "[0-9][0-9][0-9]",
        ], true),
    }
}
