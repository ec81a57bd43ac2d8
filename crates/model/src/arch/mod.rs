//! Architectures: one file each, the forward pass as straight-line calls of [`crate::Backend`]
//! operations that every backend executes.

pub mod llama;
