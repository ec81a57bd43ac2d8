//! See `rustorch_fuzz_harness::chat_template`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rustorch_fuzz_harness::chat_template(data));
