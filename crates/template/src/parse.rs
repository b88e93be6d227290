//! Template text → JSON value, tolerating the comments and trailing commas people write in
//! templates, and the bare (unquoted) property names ARM's lenient reader takes, which the Azure
//! CLI relies on: it splices the template file into the request as `…, template:{…}}}`.
//!
//! Comments and trailing commas are blanked out with spaces (newlines kept) rather than removed,
//! so the line and column serde_json reports point into the user's original text.

use serde_json::Value;

use crate::TemplateError;

/// Parses template (or parameters) text: JSON that may hold `//`, `/* */` and `#` comments.
pub fn parse(text: &str) -> Result<Value, TemplateError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let blanked = blank_comments(text)?;
    let blanked = blank_trailing_commas(&blanked);
    let quoted = quote_bare_keys(&blanked);
    serde_json::from_str(&quoted).map_err(|e| {
        TemplateError::invalid(format!(
            "template is not valid JSON at line {} column {}: {}",
            e.line(),
            e.column(),
            describe(&e)
        ))
    })
}

/// serde_json's Display repeats the position; keep only the reason.
fn describe(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    }
}

fn line_col(text: &str, byte: usize) -> (usize, usize) {
    let before = &text[..byte];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, col)
}

/// Replaces every comment outside string literals with spaces, keeping newlines.
fn blank_comments(text: &str) -> Result<String, TemplateError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            out.push(b);
            if b == b'\\' && i + 1 < bytes.len() {
                out.push(bytes[i + 1]);
                i += 2;
                continue;
            }
            if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                out.push(b);
                i += 1;
            }
            b'#' => i = blank_line(bytes, i, &mut out),
            b'/' if bytes.get(i + 1) == Some(&b'/') => i = blank_line(bytes, i, &mut out),
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let start = i;
                let end = text[i + 2..]
                    .find("*/")
                    .map(|p| i + 2 + p + 2)
                    .ok_or_else(|| {
                        let (line, col) = line_col(text, start);
                        TemplateError::invalid(format!(
                            "unterminated /* comment starting at line {line} column {col}"
                        ))
                    })?;
                for &c in &bytes[i..end] {
                    out.push(if c == b'\n' || c == b'\r' { c } else { b' ' });
                }
                i = end;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    // Only ASCII bytes outside strings were replaced by ASCII spaces, so this cannot fail;
    // fall back to the lossy form rather than panic should that reasoning ever break.
    Ok(String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Blanks from `i` to the end of the line (exclusive); returns the index of the newline.
fn blank_line(bytes: &[u8], mut i: usize, out: &mut Vec<u8>) -> usize {
    while i < bytes.len() && bytes[i] != b'\n' {
        // Keep the continuation bytes' count so columns of later lines are unaffected; replacing
        // each byte of a multi-byte character with a space only shifts this (blank) line.
        out.push(if bytes[i] == b'\r' { b'\r' } else { b' ' });
        i += 1;
    }
    i
}

/// Where a scan is with respect to JSON string literals (comments already blanked).
#[derive(Default)]
struct Literal {
    in_string: bool,
    escaped: bool,
}

impl Literal {
    /// Takes the next byte; true when it belongs to a string literal, its quotes included.
    fn holds(&mut self, b: u8) -> bool {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            return true;
        }
        self.in_string = b == b'"';
        self.in_string
    }
}

/// Replaces a comma that is followed (after whitespace) by `]` or `}` with a space.
fn blank_trailing_commas(text: &str) -> String {
    let mut out: Vec<u8> = text.as_bytes().to_vec();
    let mut literal = Literal::default();
    let mut pending_comma: Option<usize> = None;
    for (i, &b) in text.as_bytes().iter().enumerate() {
        if literal.holds(b) {
            pending_comma = None;
            continue;
        }
        match b {
            b',' => pending_comma = Some(i),
            b']' | b'}' => {
                if let Some(c) = pending_comma.take() {
                    out[c] = b' ';
                }
            }
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => pending_comma = None,
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Puts quotes around a bare identifier that stands where a property name goes (after `{` or
/// `,`, before `:`). Only lines holding one shift by two columns per name.
fn quote_bare_keys(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut literal = Literal::default();
    let mut key_position = false;
    let mut i = 0;
    let is_start = |b: u8| b.is_ascii_alphabetic() || b == b'_' || b == b'$';
    let is_part = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$';
    while i < bytes.len() {
        let b = bytes[i];
        if literal.holds(b) {
            out.push(b);
            key_position = false;
            i += 1;
            continue;
        }
        if key_position && is_start(b) {
            let end = (i..bytes.len())
                .find(|&j| !is_part(bytes[j]))
                .unwrap_or(bytes.len());
            let after = (end..bytes.len()).find(|&j| !bytes[j].is_ascii_whitespace());
            if after.is_some_and(|j| bytes[j] == b':') {
                out.push(b'"');
                out.extend_from_slice(&bytes[i..end]);
                out.push(b'"');
                i = end;
                key_position = false;
                continue;
            }
        }
        match b {
            b'{' | b',' => key_position = true,
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => key_position = false,
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn line_comments_of_both_kinds_are_ignored() {
        let v = parse("{\n  \"a\": 1, // one\n  \"b\": 2 # two\n}").unwrap();
        assert_eq!(v, json!({"a": 1, "b": 2}));
    }

    #[test]
    fn block_comments_are_ignored_even_across_lines() {
        let v = parse("{/* x\n y */\"a\": /* in */ [1, 2]}").unwrap();
        assert_eq!(v, json!({"a": [1, 2]}));
    }

    #[test]
    fn comment_markers_inside_strings_stay() {
        let v = parse(r##"{"s": "a#b//c/*d*/", "e": "q\"#x"}"##).unwrap();
        assert_eq!(v, json!({"s": "a#b//c/*d*/", "e": "q\"#x"}));
    }

    #[test]
    fn trailing_commas_are_tolerated() {
        let v = parse("{\"a\": [1, 2, ], \"b\": {\"c\": 1, // c\n }, }").unwrap();
        assert_eq!(v, json!({"a": [1, 2], "b": {"c": 1}}));
    }

    #[test]
    fn bare_property_names_are_read_as_the_azure_cli_sends_them() {
        let body = "{\"properties\": {\"mode\": \"Incremental\", template:{\n \"a\": [true, null, 1],\n $b_1 : \"x:y\"}}}";
        let v = parse(body).unwrap();
        assert_eq!(
            v,
            json!({"properties": {"mode": "Incremental", "template": {"a": [true, null, 1], "$b_1": "x:y"}}})
        );
        // Values stay values; a bare word that is no property name is still an error.
        assert_eq!(
            parse("{\"a\": [true, false]}").unwrap(),
            json!({"a": [true, false]})
        );
        assert!(parse("{\"a\": nope}").is_err());
        assert!(parse("{\"s\": \"{k: 1}\"}").unwrap()["s"] == "{k: 1}");
    }

    #[test]
    fn commas_inside_strings_are_not_touched() {
        let v = parse(r#"{"a": ",]", "b": ", }"}"#).unwrap();
        assert_eq!(v, json!({"a": ",]", "b": ", }"}));
    }

    #[test]
    fn syntax_error_reports_original_line_and_column() {
        let err = parse("{\n  # comment\n  \"a\": 1,\n  \"b\" 2\n}").unwrap_err();
        assert_eq!(err.code, "InvalidTemplate");
        assert!(err.message.contains("line 4 column 7"), "{}", err.message);
    }

    #[test]
    fn unterminated_block_comment_is_an_error_with_position() {
        let err = parse("{\"a\": 1 /* never closed\n}").unwrap_err();
        assert_eq!(err.code, "InvalidTemplate");
        assert!(err.message.contains("line 1 column 9"), "{}", err.message);
    }

    #[test]
    fn empty_and_non_utf8_safe_inputs_are_errors_not_panics() {
        assert!(parse("").is_err());
        assert!(parse("// only a comment").is_err());
        assert_eq!(
            parse("\u{feff}{\"ü\": \"é\"} # ∑").unwrap(),
            json!({"ü": "é"})
        );
    }
}
