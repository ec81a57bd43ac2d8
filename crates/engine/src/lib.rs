//! rustorch-engine
pub mod blocks;
pub mod chat_template;
pub mod engine;
pub mod sampler;
pub mod session;
