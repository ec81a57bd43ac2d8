//! Checks shared by the backends' test files.
#![allow(dead_code)]

pub mod tiny_arch;
pub mod two_sequences;
