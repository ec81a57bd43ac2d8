//! See `rustorch_fuzz_harness::tokenizer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rustorch_fuzz_harness::tokenizer(data));
