//! rustorch-tokenizer
