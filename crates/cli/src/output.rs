//! Printing results: `--query` (JMESPath) then `-o json|jsonc|table|tsv|none`, as `az` does.

use serde_json::Value;

use crate::args::Output;

/// Applies a JMESPath expression to `value`.
pub fn query(value: &Value, expr: &str) -> anyhow::Result<Value> {
    let compiled = jmespath::compile(expr).map_err(|e| anyhow::anyhow!("invalid --query: {e}"))?;
    let result = compiled
        .search(value)
        .map_err(|e| anyhow::anyhow!("--query failed: {e}"))?;
    Ok(serde_json::to_value(&*result)?)
}

/// Renders `value` in `format`; `None` when nothing is to be printed.
pub fn render(value: &Value, format: Output) -> Option<String> {
    match format {
        Output::None => None,
        Output::Json => serde_json::to_string_pretty(value).ok().map(|s| s + "\n"),
        Output::Jsonc => serde_json::to_string(value).ok().map(|s| s + "\n"),
        Output::Tsv => Some(tsv(value)),
        Output::Table => Some(table(value)),
    }
}

/// A scalar as a user reads it: strings without quotes, null as nothing.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some(String::new()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// One line per element; an object's scalar members tab-separated; nested values are skipped
/// (that is what makes `--query x -o tsv` usable in `$(…)`).
fn tsv(value: &Value) -> String {
    let rows: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut out = String::new();
    for row in rows {
        let line = match row {
            Value::Object(m) => m.values().filter_map(scalar).collect::<Vec<_>>().join("\t"),
            Value::Array(a) => a.iter().filter_map(scalar).collect::<Vec<_>>().join("\t"),
            v => scalar(v).unwrap_or_default(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn header(key: &str) -> String {
    let mut c = key.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Columns are the scalar members of the objects, in first-seen order.
fn table(value: &Value) -> String {
    let rows: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    };
    let mut columns: Vec<String> = Vec::new();
    for row in &rows {
        match row {
            Value::Object(m) => {
                for (k, v) in m {
                    if scalar(v).is_some() && !columns.contains(k) {
                        columns.push(k.clone());
                    }
                }
            }
            _ => {
                if !columns.iter().any(|c| c == "Result") {
                    columns.push("Result".into());
                }
            }
        }
    }
    if columns.is_empty() {
        return String::new();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| match row {
                    Value::Object(m) => m.get(c).and_then(scalar).unwrap_or_default(),
                    v => scalar(v).unwrap_or_default(),
                })
                .collect()
        })
        .collect();
    let headers: Vec<String> = columns.iter().map(|c| header(c)).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([headers[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |items: &[String]| -> String {
        let padded: Vec<String> = items
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(&headers);
    out.push_str(&line(
        &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
    ));
    for r in &cells {
        out.push_str(&line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tsv_of_scalar_object_and_list() {
        assert_eq!(tsv(&json!("abc")), "abc\n");
        assert_eq!(tsv(&json!({"a": "x", "b": 2, "n": {"deep": 1}})), "x\t2\n");
        assert_eq!(tsv(&json!([{"a": "x"}, {"a": "y"}])), "x\ny\n");
    }

    #[test]
    fn table_has_header_rule_and_padded_rows() {
        let t = table(
            &json!([{"name": "a", "location": "here", "tags": {}}, {"name": "bbbb", "location": "x"}]),
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].starts_with("Location") && lines[0].contains("Name"),
            "{t}"
        );
        assert!(lines[1].starts_with("--------"), "{t}");
        assert!(lines[3].contains("bbbb"), "{t}");
        assert!(!t.contains("Tags"), "{t}");
    }

    #[test]
    fn query_projects_like_az() {
        let v =
            json!({"name": "p", "location": "l", "properties": {"provisioningState": "Succeeded"}});
        let q = query(
            &v,
            "{name:name, location:location, provisioningState:properties.provisioningState}",
        )
        .unwrap();
        assert_eq!(
            q,
            json!({"name": "p", "location": "l", "provisioningState": "Succeeded"})
        );
        assert!(query(&v, "{{{").is_err());
    }
}
