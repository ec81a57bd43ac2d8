//! A chat template (the Jinja source a GGUF carries) and a conversation: compiling gives a
//! template or an error, and rendering the conversation, whole and as a delta after its first
//! messages, gives text or an error, within the renderer's limits on time and output.
//!
//! Input: a 2-byte header (byte 0: bit 0 `add_generation_prompt`; byte 1: how many of the
//! messages form the earlier conversation of `render_delta`, modulo their count + 1), then
//! sections: 0 the template, 1 `bos_token`, 2 `eos_token`, then one section per message: the role,
//! an item separator, the content.

use rustorch_engine::chat_template::{ChatMessage, ChatTemplate};

use crate::input::{lossless, Parts, Writer, ITEM};

const HEADER: usize = 2;
/// A conversation longer than this says nothing new about the renderer.
pub const MAX_MESSAGES: usize = 32;
/// 2025-06-01 00:00 UTC: `strftime_now` reads a fixed clock, so a finding replays.
const FIXED_NOW: i64 = 1_748_736_000;

#[derive(Debug, Clone, PartialEq)]
pub struct ChatTemplateCase {
    pub add_generation_prompt: bool,
    /// Messages of the earlier conversation for `render_delta` (taken modulo `messages.len() + 1`).
    pub n_prev: u8,
    pub template: String,
    pub bos_token: String,
    pub eos_token: String,
    pub messages: Vec<ChatMessage>,
}

impl ChatTemplateCase {
    pub fn parse(data: &[u8]) -> ChatTemplateCase {
        let p = Parts::<HEADER>::split(data);
        let messages = (3..3 + MAX_MESSAGES)
            .map(|i| p.section(i))
            .take_while(|s| !s.is_empty())
            .map(|s| {
                let (role, content) = match s.iter().position(|&b| b == ITEM) {
                    Some(at) => (&s[..at], &s[at + 1..]),
                    None => (s, &[][..]),
                };
                ChatMessage::new(
                    String::from_utf8_lossy(role),
                    String::from_utf8_lossy(content),
                )
            })
            .collect();
        ChatTemplateCase {
            add_generation_prompt: p.header[0] & 1 != 0,
            n_prev: p.header[1],
            template: p.text(0),
            bos_token: p.text(1),
            eos_token: p.text(2),
            messages,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(&[u8::from(self.add_generation_prompt), self.n_prev]);
        w.section(lossless(&self.template))
            .section(lossless(&self.bos_token))
            .section(lossless(&self.eos_token));
        for m in &self.messages {
            // An empty role and content would end the list: such a message is written as a
            // lone separator, which reads back the same.
            w.items(&[lossless(&m.role), lossless(&m.content)]);
        }
        w.finish()
    }
}

pub fn chat_template(data: &[u8]) {
    let case = ChatTemplateCase::parse(data);
    let Ok(t) = ChatTemplate::new(&case.template, &case.bos_token, &case.eos_token) else {
        return;
    };
    let t = t.with_fixed_time(FIXED_NOW);
    // A conversation that does not render whole fails the same way in `render_delta`, which
    // renders it again: skipping that keeps templates that run into a limit at one rendering.
    if t.render(&case.messages, case.add_generation_prompt)
        .is_err()
    {
        return;
    }
    let n_prev = usize::from(case.n_prev) % (case.messages.len() + 1);
    let _ = t.render_delta(
        &case.messages[..n_prev],
        &case.messages,
        case.add_generation_prompt,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_round_trips_through_bytes() {
        let c = ChatTemplateCase {
            add_generation_prompt: true,
            n_prev: 1,
            template: "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}".into(),
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
            messages: vec![
                ChatMessage::user("hi"),
                ChatMessage::new("", ""),
                ChatMessage::assistant(""),
            ],
        };
        assert_eq!(ChatTemplateCase::parse(&c.to_bytes()), c);
        chat_template(&c.to_bytes());
    }

    #[test]
    fn any_bytes_are_an_input() {
        for data in [&b""[..], b"\x01\x05{{ x }}\xff\xff\xff\xfe", b"{%"] {
            chat_template(data);
        }
    }
}
