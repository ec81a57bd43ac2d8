//! File conversion: `quantize` (llama-quantize's per-tensor type rules live in [`ftype`]) and
//! `synth` (synthetic models of a real shape, for benchmarks). Not needed to run a model.

pub mod ftype;
pub mod quantize;
pub mod synth;
