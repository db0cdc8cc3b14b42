//! A small writer of OpenBao configuration files: blocks, attributes and JSON-like values.
//!
//! OpenBao parses its configuration with HCL **1** (`hashicorp/hcl` v1), not HCL2, so strings
//! are escaped for HCL1's lexer and unquoting (`hcl/scanner` and `hcl/strconv`):
//! - `${` opens an interpolation that runs, quotes and newlines included, until its braces
//!   balance, and is then kept verbatim with no escape processing. HCL1 has no `$${` escape, so
//!   every `$` is written as `\u0024`: the lexer never sees a `$`, and the unquoting decodes it
//!   back. `%{` means nothing to HCL1 and stays as it is.
//! - `"` and `\` are backslash-escaped; a raw newline ends the literal with an error, so `\n`,
//!   `\r` and `\t` are escaped and every other control character (NUL included, which the lexer
//!   rejects raw) becomes `\u00XX`.
//! - U+E123 is rejected raw (HCL1 reserves it for its printer) and becomes `\ue123`.
//! - `@` becomes `\u0040`, so the pod-name placeholder the entrypoint `sed`s into the server
//!   templates (`@@POD_NAME@@`) can only come from [`Body::attr_with_pod_name`], never from a
//!   value.
//!
//! Everything else, non-ASCII included, is written as it is (UTF-8, which HCL1 reads as such).
//! Comments (`#`, `//`, `/*`) and heredocs (`<<EOF`) only exist outside string literals, and no
//! value can leave its literal. JSON config files (HCL1 unquotes their strings with Go's
//! `strconv`, no interpolation) would be exact too but not simpler: self-init order would hang
//! on JSON key order, and the entrypoint's awk edits the server template line by line.
//! `tests/config_injection.rs` checks these rules against real `bao`.

use serde_json::Value;
use std::fmt::Write;

use crate::paths::POD_NAME_PLACEHOLDER;

/// Appends the HCL1 escaping of `s` (without quotes) to `out`; see the module doc.
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '@' | '\u{E123}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Quotes `s` as an HCL1 string literal that OpenBao reads back as exactly `s`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    escape_into(&mut out, s);
    out.push('"');
    out
}

/// Renders a JSON value as an HCL expression (objects become `{ "k" = v }` with sorted keys).
pub fn value(v: &Value, indent: usize) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(|i| value(i, indent)).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(map) => {
            if map.is_empty() {
                return "{}".to_string();
            }
            let pad = "  ".repeat(indent + 1);
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = String::from("{\n");
            for k in keys {
                let _ = writeln!(out, "{pad}{} = {}", quote(k), value(&map[k], indent + 1));
            }
            out.push_str(&"  ".repeat(indent));
            out.push('}');
            out
        }
    }
}

/// An HCL document built from nested blocks and attributes.
#[derive(Default)]
pub struct Body {
    out: String,
    depth: usize,
}

impl Body {
    pub fn new() -> Self {
        Self::default()
    }

    fn pad(&self) -> String {
        "  ".repeat(self.depth)
    }

    pub fn attr(&mut self, key: &str, v: impl Into<Value>) -> &mut Self {
        let line = format!("{}{key} = {}\n", self.pad(), value(&v.into(), self.depth));
        self.out.push_str(&line);
        self
    }

    /// Writes `key = "<before>@@POD_NAME@@<after>"`: the placeholder stays raw for the
    /// entrypoint to replace, the rest is escaped as any value.
    pub fn attr_with_pod_name(&mut self, key: &str, before: &str, after: &str) -> &mut Self {
        let mut line = format!("{}{key} = \"", self.pad());
        escape_into(&mut line, before);
        line.push_str(POD_NAME_PLACEHOLDER);
        escape_into(&mut line, after);
        line.push_str("\"\n");
        self.out.push_str(&line);
        self
    }

    /// Writes `name "label"... { ... }` with `fill` writing the block's contents.
    pub fn block(&mut self, name: &str, labels: &[&str], fill: impl FnOnce(&mut Body)) -> &mut Self {
        let labels: String = labels.iter().map(|l| format!(" {}", quote(l))).collect();
        let line = format!("{}{name}{labels} {{\n", self.pad());
        self.out.push_str(&line);
        self.depth += 1;
        fill(self);
        self.depth -= 1;
        let close = format!("{}}}\n", self.pad());
        self.out.push_str(&close);
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quoting_escapes_for_hcl1() {
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quote("x\n}\nseal \"y\" {"), r#""x\n}\nseal \"y\" {""#);
        // HCL1 has no `$${`: every `$` is a unicode escape, so no interpolation ever opens.
        assert_eq!(quote("${identity.entity.id}"), r#""\u0024{identity.entity.id}""#);
        assert_eq!(quote("$${a}"), r#""\u0024\u0024{a}""#);
        assert_eq!(quote("cost $5"), r#""cost \u00245""#);
        // `%{` is nothing special in HCL1.
        assert_eq!(quote("100%{x}"), r#""100%{x}""#);
        assert_eq!(quote("a@@POD_NAME@@b"), r#""a\u0040\u0040POD_NAME\u0040\u0040b""#);
        assert_eq!(quote("\0\r\t\u{7f}\u{85}"), r#""\u0000\r\t\u007f\u0085""#);
        assert_eq!(quote("\u{E123}"), r#""\ue123""#);
        assert_eq!(quote("é😀 # // /* <<EOF"), "\"é😀 # // /* <<EOF\"");
    }

    #[test]
    fn the_pod_name_placeholder_is_written_raw() {
        let mut b = Body::new();
        b.attr_with_pod_name("api_addr", "https://", ".c.ns.svc:8200")
            .attr_with_pod_name("node_id", "", "")
            .attr("other", POD_NAME_PLACEHOLDER);
        assert_eq!(
            b.finish(),
            "api_addr = \"https://@@POD_NAME@@.c.ns.svc:8200\"\nnode_id = \"@@POD_NAME@@\"\nother = \"\\u0040\\u0040POD_NAME\\u0040\\u0040\"\n"
        );
    }

    #[test]
    fn values_are_sorted_and_nested() {
        let v = json!({"b": [1, "two"], "a": {"c": true}});
        assert_eq!(
            value(&v, 0),
            "{\n  \"a\" = {\n    \"c\" = true\n  }\n  \"b\" = [1, \"two\"]\n}"
        );
    }

    #[test]
    fn blocks_nest_with_labels() {
        let mut b = Body::new();
        b.attr("ui", true).block("listener", &["tcp"], |l| {
            l.attr("address", "0.0.0.0:8200");
        });
        assert_eq!(
            b.finish(),
            "ui = true\nlistener \"tcp\" {\n  address = \"0.0.0.0:8200\"\n}\n"
        );
    }
}
