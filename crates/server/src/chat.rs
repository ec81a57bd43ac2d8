//! Chat messages to prompt tokens, and the model's `<think>` part of an answer split out as
//! `reasoning_content`.

use rustorch_engine::chat_template::{literal_ranges, ChatMessage, ChatTemplate};
use rustorch_tokenizer::Tokenizer;

use crate::api::{Content, Message};
use crate::error::ApiError;

/// The messages of a request as the template takes them.
pub fn messages(msgs: &[Message]) -> Result<Vec<ChatMessage>, ApiError> {
    if msgs.is_empty() {
        return Err(ApiError::field("messages", "`messages` must not be empty"));
    }
    msgs.iter()
        .enumerate()
        .map(|(i, m)| {
            if m.tool_calls.as_ref().is_some_and(|v| !v.is_null()) {
                return Err(ApiError::field(
                    format!("messages[{i}].tool_calls"),
                    "tool calls are not supported by this server yet",
                ));
            }
            let role = match m.role.as_str() {
                // OpenAI's newer name for the system role.
                "developer" => "system",
                r @ ("system" | "user" | "assistant") => r,
                other => {
                    return Err(ApiError::field(
                        format!("messages[{i}].role"),
                        format!(
                            "role `{}` is not supported (system, developer, user, assistant)",
                            other.escape_debug()
                        ),
                    ))
                }
            };
            let content = match &m.content {
                None => String::new(),
                Some(Content::Text(s)) => s.clone(),
                Some(Content::Parts(parts)) => {
                    let mut s = String::new();
                    for (j, p) in parts.iter().enumerate() {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => s.push_str(t),
                            _ => {
                                return Err(ApiError::field(
                                    format!("messages[{i}].content[{j}]"),
                                    "only text parts ({\"type\": \"text\", \"text\": ...}) are supported",
                                ))
                            }
                        }
                    }
                    s
                }
            };
            Ok(ChatMessage::new(role, content))
        })
        .collect()
}

/// Renders the conversation and tokenizes it. The template's own special tokens
/// (`<|im_start|>`) become tokens; the same text inside a message stays text, so a user cannot
/// forge turns.
pub fn prompt(
    template: &ChatTemplate,
    tok: &Tokenizer,
    msgs: &[ChatMessage],
) -> Result<(String, Vec<u32>), ApiError> {
    let full = template
        .render(msgs, true)
        .map_err(|e| ApiError::field("messages", format!("chat template: {e}")))?;
    // A template that writes BOS itself, for a vocabulary that adds it: only one BOS (as
    // llama.cpp does).
    let bos = template.bos_token();
    let skip = if !bos.is_empty() && tok.add_bos() && full.starts_with(bos) {
        bos.len()
    } else {
        0
    };
    let text = &full[skip..];
    let ids = match literal_ranges(text, msgs) {
        Some(ranges) => tok.encode_with_literals(text, true, &ranges),
        None => {
            // The template changed some message beyond trimming, so its text cannot be told
            // apart from the template's: refuse only if that text holds a control token's.
            let forged = msgs.iter().any(|m| {
                tok.encode(&m.content, false, true) != tok.encode(&m.content, false, false)
            });
            if forged {
                return Err(ApiError::field(
                    "messages",
                    "a message holds the text of a control token, and this model's chat template \
                     rewrites messages so that it cannot be kept as text",
                ));
            }
            tok.encode(text, true, true)
        }
    };
    Ok((text.to_string(), ids))
}

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing but whitespace so far: an opening tag may still come.
    Start,
    Thinking,
    Answer,
}

/// Splits streamed text into reasoning (inside `<think>…</think>`) and the answer, holding back
/// text that may be the start of a tag until it is decided.
#[derive(Debug)]
pub struct Reasoning {
    mode: Mode,
    held: String,
}

impl Reasoning {
    /// `enabled`: the model thinks in `<think>` tags (its vocabulary has them); `opened`: the
    /// prompt already ends with `<think>` (templates that open the block for the model).
    pub fn new(enabled: bool, opened: bool) -> Reasoning {
        let mode = match (enabled, opened) {
            (false, _) => Mode::Answer,
            (true, true) => Mode::Thinking,
            (true, false) => Mode::Start,
        };
        Reasoning {
            mode,
            held: String::new(),
        }
    }

    /// Text in; (reasoning, answer) out.
    pub fn push(&mut self, text: &str) -> (String, String) {
        let (mut reasoning, mut answer) = (String::new(), String::new());
        self.held.push_str(text);
        loop {
            match self.mode {
                Mode::Answer => {
                    answer.push_str(&std::mem::take(&mut self.held));
                    break;
                }
                Mode::Start => {
                    let t = self.held.trim_start();
                    if t.starts_with(OPEN) {
                        let at = self.held.len() - t.len() + OPEN.len();
                        self.held.drain(..at);
                        self.mode = Mode::Thinking;
                    } else if t.is_empty() || OPEN.starts_with(t) {
                        break;
                    } else {
                        self.mode = Mode::Answer;
                    }
                }
                Mode::Thinking => {
                    if let Some(at) = self.held.find(CLOSE) {
                        reasoning.push_str(&self.held[..at]);
                        let rest = self.held[at + CLOSE.len()..].trim_start().to_string();
                        self.held = rest;
                        self.mode = Mode::Answer;
                    } else {
                        // Keep what may be the start of the closing tag.
                        let keep = (1..CLOSE.len())
                            .rev()
                            .find(|&k| self.held.ends_with(&CLOSE[..k]))
                            .unwrap_or(0);
                        let cut = self.held.len() - keep;
                        reasoning.push_str(&self.held[..cut]);
                        self.held.drain(..cut);
                        break;
                    }
                }
            }
        }
        (reasoning, answer)
    }

    /// The end of the generation: what is held goes where it was headed.
    pub fn finish(&mut self) -> (String, String) {
        let held = std::mem::take(&mut self.held);
        match self.mode {
            Mode::Thinking => (held, String::new()),
            _ => (String::new(), held),
        }
    }
}

/// Whether the prompt leaves the model inside an open `<think>` block.
pub fn opens_thinking(prompt: &str) -> bool {
    let t = prompt.trim_end();
    t.ends_with(OPEN)
}

/// Whether a vocabulary has the `<think>` tags.
pub fn thinks(tok: &Tokenizer) -> bool {
    tok.token_id(OPEN).is_some() && tok.token_id(CLOSE).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(r: &mut Reasoning, pieces: &[&str]) -> (String, String) {
        let (mut a, mut b) = (String::new(), String::new());
        for p in pieces {
            let (x, y) = r.push(p);
            a += &x;
            b += &y;
        }
        let (x, y) = r.finish();
        (a + &x, b + &y)
    }

    #[test]
    fn splits_think_tags_across_pieces() {
        let mut r = Reasoning::new(true, false);
        let (think, answer) = run(
            &mut r,
            &["<th", "ink>\nlet me", " see</th", "ink>\n\nIt is 4."],
        );
        assert_eq!(think, "\nlet me see");
        assert_eq!(answer, "It is 4.");
    }

    #[test]
    fn prompt_opened_block() {
        let mut r = Reasoning::new(true, true);
        let (think, answer) = run(&mut r, &["hmm", "</think>", "yes"]);
        assert_eq!((think.as_str(), answer.as_str()), ("hmm", "yes"));
    }

    #[test]
    fn no_tags_is_all_answer() {
        let mut r = Reasoning::new(true, false);
        let (think, answer) = run(&mut r, &["  ", "<b>bold</b>", " text"]);
        assert_eq!(
            (think.as_str(), answer.as_str()),
            ("", "  <b>bold</b> text")
        );
        let mut off = Reasoning::new(false, false);
        let (think, answer) = run(&mut off, &["<think>x</think>y"]);
        assert_eq!((think.as_str(), answer.as_str()), ("", "<think>x</think>y"));
    }

    #[test]
    fn unfinished_thinking_stays_reasoning() {
        let mut r = Reasoning::new(true, false);
        let (think, answer) = run(&mut r, &["<think>still going</"]);
        assert_eq!((think.as_str(), answer.as_str()), ("still going</", ""));
    }
}
