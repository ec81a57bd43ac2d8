//! See `rustorch_fuzz_harness::model_loader`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rustorch_fuzz_harness::model_loader(data));
