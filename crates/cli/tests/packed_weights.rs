//! Weights the CPU backend rewrites at load time into a kernel's packed layout (Q4_0 and Q4_K on
//! x86) must give the model the same logits as the file's own layout (`RUSTORCH_CPU_PACK=0`): the
//! SmolLM2 file requantized to Q4_0 and to Q4_K_M, teacher-forced over real text. Token by token (the decode
//! mat-vec, a kernel of its own on packed rows) they agree up to float summation order; as one
//! batch (the eight-row prompt kernel, which repacks both layouts into the same scratch) they are
//! identical.
//!
//! "Up to summation order" is not "within rounding" here: activations are rounded to 8 bits before
//! every matmul, so a last-bit difference can move a code by one and the model amplifies it;
//! margins move by about 0.1 (as much as between this model's own decode and batch runs). The
//! criterion is the one the GPU backends meet: the same argmax wherever the plain run's top-two
//! margin is at least 0.5.

mod common;

use std::process::Command;

fn logits(
    model: &std::path::Path,
    text: &std::path::Path,
    pack: bool,
    ubatch: &str,
) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_rustorch"))
        .args([
            "logits",
            "-m",
            model.to_str().unwrap(),
            "-f",
            text.to_str().unwrap(),
        ])
        .args(["-n", "192", "--ubatch", ubatch, "--json"])
        .env("RUSTORCH_CPU_PACK", if pack { "1" } else { "0" })
        .output()
        .expect("running rustorch");
    assert!(
        out.status.success(),
        "rustorch logits failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("logits JSON")
}

#[test]
fn packed_q4_0_gives_the_logits_of_the_file_layout() {
    check("Q4_0", rustorch_quant::GgmlType::Q4_0);
}

#[test]
fn packed_q4_k_gives_the_logits_of_the_file_layout() {
    check("Q4_K_M", rustorch_quant::GgmlType::Q4_K);
}

fn check(ftype: &str, packed_type: rustorch_quant::GgmlType) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join(format!("smollm2-{ftype}.gguf"));
    let src = common::model(common::SMOLLM);
    common::rustorch_ok(&[
        "quantize",
        "--allow-requantize",
        src.to_str().unwrap(),
        model.to_str().unwrap(),
        ftype,
    ]);
    let text = common::reference_dir().join("texts/GPL-3");
    assert_eq!(
        logits(&model, &text, true, "512"),
        logits(&model, &text, false, "512"),
        "one batch: the prompt kernels must agree exactly"
    );
    let (packed, plain) = (
        logits(&model, &text, true, "1"),
        logits(&model, &text, false, "1"),
    );
    let (packed, plain) = (
        packed["positions"].as_array().unwrap(),
        plain["positions"].as_array().unwrap(),
    );
    assert_eq!(packed.len(), 192);
    assert_eq!(packed.len(), plain.len());
    let (mut confident, mut differ) = (0, 0);
    for (a, b) in packed.iter().zip(plain) {
        let (ma, mb) = (a["margin"].as_f64().unwrap(), b["margin"].as_f64().unwrap());
        differ += usize::from(ma != mb);
        if mb >= 0.5 {
            confident += 1;
            assert_eq!(a["argmax"], b["argmax"], "position {}", a["pos"]);
        }
    }
    assert!(confident >= 100, "only {confident} positions with a margin");
    // The two layouts round in different orders: identical margins everywhere would mean the
    // packed kernels never ran (x86 has them; other CPUs keep the file layout).
    let packs =
        rustorch_quant::kernels::mat_kernel(packed_type).is_some_and(|k| k.has_packed_layout());
    assert!(
        !packs || differ > 0,
        "packed and plain runs are bit-identical: was anything packed?"
    );
}
