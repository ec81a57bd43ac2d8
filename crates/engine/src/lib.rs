//! rustorch-engine
pub mod chat_template;
pub mod sampler;
pub mod session;
