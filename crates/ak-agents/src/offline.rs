//! The offline model: deterministic answers with no network, so `scripts/dev.sh` runs without
//! an API key. Every answer says it comes from the offline model. Lambda functions never fall
//! back to it silently; it is used there only when `model.provider: offline` is set.
//!
//! Routing: an agent with handoffs hands off to the target whose name or handoff description
//! matches the prompt — shared words (with simple stemming: "historical" matches "history"),
//! arithmetic for an agent about math, past events (battle, king, century, ...) for an agent
//! about history. Otherwise the agent answers: arithmetic is worked out, anything else is
//! echoed with a note on how to get real answers.

use crate::model::{
    FinishReason, ModelError, ModelProvider, ModelReply, ModelRequest, ToolCall, Usage,
};
use async_trait::async_trait;
use serde_json::Value;

/// Prefix of every offline answer.
pub const LABEL: &str = "[offline model]";

const STOP_WORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "is",
    "are",
    "was",
    "were",
    "of",
    "for",
    "to",
    "in",
    "on",
    "and",
    "or",
    "what",
    "who",
    "how",
    "why",
    "when",
    "which",
    "agent",
    "specialist",
    "questions",
    "question",
    "handoff",
    "handle",
    "request",
    "me",
    "you",
    "i",
    "it",
    "this",
    "that",
    "with",
    "about",
    "please",
    "can",
    "do",
    "does",
    "did",
    "tell",
];

const HISTORY_WORDS: &[&str] = &[
    "battle",
    "war",
    "king",
    "queen",
    "emperor",
    "empire",
    "century",
    "ancient",
    "revolution",
    "dynasty",
    "founded",
    "invaded",
    "invasion",
    "treaty",
    "medieval",
    "pharaoh",
    "conquest",
    "won",
    "reign",
    "historical",
    "history",
    "civilization",
    "kingdom",
];

const MATH_WORDS: &[&str] = &[
    "math",
    "sum",
    "plus",
    "minus",
    "times",
    "multiply",
    "divide",
    "equation",
    "calculate",
    "integral",
    "derivative",
    "algebra",
    "geometry",
    "square",
    "root",
    "percent",
];

/// The deterministic offline model.
#[derive(Debug, Default, Clone, Copy)]
pub struct OfflineModel;

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .collect()
}

/// "historical" and "history" share "histo": compare the first five characters of longer words.
fn stem(word: &str) -> &str {
    match word.char_indices().nth(5) {
        Some((end, _)) => &word[..end],
        None => word,
    }
}

/// `a op b` somewhere in the text, worked out.
fn arithmetic(text: &str) -> Option<(String, f64)> {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if "0123456789.+-*/x× ".contains(c) {
                c
            } else {
                ' '
            }
        })
        .collect();
    let tokens: Vec<&str> = cleaned.split_whitespace().collect();
    tokens.windows(3).find_map(|w| {
        let a: f64 = w[0].parse().ok()?;
        let b: f64 = w[2].parse().ok()?;
        let value = match w[1] {
            "+" => a + b,
            "-" => a - b,
            "*" | "x" | "×" => a * b,
            "/" if b != 0.0 => a / b,
            _ => return None,
        };
        Some((format!("{} {} {}", w[0], w[1], w[2]), value))
    })
}

/// The integer factors of a product in the text (`12 * 7`, `12 x 7`, `12 × 7`).
fn integer_product(text: &str) -> Option<(i64, i64)> {
    let (expr, _) = arithmetic(text)?;
    let mut parts = expr.split(' ');
    let a = parts.next()?.parse().ok()?;
    let op = parts.next()?;
    let b = parts.next()?.parse().ok()?;
    matches!(op, "*" | "x" | "×").then_some((a, b))
}

/// The messages since the user's last one (this turn's calls and results).
fn this_turn(messages: &[Value]) -> &[Value] {
    let start = messages
        .iter()
        .rposition(|m| m["role"] == "user")
        .map_or(0, |i| i + 1);
    &messages[start..]
}

/// What a call of tool `name` in this turn returned, as JSON.
fn tool_result(messages: &[Value], name: &str) -> Option<Value> {
    let turn = this_turn(messages);
    let ids: Vec<&str> = turn
        .iter()
        .filter_map(|m| m["tool_calls"].as_array())
        .flatten()
        .filter(|c| c["function"]["name"] == name)
        .filter_map(|c| c["id"].as_str())
        .collect();
    turn.iter()
        .filter(|m| m["role"] == "tool")
        .find(|m| {
            m["tool_call_id"]
                .as_str()
                .is_some_and(|id| ids.contains(&id))
        })
        .and_then(|m| m["content"].as_str())
        .map(|text| serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())))
}

fn topic_score(target_words: &[String], prompt: &str) -> usize {
    let prompt_words = words(prompt);
    let shared = target_words
        .iter()
        .filter(|t| prompt_words.iter().any(|p| stem(p) == stem(t)))
        .count();
    let about = |topic: &str| target_words.iter().any(|t| stem(t) == stem(topic));
    let mut score = shared * 2;
    if about("math")
        && (arithmetic(prompt).is_some()
            || prompt_words
                .iter()
                .any(|w| MATH_WORDS.contains(&w.as_str())))
    {
        score += 3;
    }
    if about("history")
        && prompt_words
            .iter()
            .any(|w| HISTORY_WORDS.contains(&w.as_str()))
    {
        score += 3;
    }
    score
}

fn last_user_text(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value:.6}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    }
}

#[async_trait]
impl ModelProvider for OfflineModel {
    fn name(&self) -> &'static str {
        "offline"
    }

    async fn complete(&self, request: &ModelRequest) -> Result<ModelReply, ModelError> {
        let prompt = last_user_text(&request.messages);
        let just_handed_off = request.messages.last().is_some_and(|m| m["role"] == "tool");
        let usage = Usage {
            prompt_tokens: words(&prompt).len() as u64,
            completion_tokens: 0,
            total_tokens: words(&prompt).len() as u64,
        };
        if !just_handed_off {
            let best = request
                .tools
                .iter()
                .filter_map(|tool| {
                    let target = tool.name.strip_prefix("transfer_to_")?;
                    let mut target_words = words(target);
                    target_words.extend(words(&tool.description));
                    let score = topic_score(&target_words, &prompt);
                    (score > 0).then_some((score, tool.name.clone()))
                })
                .max_by_key(|(score, _)| *score);
            if let Some((_, name)) = best {
                return Ok(ModelReply {
                    content: None,
                    tool_calls: vec![ToolCall {
                        id: format!("offline-{name}"),
                        name,
                        arguments: "{}".to_owned(),
                        extra: None,
                    }],
                    finish: FinishReason::ToolCalls,
                    usage,
                    ..ModelReply::default()
                });
            }
        }
        // An agent with a `multiply` tool gets a product from it, as a real model would.
        let multiply = request.tools.iter().any(|t| t.name == "multiply");
        let product = integer_product(&prompt).filter(|_| multiply);
        let from_tool = tool_result(&request.messages, "multiply");
        if let (Some((a, b)), None) = (product, &from_tool) {
            return Ok(ModelReply {
                content: None,
                tool_calls: vec![ToolCall {
                    id: "offline-multiply".to_owned(),
                    name: "multiply".to_owned(),
                    arguments: serde_json::json!({"a": a, "b": b}).to_string(),
                    extra: None,
                }],
                finish: FinishReason::ToolCalls,
                usage,
                ..ModelReply::default()
            });
        }
        let text = match (arithmetic(&prompt), from_tool) {
            (Some((expr, _)), Some(result)) if product.is_some() => format!(
                "{LABEL} {}: {expr} = {}",
                request.agent,
                result
                    .get("product")
                    .map_or_else(|| result.to_string(), Value::to_string)
            ),
            (Some((expr, value)), _) => format!(
                "{LABEL} {}: {expr} = {}",
                request.agent,
                format_number(value)
            ),
            (None, _) => format!(
                "{LABEL} {} received: {prompt:?}. This is a canned local answer; set OPENAI_API_KEY \
                 (and optionally OPENAI_BASE_URL) for real ones.",
                request.agent
            ),
        };
        // Streamed word by word, as a real model would, so local runs show streaming too.
        if let Some(sink) = &request.on_text {
            for piece in text.split_inclusive(' ') {
                sink.send(piece);
            }
        }
        Ok(ModelReply {
            content: Some(text),
            usage: Usage {
                completion_tokens: 1,
                total_tokens: usage.total_tokens + 1,
                ..usage
            },
            ..ModelReply::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_cut_at_characters_not_bytes() {
        assert_eq!(stem("historical"), "histo");
        assert_eq!(stem("math"), "math");
        assert_eq!(stem("ééééééé"), "ééééé");
        assert_eq!(
            stem("a\u{10348}\u{10348}\u{10348}\u{10348}xyz"),
            "a\u{10348}\u{10348}\u{10348}\u{10348}"
        );
        assert!(topic_score(&words("Specialist agent for math"), "ü¿ñ 🦀 résumé").eq(&0));
    }
    use crate::model::ToolSpec;
    use serde_json::json;

    fn triage_request(prompt: &str) -> ModelRequest {
        let handoff = |name: &str, what: &str| ToolSpec {
            name: format!("transfer_to_{name}"),
            description: format!(
                "Handoff to the {name} agent. Specialist agent for {what} questions"
            ),
            parameters: json!({"type": "object", "properties": {}}),
        };
        ModelRequest {
            model: "offline".into(),
            agent: "triage".into(),
            messages: vec![
                json!({"role": "system", "content": "route"}),
                json!({"role": "user", "content": prompt}),
            ],
            tools: vec![handoff("history", "historical"), handoff("math", "math")],
            deadline: None,
            on_text: None,
        }
    }

    async fn route(prompt: &str) -> Option<String> {
        let reply = OfflineModel.complete(&triage_request(prompt)).await.ok()?;
        reply.tool_calls.first().map(|c| c.name.clone())
    }

    #[tokio::test]
    async fn triage_routes_by_topic() {
        assert_eq!(
            route("what is 12 * 7").await.as_deref(),
            Some("transfer_to_math")
        );
        assert_eq!(
            route("who won the battle of Hastings").await.as_deref(),
            Some("transfer_to_history")
        );
        assert_eq!(
            route("tell me about the history of Rome").await.as_deref(),
            Some("transfer_to_history")
        );
        assert_eq!(
            route("solve this equation for x").await.as_deref(),
            Some("transfer_to_math")
        );
        assert_eq!(
            route("hello there").await,
            None,
            "nothing matches: triage answers itself"
        );
    }

    #[tokio::test]
    async fn an_agent_with_multiply_calls_it_and_answers_with_its_result() {
        let mut request = triage_request("what is 12 * 7");
        request.agent = "math".into();
        request.tools = vec![crate::model::ToolSpec {
            name: "multiply".into(),
            description: "Multiplies two integers".into(),
            parameters: json!({}),
        }];
        let reply = OfflineModel.complete(&request).await.unwrap_or_default();
        let call = reply.tool_calls.first().cloned().unwrap_or_default();
        assert_eq!(call.name, "multiply");
        assert_eq!(
            serde_json::from_str::<Value>(&call.arguments).unwrap_or_default(),
            json!({"a": 12, "b": 7})
        );
        request.messages.push(json!({"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "multiply", "arguments": call.arguments}}
        ]}));
        request
            .messages
            .push(json!({"role": "tool", "tool_call_id": "c1", "content": "{\"product\":84}"}));
        let reply = OfflineModel.complete(&request).await.unwrap_or_default();
        assert!(reply.tool_calls.is_empty());
        let text = reply.content.unwrap_or_default();
        assert!(text.ends_with("math: 12 * 7 = 84"), "{text}");
    }

    #[tokio::test]
    async fn specialists_answer_with_a_label_and_do_the_sums() {
        let mut request = triage_request("what is 12 * 7");
        request.agent = "math".into();
        request
            .messages
            .push(json!({"role": "tool", "tool_call_id": "x", "content": "{}"}));
        let reply = OfflineModel.complete(&request).await.unwrap_or_default();
        let text = reply.content.unwrap_or_default();
        assert!(text.starts_with(LABEL), "{text}");
        assert!(text.contains("12 * 7 = 84"), "{text}");
        assert!(reply.tool_calls.is_empty());

        request.messages[1] = json!({"role": "user", "content": "who won the battle of Hastings"});
        request.agent = "history".into();
        let text = OfflineModel
            .complete(&request)
            .await
            .unwrap_or_default()
            .content
            .unwrap_or_default();
        assert!(
            text.contains("OPENAI_API_KEY") && text.contains("Hastings"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn answers_are_deterministic() {
        let a = OfflineModel
            .complete(&triage_request("what is 3 / 4"))
            .await
            .unwrap_or_default();
        let b = OfflineModel
            .complete(&triage_request("what is 3 / 4"))
            .await
            .unwrap_or_default();
        assert_eq!(a, b);
        assert_eq!(format_number(0.75), "0.75");
    }
}
