//! The request bodies of the OpenAI API, parsed so that a malformed or wrongly typed field is a
//! 400 naming it, and fields that would change the answer but are not implemented are refused
//! rather than ignored.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

/// Parses a JSON body; errors name the field at fault (`messages[2].content`).
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("the body is not valid JSON: {inner}"))
        } else if path == "." {
            ApiError::bad_request(format!("invalid request body: {inner}"))
        } else {
            // serde's message ends with the position, which says little to an API client.
            let msg = inner.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg);
            ApiError::field(path.clone(), format!("invalid field `{path}`: {msg}"))
        }
    })
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    /// `null` for an assistant turn that only called tools.
    pub content: Option<Content>,
    pub tool_calls: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// The sampling and stopping fields both endpoints take (parsed from the same body as the
/// endpoint's own fields: serde's `flatten` would lose the path of a wrongly typed field).
#[derive(Debug, Default, Deserialize)]
pub struct Sampling {
    pub model: Option<String>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<Stop>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub logit_bias: Option<HashMap<String, f32>>,
    pub n: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
    // Answer-changing fields not implemented: refused by name.
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub functions: Option<Value>,
    pub function_call: Option<Value>,
    pub response_format: Option<Value>,
    pub audio: Option<Value>,
    pub prediction: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    /// The number of alternatives per token (legacy completions' integer `logprobs`).
    pub logprobs: Option<u32>,
    pub echo: Option<bool>,
    pub suffix: Option<String>,
    pub best_of: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub content: String,
    #[serde(default)]
    pub add_special: bool,
    #[serde(default = "yes")]
    pub parse_special: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    pub tokens: Vec<u32>,
}

/// Refuses a field that is present and not one of the values that mean "off".
pub fn refuse_unless(
    name: &str,
    v: &Option<Value>,
    off: impl Fn(&Value) -> bool,
) -> Result<(), ApiError> {
    match v {
        Some(v) if !v.is_null() && !off(v) => Err(ApiError::field(
            name,
            format!("`{name}` is not supported by this server yet"),
        )),
        _ => Ok(()),
    }
}

impl ChatRequest {
    /// Refuses what is parsed but not implemented.
    pub fn check_unsupported(&self) -> Result<(), ApiError> {
        refuse_unless("tools", &self.tools, |v| {
            v.as_array().is_some_and(|a| a.is_empty())
        })?;
        refuse_unless("tool_choice", &self.tool_choice, |v| v == "none")?;
        refuse_unless("functions", &self.functions, |v| {
            v.as_array().is_some_and(|a| a.is_empty())
        })?;
        refuse_unless("function_call", &self.function_call, |v| v == "none")?;
        refuse_unless("response_format", &self.response_format, |v| {
            v.get("type").and_then(Value::as_str) == Some("text")
        })?;
        refuse_unless("audio", &self.audio, |_| false)?;
        refuse_unless("prediction", &self.prediction, |_| false)?;
        Ok(())
    }
}

impl CompletionRequest {
    pub fn check_unsupported(&self) -> Result<(), ApiError> {
        if self.echo == Some(true) {
            return Err(ApiError::field(
                "echo",
                "`echo` is not supported by this server yet",
            ));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::field(
                "suffix",
                "`suffix` is not supported by this server yet",
            ));
        }
        if self.best_of.is_some_and(|b| b > 1) {
            return Err(ApiError::field(
                "best_of",
                "`best_of` above 1 is not supported by this server yet",
            ));
        }
        Ok(())
    }
}
