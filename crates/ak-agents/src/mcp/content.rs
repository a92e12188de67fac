//! MCP tool results as the model reads them. Every content block of a result reaches the
//! model in a form it can use (MCP 2025-11-25 content types):
//!
//! | block | what the model gets |
//! |---|---|
//! | `text` | the text (a lone text block that is JSON, as that JSON) |
//! | `image` (PNG, JPEG, GIF, WebP, ≤ 3.75 MB) | a placeholder naming it in the result, and the image itself as an attachment the model request carries after the tool results (`mcp.attach_images`) |
//! | other images, `audio` | a placeholder naming the type and size |
//! | `resource` with text | `[resource <uri> (<mime>)]` and the text |
//! | `resource` with a blob | an image type as an image above; else a placeholder |
//! | `resource_link` | `[resource link] <name> — <description> <uri> (<mime>)`; not fetched |
//!
//! The result is `{"result": ...}` — the structured content when the server gave one (with
//! `"content"` listing what its non-text blocks were), else the blocks as above — or
//! `{"error": ...}` for a result flagged `isError`. Text beyond [`MAX_RESULT_BYTES`] is cut,
//! with `"truncated": true` and the full size.

use super::ToolOutput;
use base64::Engine;
use rmcp::model::{CallToolResult, ContentBlock, ResourceContents};
use serde_json::{Value, json};

/// Most bytes of a tool result's text sent to the model; a larger one is cut, saying so.
pub const MAX_RESULT_BYTES: usize = 100_000;

/// Largest image attached (decoded), Bedrock Converse's limit per image.
const MAX_IMAGE_BYTES: usize = 3_750_000;

/// Most images attached from one result.
const MAX_IMAGES: usize = 5;

/// Image types every image-reading model API takes (Chat Completions, Converse).
const IMAGE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];

/// The text of a result's text blocks.
pub(super) fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Text(text) => Some(text.text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A size in words: `5.3 kB`.
fn size(bytes: usize) -> String {
    if bytes < 1000 {
        format!("{bytes} B")
    } else if bytes < 1_000_000 {
        format!("{:.1} kB", bytes as f64 / 1000.0)
    } else {
        format!("{:.1} MB", bytes as f64 / 1_000_000.0)
    }
}

/// Reads blocks into text for the model, collecting images to attach.
struct Reader {
    attach: bool,
    attachments: Vec<Value>,
}

impl Reader {
    /// An image (or image resource): attached when it can be, else a placeholder.
    fn image(&mut self, mime: &str, data: &str, what: &str) -> String {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .ok();
        let Some(decoded) = decoded else {
            return format!("[{what}: {mime}, not valid base64, not shown]");
        };
        let mime = mime.to_ascii_lowercase();
        let reason = if !self.attach {
            "not shown: this model is not sent images"
        } else if !IMAGE_TYPES.contains(&mime.as_str()) {
            "not shown: a type models do not take"
        } else if decoded.len() > MAX_IMAGE_BYTES {
            "not shown: larger than 3.75 MB"
        } else if self.attachments.len() >= MAX_IMAGES {
            "not shown: more than 5 images in one result"
        } else {
            self.attachments
                .push(json!({"type": "image", "mime_type": mime, "data": data.trim()}));
            return format!(
                "[{what} {}: {mime}, {}, attached after the tool results]",
                self.attachments.len(),
                size(decoded.len())
            );
        };
        format!("[{what}: {mime}, {}, {reason}]", size(decoded.len()))
    }

    /// One block as text (`None`: a text block, taken as is by the caller).
    fn block(&mut self, block: &ContentBlock) -> String {
        match block {
            ContentBlock::Text(text) => text.text.clone(),
            ContentBlock::Image(image) => self.image(&image.mime_type, &image.data, "image"),
            ContentBlock::Audio(audio) => {
                let bytes = audio.data.trim().len() / 4 * 3;
                format!("[audio: {}, {}, not shown]", audio.mime_type, size(bytes))
            }
            ContentBlock::Resource(embedded) => match &embedded.resource {
                ResourceContents::TextResourceContents {
                    uri,
                    mime_type,
                    text,
                    ..
                } => match mime_type {
                    Some(mime) => format!("[resource {uri} ({mime})]\n{text}"),
                    None => format!("[resource {uri}]\n{text}"),
                },
                ResourceContents::BlobResourceContents {
                    uri,
                    mime_type,
                    blob,
                    ..
                } => {
                    let mime = mime_type.as_deref().unwrap_or("application/octet-stream");
                    if mime.starts_with("image/") {
                        self.image(mime, blob, &format!("resource {uri}, image"))
                    } else {
                        let bytes = blob.trim().len() / 4 * 3;
                        format!("[resource {uri}: {mime}, {}, not shown]", size(bytes))
                    }
                }
                #[allow(unreachable_patterns)]
                _ => "[a resource of a kind not known here]".to_owned(),
            },
            ContentBlock::ResourceLink(link) => {
                let mut text = format!("[resource link] {}", link.name);
                if let Some(description) = link.description.as_deref().filter(|d| !d.is_empty()) {
                    text.push_str(" — ");
                    text.push_str(description);
                }
                text.push_str(&format!(" <{}>", link.uri));
                if let Some(mime) = &link.mime_type {
                    text.push_str(&format!(" ({mime})"));
                }
                text
            }
            #[allow(unreachable_patterns)]
            _ => "[a content block of a kind not known here]".to_owned(),
        }
    }
}

/// A tool result as the model reads it (see the module's table); `attach_images` says
/// whether images go to the model (else placeholders).
pub fn result_for_model(result: &CallToolResult, attach_images: bool) -> ToolOutput {
    let mut reader = Reader {
        attach: attach_images && result.is_error != Some(true),
        attachments: Vec::new(),
    };
    let only_text = result
        .content
        .iter()
        .all(|b| matches!(b, ContentBlock::Text(_)));
    let structured = result.structured_content.is_some() && result.is_error != Some(true);
    let text = if only_text || structured {
        text_of(result)
    } else {
        result
            .content
            .iter()
            .map(|b| reader.block(b))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if result.is_error == Some(true) {
        let message = if text.is_empty() {
            "the tool failed".to_owned()
        } else {
            text
        };
        return ToolOutput {
            value: json!({"error": cut(&message)}),
            attachments: Vec::new(),
        };
    }
    let mut value = match &result.structured_content {
        Some(structured) => json!({"result": structured}),
        None if only_text => {
            json!({"result": serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text.clone()))})
        }
        None => json!({"result": text}),
    };
    if structured && !only_text {
        let others: Vec<String> = result
            .content
            .iter()
            .filter(|b| !matches!(b, ContentBlock::Text(_)))
            .map(|b| reader.block(b))
            .collect();
        value["content"] = json!(others);
    }
    let bytes = value.to_string().len();
    if bytes > MAX_RESULT_BYTES {
        let text = match value["result"].take() {
            Value::String(text) => text,
            other => other.to_string(),
        };
        value = json!({"result": cut(&text), "truncated": true, "bytes": bytes});
    }
    ToolOutput {
        value,
        attachments: reader.attachments,
    }
}

/// `text` cut to [`MAX_RESULT_BYTES`] at a character boundary.
fn cut(text: &str) -> String {
    if text.len() <= MAX_RESULT_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_RESULT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(value: Value) -> CallToolResult {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A 1×1 PNG.
    const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

    #[test]
    fn results_carry_text_json_structured_content_and_errors() {
        let ok = result(json!({
            "content": [{"type": "text", "text": "{\"sum\": 5}"}],
            "structuredContent": {"sum": 5}
        }));
        assert_eq!(
            result_for_model(&ok, true).value,
            json!({"result": {"sum": 5}})
        );
        let huge = result(json!({
            "content": [{"type": "text", "text": "é".repeat(MAX_RESULT_BYTES)}]
        }));
        let cut = result_for_model(&huge, true).value;
        assert_eq!(cut["truncated"], true);
        assert!(
            cut["result"]
                .as_str()
                .is_some_and(|t| t.len() <= MAX_RESULT_BYTES)
        );
        let failed = result(json!({
            "content": [{"type": "text", "text": "division by zero"}], "isError": true
        }));
        assert_eq!(
            result_for_model(&failed, true).value,
            json!({"error": "division by zero"})
        );
    }

    #[test]
    fn images_links_and_resources_reach_the_model() {
        let mixed = result(json!({"content": [
            {"type": "text", "text": "Here it is:"},
            {"type": "image", "mimeType": "image/png", "data": PNG},
            {"type": "resource_link", "uri": "demo://r/1", "name": "one", "description": "the first", "mimeType": "text/plain"},
            {"type": "resource", "resource": {"uri": "demo://r/2", "mimeType": "text/plain", "text": "inside"}},
            {"type": "audio", "mimeType": "audio/wav", "data": "AAAA"},
            {"type": "image", "mimeType": "image/tiff", "data": PNG}
        ]}));
        let output = result_for_model(&mixed, true);
        let text = output.value["result"].as_str().unwrap_or_default();
        assert!(text.contains("Here it is:"), "{text}");
        assert!(
            text.contains("[image 1: image/png, 70 B, attached after the tool results]"),
            "{text}"
        );
        assert!(
            text.contains("[resource link] one — the first <demo://r/1> (text/plain)"),
            "{text}"
        );
        assert!(
            text.contains("[resource demo://r/2 (text/plain)]\ninside"),
            "{text}"
        );
        assert!(
            text.contains("[audio: audio/wav, 3 B, not shown]"),
            "{text}"
        );
        assert!(
            text.contains("[image: image/tiff, 70 B, not shown: a type models do not take]"),
            "{text}"
        );
        assert_eq!(
            output.attachments,
            vec![json!({"type": "image", "mime_type": "image/png", "data": PNG})]
        );
        let placeholders = result_for_model(&mixed, false);
        assert!(placeholders.attachments.is_empty());
        assert!(placeholders.value["result"].as_str().is_some_and(|t| {
            t.contains("[image: image/png, 70 B, not shown: this model is not sent images]")
        }));
        let structured = result(json!({
            "content": [{"type": "text", "text": "{}"}, {"type": "image", "mimeType": "image/png", "data": PNG}],
            "structuredContent": {"ok": true}
        }));
        let output = result_for_model(&structured, true);
        assert_eq!(output.value["result"], json!({"ok": true}));
        assert_eq!(output.attachments.len(), 1);
        assert_eq!(output.value["content"].as_array().map(Vec::len), Some(1));
    }
}
