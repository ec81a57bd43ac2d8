//! Turn formats by name, for files without `tokenizer.chat_template` and for
//! `--chat-template NAME`: each architecture's known format, rendered by the same bounded renderer
//! as a file's template.

/// ChatML (`<|im_start|>role ... <|im_end|>`): Qwen, SmolLM, and the fallback for other files.
pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Gemma's turns (`<start_of_turn>user|model ... <end_of_turn>`), no system role: a system
/// message opens the first user turn, as Gemma 3's own template does.
pub const GEMMA: &str = "{{ bos_token }}{%- if messages and messages[0]['role'] == 'system' -%}{%- set first = messages[0]['content'] + '\n\n' -%}{%- set turns = messages[1:] -%}{%- else -%}{%- set first = '' -%}{%- set turns = messages -%}{%- endif -%}{%- for message in turns -%}{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' + (first if loop.first else '') + message['content'] | trim + '<end_of_turn>\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}";

/// Llama 3's header turns (`<|start_header_id|>role<|end_header_id|> ... <|eot_id|>`).
pub const LLAMA3: &str = "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/// Phi-3's turns (`<|user|> ... <|end|>`).
pub const PHI3: &str = "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}";

/// The names `--chat-template` takes.
pub const NAMES: &[&str] = &["chatml", "gemma", "llama3", "phi3"];

/// The format called `name`.
pub fn named(name: &str) -> Option<&'static str> {
    match name {
        "chatml" => Some(CHATML),
        "gemma" => Some(GEMMA),
        "llama3" => Some(LLAMA3),
        "phi3" => Some(PHI3),
        _ => None,
    }
}

/// The known format of architecture `arch` (`general.architecture`), by name and source: ChatML
/// where none is known.
pub fn for_architecture(arch: &str) -> (&'static str, &'static str) {
    match arch {
        "gemma" | "gemma2" | "gemma3" => ("gemma", GEMMA),
        "phi3" => ("phi3", PHI3),
        _ => ("chatml", CHATML),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat_template::{ChatMessage, ChatTemplate};

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn gemma_turns_with_a_system_message() {
        let t = ChatTemplate::new(GEMMA, "<bos>", "<eos>").unwrap();
        let out = t
            .render(
                &[
                    msg("system", "Be brief."),
                    msg("user", " Hi "),
                    msg("assistant", "Hello."),
                    msg("user", "Why?"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            out,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nWhy?<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn every_name_renders() {
        for name in NAMES {
            let t = ChatTemplate::new(named(name).unwrap(), "<s>", "</s>").unwrap();
            let out = t.render(&[msg("user", "x")], true).unwrap();
            assert!(out.contains('x'), "{name}: {out}");
        }
        assert_eq!(for_architecture("gemma3").0, "gemma");
        assert_eq!(for_architecture("qwen2").0, "chatml");
        assert_eq!(for_architecture("phi3").0, "phi3");
    }
}
