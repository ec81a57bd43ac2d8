//! See `rustorch_fuzz_harness::gguf_reader`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rustorch_fuzz_harness::gguf_reader(data));
