//! Where a vocabulary's metadata comes from: a GGUF file, or a plain map (tests, synthetic
//! vocabularies). Key names are llama.cpp's `LLM_KV_TOKENIZER_*`.

use crate::TokenizerError;
use std::borrow::Cow;
use std::collections::HashMap;

pub(crate) mod keys {
    pub const MODEL: &str = "tokenizer.ggml.model";
    pub const PRE: &str = "tokenizer.ggml.pre";
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    pub const SCORES: &str = "tokenizer.ggml.scores";
    pub const MERGES: &str = "tokenizer.ggml.merges";
    pub const BOS_ID: &str = "tokenizer.ggml.bos_token_id";
    pub const EOS_ID: &str = "tokenizer.ggml.eos_token_id";
    pub const EOT_ID: &str = "tokenizer.ggml.eot_token_id";
    pub const EOM_ID: &str = "tokenizer.ggml.eom_token_id";
    pub const UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
    // sic: llama.cpp's spelling
    pub const SEP_ID: &str = "tokenizer.ggml.seperator_token_id";
    pub const PAD_ID: &str = "tokenizer.ggml.padding_token_id";
    pub const MASK_ID: &str = "tokenizer.ggml.mask_token_id";
    pub const FIM_PRE_ID: &str = "tokenizer.ggml.fim_pre_token_id";
    pub const FIM_SUF_ID: &str = "tokenizer.ggml.fim_suf_token_id";
    pub const FIM_MID_ID: &str = "tokenizer.ggml.fim_mid_token_id";
    pub const FIM_PAD_ID: &str = "tokenizer.ggml.fim_pad_token_id";
    pub const FIM_REP_ID: &str = "tokenizer.ggml.fim_rep_token_id";
    pub const FIM_SEP_ID: &str = "tokenizer.ggml.fim_sep_token_id";
    // deprecated spellings of the FIM ids, read after the new ones
    pub const PREFIX_ID: &str = "tokenizer.ggml.prefix_token_id";
    pub const SUFFIX_ID: &str = "tokenizer.ggml.suffix_token_id";
    pub const MIDDLE_ID: &str = "tokenizer.ggml.middle_token_id";
    pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    pub const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
    pub const ADD_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
    pub const GENERAL_NAME: &str = "general.name";
    pub const GENERAL_ARCH: &str = "general.architecture";
}

/// Typed, optional metadata lookups. `Ok(None)` means the key is absent; a key of the wrong
/// type is an error, as llama.cpp's loader treats it.
pub trait Metadata {
    fn str_value(&self, key: &str) -> Result<Option<&str>, TokenizerError>;
    fn u32_value(&self, key: &str) -> Result<Option<u32>, TokenizerError>;
    fn bool_value(&self, key: &str) -> Result<Option<bool>, TokenizerError>;
    fn str_array(&self, key: &str) -> Result<Option<&[String]>, TokenizerError>;
    /// f32 array; llama.cpp also accepts i32 scores, converted.
    fn f32_array(&self, key: &str) -> Result<Option<Cow<'_, [f32]>>, TokenizerError>;
    fn i32_array(&self, key: &str) -> Result<Option<&[i32]>, TokenizerError>;
}

impl Metadata for rustorch_gguf::GgufFile {
    fn str_value(&self, key: &str) -> Result<Option<&str>, TokenizerError> {
        Ok(self.opt_str(key)?)
    }
    fn u32_value(&self, key: &str) -> Result<Option<u32>, TokenizerError> {
        Ok(self.opt_u32(key)?)
    }
    fn bool_value(&self, key: &str) -> Result<Option<bool>, TokenizerError> {
        Ok(self.opt_bool(key)?)
    }
    fn str_array(&self, key: &str) -> Result<Option<&[String]>, TokenizerError> {
        Ok(self.opt_str_array(key)?)
    }
    fn f32_array(&self, key: &str) -> Result<Option<Cow<'_, [f32]>>, TokenizerError> {
        match self.opt_f32_array(key) {
            Ok(v) => Ok(v.map(Cow::Borrowed)),
            Err(e) => match self.opt_i32_array(key) {
                Ok(Some(v)) => Ok(Some(Cow::Owned(v.iter().map(|&x| x as f32).collect()))),
                _ => Err(e.into()),
            },
        }
    }
    fn i32_array(&self, key: &str) -> Result<Option<&[i32]>, TokenizerError> {
        Ok(self.opt_i32_array(key)?)
    }
}

/// One metadata value of a [`MetadataMap`].
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    Str(String),
    U32(u32),
    Bool(bool),
    StrArray(Vec<String>),
    F32Array(Vec<f32>),
    I32Array(Vec<i32>),
}

/// Metadata held in memory: for tests and for vocabularies that do not come from a file.
pub type MetadataMap = HashMap<String, MetaValue>;

fn wrong_type(key: &str, expected: &'static str) -> TokenizerError {
    TokenizerError::WrongType {
        key: key.to_owned(),
        expected,
    }
}

impl Metadata for MetadataMap {
    fn str_value(&self, key: &str) -> Result<Option<&str>, TokenizerError> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Str(s)) => Ok(Some(s)),
            Some(_) => Err(wrong_type(key, "string")),
        }
    }
    fn u32_value(&self, key: &str) -> Result<Option<u32>, TokenizerError> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::U32(v)) => Ok(Some(*v)),
            Some(_) => Err(wrong_type(key, "u32")),
        }
    }
    fn bool_value(&self, key: &str) -> Result<Option<bool>, TokenizerError> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Bool(v)) => Ok(Some(*v)),
            Some(_) => Err(wrong_type(key, "bool")),
        }
    }
    fn str_array(&self, key: &str) -> Result<Option<&[String]>, TokenizerError> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::StrArray(v)) => Ok(Some(v)),
            Some(_) => Err(wrong_type(key, "array[string]")),
        }
    }
    fn f32_array(&self, key: &str) -> Result<Option<Cow<'_, [f32]>>, TokenizerError> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::F32Array(v)) => Ok(Some(Cow::Borrowed(v))),
            Some(MetaValue::I32Array(v)) => {
                Ok(Some(Cow::Owned(v.iter().map(|&x| x as f32).collect())))
            }
            Some(_) => Err(wrong_type(key, "array[f32]")),
        }
    }
    fn i32_array(&self, key: &str) -> Result<Option<&[i32]>, TokenizerError> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::I32Array(v)) => Ok(Some(v)),
            Some(_) => Err(wrong_type(key, "array[i32]")),
        }
    }
}
