//! Every architecture's tiny random-weight file (`tests/data/tiny-arch`, made by
//! `scripts/tiny-arch.py`) against llama.cpp's logits for it (`tests/data/llamacpp-tiny-arch.json`,
//! see `tests/data/README-arch.md`): the check shared by the CPU (`architectures.rs`) and wgpu
//! (`wgpu_architectures.rs`) tests.

use std::path::PathBuf;

/// The repository's `tests/data`.
pub fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
}

/// llama.cpp's run of one tiny file: its path, the tokens (one batch at positions 0..), the
/// logits of every position and their top-two margins.
pub struct Reference {
    pub file: PathBuf,
    pub tokens: Vec<u32>,
    pub logits: Vec<Vec<f32>>,
    pub margins: Vec<f64>,
}

/// The reference of `arch` (`llama`, `qwen2`, ..., the keys of `llamacpp-tiny-arch.json`).
pub fn reference(arch: &str) -> Reference {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data().join("llamacpp-tiny-arch.json")).unwrap(),
    )
    .unwrap();
    let r = &json[arch];
    let floats = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    Reference {
        file: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(r["file"].as_str().unwrap()),
        tokens: r["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect(),
        logits: r["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| floats(row).into_iter().map(|x| x as f32).collect())
            .collect(),
        margins: floats(&r["margins"]),
    }
}

/// Checks `got` (every position's logits, rows of `n_vocab`) against the reference: relative L2
/// error of each position ≤ 2%, and the same argmax wherever llama.cpp's top-two margin is at
/// least 0.5. `what` names the run in messages.
pub fn check(r: &Reference, what: &str, got: &[f32], n_vocab: usize) {
    assert_eq!(got.len(), r.logits.len() * n_vocab, "{what}: logits");
    let (mut worst, mut decisive, mut same) = (0f64, 0, 0);
    for (t, w) in r.logits.iter().enumerate() {
        let g = &got[t * n_vocab..(t + 1) * n_vocab];
        let (mut err, mut norm) = (0f64, 0f64);
        for (a, b) in g.iter().zip(w) {
            err += ((a - b) as f64).powi(2);
            norm += (*b as f64).powi(2);
        }
        let rel = (err / norm).sqrt();
        worst = worst.max(rel);
        assert!(
            rel <= 0.02,
            "{what} position {t}: relative L2 error {rel:.4}"
        );
        if r.margins[t] >= 0.5 {
            decisive += 1;
            let argmax = |v: &[f32]| rustorch_model::runner::argmax(v);
            if argmax(g) == argmax(w) {
                same += 1;
            }
        }
    }
    eprintln!(
        "{what}: worst relative L2 error {worst:.5}, argmax {same}/{decisive} decisive positions"
    );
    assert_eq!(
        same, decisive,
        "{what}: argmax differs at a decisive position"
    );
}
