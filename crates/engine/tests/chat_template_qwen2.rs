//! The chat template of a real Qwen2-architecture model (DeepSeek-R1-Distill-Qwen-7B: `<｜User｜>` /
//! `<｜Assistant｜>` turns, a namespace, `'</think>' in content` and `.split('</think>')[-1]` to drop
//! the reasoning of earlier assistant turns), read from `deepseek-r1-distill-qwen-7b-vocab.gguf`
//! (`scripts/fetch-models.sh`) and rendered against Jinja2's output in Hugging Face's environment,
//! stored in `tests/data/llamacpp-qwen2-vocab.json` (`scripts/llamacpp-qwen2-vocab-reference.py`).

use rustorch_engine::chat_template::{ChatMessage, ChatTemplate};

const VOCAB: &str = "deepseek-r1-distill-qwen-7b-vocab.gguf";

fn model(name: &str) -> std::path::PathBuf {
    let dir = match std::env::var_os("RUSTORCH_MODELS") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME"))
            .join(".cache/rustorch/models"),
    };
    let p = dir.join(name);
    assert!(
        p.exists(),
        "test model {} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    p
}

#[test]
fn deepseek_r1_qwen_template_matches_jinja2() {
    let f = rustorch_gguf::GgufFile::open(model(VOCAB)).expect("open gguf");
    let source = f.get_str("tokenizer.chat_template").unwrap();
    assert!(source.contains("</think>"));
    let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap();
    let bos = &tokens[f.get_u32("tokenizer.ggml.bos_token_id").unwrap() as usize];
    let eos = &tokens[f.get_u32("tokenizer.ggml.eos_token_id").unwrap() as usize];

    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/llamacpp-qwen2-vocab.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reference["bos_token"].as_str().unwrap(), bos);
    assert_eq!(reference["eos_token"].as_str().unwrap(), eos);

    let t = ChatTemplate::new(source, bos, eos).expect("template compiles");
    let chats = reference["chat"].as_array().unwrap();
    assert_eq!(chats.len(), 3);
    for chat in chats {
        let msgs: Vec<ChatMessage> = chat["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let add_generation_prompt = chat["add_generation_prompt"].as_bool().unwrap();
        let got = t.render(&msgs, add_generation_prompt).unwrap();
        assert_eq!(got, chat["rendered"].as_str().unwrap(), "{msgs:?}");
    }
}
