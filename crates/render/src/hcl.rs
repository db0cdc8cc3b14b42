//! A small HCL writer for the OpenBao config: blocks, attributes and JSON-like values.
//! Strings are escaped so that no user-provided value can inject HCL or template syntax.

use serde_json::Value;
use std::fmt::Write;

/// Quotes `s` as an HCL string literal; `${` and `%{` are escaped so they stay literal text.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
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
    fn quoting_blocks_injection_and_templates() {
        assert_eq!(quote("a\"b"), r#""a\"b""#);
        assert_eq!(quote("x\n}\nseal \"y\" {"), r#""x\n}\nseal \"y\" {""#);
        assert_eq!(quote("${identity.entity.id}"), r#""$${identity.entity.id}""#);
        assert_eq!(quote("100%{x}"), r#""100%%{x}""#);
        assert_eq!(quote("cost $5"), r#""cost $5""#);
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
