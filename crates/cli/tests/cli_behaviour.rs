//! The command line as a user meets it: chat over stdin, the seed system's invocation, seeded
//! sampling, debug activations, inspect.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

fn smollm() -> String {
    common::model(common::SMOLLM).to_str().unwrap().to_string()
}

fn with_stdin(args: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rustorch"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn chat_answers_each_line_of_stdin() {
    let out = with_stdin(
        &["chat", "-m", &smollm(), "-n", "12", "--temp", "0"],
        "What is the capital of France?\nAnd of Italy?\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let replies: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(replies.len() >= 2, "two replies expected: {stdout:?}");
    // (The reply's wording is not checked: llama.cpp's own greedy first token here is a near-tie.)
    assert!(
        !stdout.contains("<|im_start|>") && !stdout.contains("<|im_end|>"),
        "control tokens leak: {stdout:?}"
    );
}

/// Gemma 3 270M's file has no chat template: chat uses Gemma's turn format, says so, and answers
/// without printing the turn markers; `--chat-template` overrides, and an unknown one is an error.
#[test]
fn chat_without_a_template_uses_the_architectures_format() {
    let gemma = common::model(common::GEMMA);
    let gemma = gemma.to_str().unwrap();
    let out = with_stdin(
        &["chat", "-m", gemma, "-n", "8", "--temp", "0"],
        "What is the capital of France?\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("gemma turn format"), "{stderr}");
    assert!(!stdout.trim().is_empty(), "no reply");
    assert!(
        !stdout.contains("<start_of_turn>") && !stdout.contains("<end_of_turn>"),
        "turn markers leak: {stdout:?}"
    );
    // Several turns: Gemma's template trims the replies it renders again, which a cache of the
    // conversation's text as generated would not match (it used to end the chat with an error).
    let out = with_stdin(
        &["chat", "-m", gemma, "-n", "6", "--temp", "0"],
        "Hi\nHow are you?\nWhat is 2+2?\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("[timings]"), "{stderr}");
    let out = with_stdin(
        &["chat", "-m", gemma, "-n", "2", "--chat-template", "chatml"],
        "Hi\n",
    );
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("turn format"));
    let out = with_stdin(
        &[
            "chat",
            "-m",
            gemma,
            "-n",
            "2",
            "--chat-template",
            "no-such-format",
        ],
        "Hi\n",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a known format"), "{stderr}");
}

#[test]
fn no_subcommand_is_chat() {
    // The seed system's own invocation.
    let out = with_stdin(
        &[
            "--model",
            &smollm(),
            "--backend",
            "cpu",
            "--max-tokens",
            "5",
        ],
        "Hello\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
}

#[test]
fn chat_reports_a_full_context() {
    let out = with_stdin(
        &["chat", "-m", &smollm(), "-c", "48", "--temp", "0"],
        "Tell me a long story about a dragon.\nMore.\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("context") && stderr.contains("full"),
        "{stderr}"
    );
}

#[test]
fn same_seed_same_text() {
    let m = smollm();
    let args = [
        "run",
        "-m",
        &m,
        "-p",
        "Once upon a time",
        "-n",
        "24",
        "--temp",
        "1.0",
        "--seed",
        "42",
    ];
    let a = common::rustorch_ok(&args);
    let b = common::rustorch_ok(&args);
    assert_eq!(a, b);
    let c = common::rustorch_ok(&[
        "run",
        "-m",
        &m,
        "-p",
        "Once upon a time",
        "-n",
        "24",
        "--temp",
        "1.0",
        "--seed",
        "7",
    ]);
    assert_ne!(a, c, "different seeds gave the same 24 tokens");
}

#[test]
fn debug_activations_go_to_stderr_only() {
    let out = Command::new(env!("CARGO_BIN_EXE_rustorch"))
        .args([
            "run",
            "-m",
            &smollm(),
            "-p",
            "Hello",
            "-n",
            "2",
            "--temp",
            "0",
        ])
        .env("RUSTORCH_DEBUG", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for name in [
        "attn_norm-0",
        "q-0",
        "k-0",
        "v-0",
        "kqv_out-0",
        "ffn_inp-0",
        "ffn_swiglu-29",
        "l_out-29",
        "result_output",
    ] {
        assert!(
            stderr.contains(name),
            "{name} missing from the debug output"
        );
    }
    assert!(stderr.contains("rms"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("[debug]"));
    let quiet = common::rustorch(&[
        "run",
        "-m",
        &smollm(),
        "-p",
        "Hello",
        "-n",
        "2",
        "--temp",
        "0",
    ]);
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("[debug]"));
    assert_eq!(
        quiet.stdout, out.stdout,
        "debug output changed the generated text"
    );
}

#[test]
fn inspect_describes_the_file() {
    let text = common::rustorch_ok(&["inspect", &smollm()]);
    for want in [
        "llama",
        "134515008",
        "Q4_1",
        "8192",
        "gpt2",
        "49152",
        "blk.0.attn_q.weight",
        "token_embd.weight",
    ] {
        assert!(
            text.to_lowercase().contains(&want.to_lowercase()),
            "{want} missing:\n{text}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&common::rustorch_ok(&["inspect", "--json", &smollm()])).unwrap();
    assert_eq!(json["architecture"], "llama");
    assert_eq!(json["parameters"], 134515008u64);
    assert_eq!(json["vocab_size"], 49152);
    assert_eq!(json["context_length"], 8192);
    assert_eq!(json["tensors"].as_array().unwrap().len(), 272);
    let t = &json["tensors"][0];
    assert_eq!(t["name"], "token_embd.weight");
    assert_eq!(t["type"], "q8_0");
    assert_eq!(t["shape"], serde_json::json!([576, 49152]));
    assert_eq!(t["bytes"], 30081024u64);
}

#[test]
fn tokenize_parses_control_tokens() {
    let out = common::rustorch_ok(&["tokenize", "-m", &smollm(), "-p", "<|im_start|>user"]);
    let ids: Vec<u64> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(ids[0], 1, "<|im_start|> is one control token: {ids:?}");
}
