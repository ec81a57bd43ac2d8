//! Checks shared by the backends' test files.
#![allow(dead_code)]

pub mod two_sequences;
