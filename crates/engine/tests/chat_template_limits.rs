//! Chat templates are code from a downloaded file: every way to hang the renderer, exhaust
//! its memory or overflow its stack ends in a prompt [`TemplateError::Limit`] (or a plain
//! error), and legitimate large conversations still render.

mod hostile_templates;

use std::time::Instant;

use rustorch_engine::chat_template::{ChatMessage, ChatTemplate, Limit, TemplateError};

#[test]
fn hostile_templates_fail_quickly() {
    for case in hostile_templates::cases() {
        let took = hostile_templates::check(&case);
        eprintln!("{:>8.1} ms  {}", took.as_secs_f64() * 1e3, case.name);
    }
}

#[test]
fn limit_errors_name_the_template_and_the_limit() {
    let err = ChatTemplate::new(
        "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
        "",
        "",
    )
    .unwrap()
    .render(&[], false)
    .unwrap_err();
    assert!(
        matches!(err, TemplateError::Limit(Limit::Output)),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "chat template exceeded its output limit (16 MiB)"
    );
    // The error is one line and says it once: Display carries the message, no source repeats
    // it (anyhow prints the chain).
    let err = ChatTemplate::new("{{ x|frobnicate }}", "", "")
        .unwrap()
        .render(&[], false)
        .unwrap_err();
    let text = err.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(std::error::Error::source(&err).is_none(), "{text}");
    assert_eq!(text.matches("frobnicate").count(), 1, "{text}");
}

#[test]
fn every_limit_message_is_one_line_naming_the_chat_template() {
    use Limit::*;
    for limit in [
        Source, Tag, Steps, Work, Output, Memory, ValueSize, Depth, Recursion,
    ] {
        let text = TemplateError::Limit(limit).to_string();
        assert!(text.starts_with("chat template "), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }
    assert_eq!(
        Limit::Memory.to_string(),
        "chat template exceeded its memory limit (256 MiB of values built)"
    );
    assert_eq!(
        Limit::Steps.to_string(),
        "chat template ran too long (over 10000000 steps)"
    );
}

/// SmolLM2's template, Llama 3's, and one that prints tools as JSON, on 2,000 messages of
/// about 2 KiB (4 MiB of text): far from every limit.
#[test]
fn a_large_conversation_still_renders() {
    let messages: Vec<ChatMessage> = (0..2000)
        .map(|i| {
            let text = format!("message {i}: {}", "lorem ipsum dolor sit amet ".repeat(75));
            if i % 2 == 0 {
                ChatMessage::user(text)
            } else {
                ChatMessage::assistant(text)
            }
        })
        .collect();
    let smollm2 = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    let t0 = Instant::now();
    let text = ChatTemplate::new(smollm2, "", "")
        .unwrap()
        .render(&messages, true)
        .unwrap();
    eprintln!("SmolLM2, 2,000 messages: {:?}", t0.elapsed());
    let mut expected = String::from(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n",
    );
    for m in &messages {
        expected += &format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content);
    }
    expected += "<|im_start|>assistant\n";
    assert_eq!(text, expected);

    let llama3 = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
    let text = ChatTemplate::new(llama3, "<|begin_of_text|>", "")
        .unwrap()
        .render(&messages, true)
        .unwrap();
    assert!(text.len() > 4_000_000, "{}", text.len());

    // Every message as JSON, the whole conversation as JSON, and a namespace that keeps
    // state across the loop, as tool-calling templates do.
    let json = "{%- set ns = namespace(last_user=-1, system='') %}{%- for m in messages %}{%- if m.role == 'user' %}{% set ns.last_user = loop.index0 %}{% endif %}{%- endfor %}<history>{{ messages[:-1]|tojson }}</history>\n{%- for m in messages %}{{ m|tojson(indent=2) }}{% if loop.index0 == ns.last_user %}<last user>{% endif %}\n{% endfor %}";
    let text = ChatTemplate::new(json, "", "")
        .unwrap()
        .render(&messages, false)
        .unwrap();
    assert!(text.contains("<last user>"));
    assert!(text.len() > 8_000_000, "{}", text.len());
}
