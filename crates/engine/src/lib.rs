//! rustorch-engine
