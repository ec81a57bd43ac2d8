//! rustorch-model
