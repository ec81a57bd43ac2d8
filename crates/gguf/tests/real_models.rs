//! The two test models open and show facts cross-checked with gguf-py 0.19.0 (`gguf.GGUFReader`).

use std::path::PathBuf;

use rustorch_gguf::{GgmlType, GgufFile};

fn model(name: &str) -> PathBuf {
    let dir = match std::env::var_os("RUSTORCH_MODELS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/rustorch/models"),
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "test model {} is missing: run scripts/fetch-models.sh (or set RUSTORCH_MODELS)",
        path.display()
    );
    path
}

#[test]
fn smollm2_q4_1() {
    let f = GgufFile::open(model("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.metadata().len(), 33);
    assert_eq!(f.tensors().len(), 272);
    assert_eq!(f.data_offset(), 1785664);
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(f.get_u64("llama.embedding_length").unwrap(), 576);
    assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
    assert!(!f.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        49152
    );
    assert_eq!(
        f.get_i32_array("tokenizer.ggml.token_type").unwrap().len(),
        49152
    );
    assert_eq!(f.opt_f32_array("tokenizer.ggml.scores").unwrap(), None);
    assert_eq!(f.get_str_array("general.languages").unwrap(), ["en"]);

    let t = f.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (t.ty, t.dims.as_slice()),
        (GgmlType::Q8_0, &[576, 49152][..])
    );
    assert_eq!(f.data_offset() + t.offset, 1785664);
    assert_eq!(f.tensor_data(t).len(), 30081024);
    let t = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!((t.ty, t.dims.as_slice()), (GgmlType::Q4_1, &[576, 576][..]));
    assert_eq!(f.data_offset() + t.offset, 33806656);
    assert_eq!(t.n_bytes, 207360);
    let t = f.tensor("blk.0.attn_norm.weight").unwrap();
    assert_eq!((t.ty, t.dims.as_slice()), (GgmlType::F32, &[576][..]));
}

#[test]
fn gemma3_q4_k_m() {
    let f = GgufFile::open(model("gemma-3-270m-q4_k_m.gguf")).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.metadata().len(), 33);
    assert_eq!(f.tensors().len(), 236);
    assert_eq!(f.data_offset(), 6525120);
    assert_eq!(f.get_str("general.architecture").unwrap(), "gemma3");
    assert_eq!(f.get_u32("gemma3.attention.sliding_window").unwrap(), 512);
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        262144
    );
    assert_eq!(
        f.get_f32_array("tokenizer.ggml.scores").unwrap().len(),
        262144
    );
    assert_eq!(
        f.get_str_array("general.tags").unwrap(),
        ["gemma3", "gemma", "google", "text-generation"]
    );
    let t = f.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (t.ty, t.dims.as_slice()),
        (GgmlType::Q8_0, &[640, 262144][..])
    );
    assert_eq!(t.n_bytes, 178257920);
    let t = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(
        (t.ty, t.dims.as_slice()),
        (GgmlType::Q5_0, &[640, 1024][..])
    );
    assert_eq!(f.data_offset() + t.offset, 185270464);
    assert_eq!(f.tensor_data(t).len(), 450560);
    // The last tensor's data ends inside the file.
    let last = f.tensors().iter().max_by_key(|t| t.offset).unwrap();
    assert!(f.data_offset() + last.offset + last.n_bytes <= f.file_size());
}
