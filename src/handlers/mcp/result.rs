//! A `tools/call` answer as a task's outcome: `structuredContent` when the
//! tool gave it, else its `content` array, is the result; `isError` is a
//! failure carrying the tool's text; a result over `max_output` (as JSON)
//! is refused like any handler's output.

use serde_json::Value;

use super::super::HandlerError;

/// How much of a tool's error text goes into the failure message.
const ERROR_TEXT: usize = 4 * 1024;

pub(super) fn outcome(result: Value, max_output: usize) -> Result<Value, HandlerError> {
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        return Err(HandlerError::Failed(error_text(&result)));
    }
    let value = match result.get("structuredContent") {
        Some(structured) if !structured.is_null() => structured.clone(),
        _ => result.get("content").cloned().unwrap_or(Value::Array(Vec::new())),
    };
    if serde_json::to_vec(&value).map_or(0, |v| v.len()) > max_output {
        return Err(HandlerError::OutputTooLarge { limit: max_output });
    }
    Ok(value)
}

/// The text items of the content, joined; the content as JSON if it has none.
fn error_text(result: &Value) -> String {
    let content = result.get("content");
    let texts: Vec<&str> = content
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("text").and_then(Value::as_str))
        .collect();
    let text = if texts.is_empty() {
        content
            .map(Value::to_string)
            .unwrap_or_else(|| "the tool failed".into())
    } else {
        texts.join("\n")
    };
    let mut text = text.trim().to_owned();
    if text.len() > ERROR_TEXT {
        let mut cut = ERROR_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn structured_content_wins_over_content() {
        let r = json!({ "content": [{ "type": "text", "text": "{\"n\":1}" }], "structuredContent": { "n": 1 } });
        assert_eq!(outcome(r, 1024).unwrap(), json!({ "n": 1 }));
        let r = json!({ "content": [{ "type": "text", "text": "hi" }] });
        assert_eq!(outcome(r, 1024).unwrap(), json!([{ "type": "text", "text": "hi" }]));
    }

    #[test]
    fn errors_carry_the_tools_text_and_results_are_bounded() {
        let r = json!({ "content": [{ "type": "text", "text": "no such city" }], "isError": true });
        assert!(matches!(outcome(r, 1024), Err(HandlerError::Failed(m)) if m == "no such city"));
        let r = json!({ "structuredContent": { "s": "x".repeat(100) } });
        assert!(matches!(
            outcome(r, 50),
            Err(HandlerError::OutputTooLarge { limit: 50 })
        ));
    }
}
