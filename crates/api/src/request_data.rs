//! Bounds on `spec.selfInit.requests[].data`, the one free-form JSON value of the API.
//!
//! Why they exist: the apiserver stores JSON nested thousands of levels deep, while serde_json
//! stops decoding at 128 levels, so one such object made the operator's LIST of OpenBaoClusters
//! undecodable and stopped every cluster's reconciliation. The same constants drive the
//! admission schema ([`schema`]), the decoder ([`deserialize`]) and the Rust check ([`check`]).
//!
//! What admission can and cannot say: CEL never sees inside free-form values (the apiserver
//! does not expose `x-kubernetes-preserve-unknown-fields` content to rules), so the depth,
//! string-length and entry-count bounds are OpenAPI value validations on a schema tree spelled
//! out level by level. Structural schemas have no `$ref` and no type unions, so each level
//! carries the next one twice (`items` and `additionalProperties`): the tree doubles per level,
//! which is why the depth bound is small. Key lengths (no `propertyNames` in CRD schemas) and
//! the serialized size of a body cannot be expressed at admission; [`check`] enforces them.

use schemars::{Schema, SchemaGenerator, json_schema};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Deepest path below `data` at which a value may sit: `{"a": {"b": ["c"]}}` puts `"c"` at 3.
/// OpenBao's request bodies nest 3 levels at most in practice (mount `config.options`, JWT
/// role `bound_claims` lists); every extra level doubles the admission schema (see above).
pub const MAX_DEPTH: usize = 6;
/// Longest string (value or key), in characters (what OpenAPI `maxLength` counts): 64 KiB
/// holds a PEM bundle or a policy document with room to spare.
pub const MAX_STRING_CHARS: usize = 64 * 1024;
/// Most entries of one object or array.
pub const MAX_ENTRIES: usize = 1024;
/// Largest serialized body (JSON bytes), checked in Rust only: the rendered init file of all
/// requests must fit in one Kubernetes object (1 MiB).
pub const MAX_BYTES: usize = 256 * 1024;

/// Keys that make OpenBao's self-initialization evaluate an object instead of sending it: with
/// `eval_source` `file` or `env` it reads a file or an environment variable of the server (the
/// seal key, the TLS key) into the request. Only the operator's own requests may use them (the
/// demo password); in a user's `data` at any depth they are refused. Checked in Rust only: CEL
/// sees nothing inside free-form values. The operator renders nothing from a refused spec.
pub const SELF_INIT_DIRECTIVE_KEYS: [&str; 2] = ["eval_type", "eval_source"];

/// Admission schema of `data`: an object whose values may nest at most [`MAX_DEPTH`] levels,
/// with bounded strings and entry counts at every level.
pub fn schema(_: &mut SchemaGenerator) -> Schema {
    let mut schema = json_schema!({
        "type": "object",
        "maxProperties": MAX_ENTRIES,
        "additionalProperties": level(1),
    });
    schema.insert(
        "description".into(),
        format!(
            "Request body (JSON object). Values nest at most {MAX_DEPTH} levels below `data`; strings and \
             keys hold at most {MAX_STRING_CHARS} characters; objects and arrays at most {MAX_ENTRIES} \
             entries; the body serializes to at most {MAX_BYTES} bytes."
        )
        .into(),
    );
    schema
}

/// The schema of any JSON value at path depth `depth`: containers only above [`MAX_DEPTH`].
fn level(depth: usize) -> Value {
    let mut node = serde_json::json!({
        "x-kubernetes-preserve-unknown-fields": true,
        "maxLength": MAX_STRING_CHARS,
    });
    if depth >= MAX_DEPTH {
        // Children of this value would sit deeper than allowed: only empty containers.
        node["maxProperties"] = 0.into();
        node["maxItems"] = 0.into();
    } else {
        node["maxProperties"] = MAX_ENTRIES.into();
        node["maxItems"] = MAX_ENTRIES.into();
        node["items"] = level(depth + 1);
        node["additionalProperties"] = level(depth + 1);
    }
    node
}

/// Why a body is refused; `path` is relative to `data`, e.g. `.mounts[0].config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub problem: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

/// Checks `data` against every bound above (the admission ones and the Rust-only ones).
pub fn check(data: &Value) -> Result<(), Violation> {
    walk(data, 0, &mut String::new())?;
    let bytes = serde_json::to_vec(data).map_or(usize::MAX, |v| v.len());
    if bytes > MAX_BYTES {
        return Err(Violation {
            path: String::new(),
            problem: format!("serializes to {bytes} bytes, more than {MAX_BYTES}"),
        });
    }
    Ok(())
}

/// Recursion is bounded: it stops one level below [`MAX_DEPTH`].
fn walk(value: &Value, depth: usize, path: &mut String) -> Result<(), Violation> {
    let fail = |path: &str, problem: String| {
        Err(Violation {
            path: path.to_string(),
            problem,
        })
    };
    if depth > MAX_DEPTH {
        return fail(path, format!("nested deeper than {MAX_DEPTH} levels"));
    }
    let long = |s: &str| s.chars().count() > MAX_STRING_CHARS;
    let too_many = |n: usize| format!("{n} entries, more than {MAX_ENTRIES}");
    match value {
        Value::String(s) if long(s) => fail(path, format!("string longer than {MAX_STRING_CHARS} characters")),
        Value::Array(items) if items.len() > MAX_ENTRIES => fail(path, too_many(items.len())),
        Value::Object(map) if map.len() > MAX_ENTRIES => fail(path, too_many(map.len())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, depth + 1, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        // HCL1, which OpenBao reads its configuration with, has no null: the server would not start.
        Value::Null => fail(path, "null is not a value OpenBao's configuration can carry".into()),
        Value::Object(map) => {
            if let Some(key) = SELF_INIT_DIRECTIVE_KEYS.iter().find(|k| map.contains_key(**k)) {
                return fail(
                    path,
                    format!(
                        "the key {key:?} makes OpenBao's self-initialization read files or environment \
                         variables of the server; it is not allowed in requests"
                    ),
                );
            }
            for (key, item) in map {
                let len = path.len();
                if long(key) {
                    return fail(path, format!("key longer than {MAX_STRING_CHARS} characters"));
                }
                path.push('.');
                path.push_str(key);
                walk(item, depth + 1, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Decodes `data` without ever holding more than [`MAX_DEPTH`]` + 1` levels: containers found
/// below that are skipped by the parser (serde_json skips without recursion) and kept empty, so
/// the value still fails [`check`] and is never rendered, yet the object around it decodes. A
/// plain `Value` would fail at serde_json's 128-level limit and take the whole LIST down with it.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    struct OptionVisitor;
    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<Value>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON value or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            Bounded { depth: 0 }.deserialize(d).map(Some)
        }
    }
    deserializer.deserialize_option(OptionVisitor)
}

/// A JSON value at path depth `depth` below `data`.
#[derive(Clone, Copy)]
struct Bounded {
    depth: usize,
}

impl Bounded {
    /// Children are decoded only while they stay within one level past the limit.
    fn keeps_children(self) -> bool {
        self.depth <= MAX_DEPTH
    }
}

impl<'de> DeserializeSeed<'de> for Bounded {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        if self.keeps_children() {
            let child = Bounded { depth: self.depth + 1 };
            while let Some(item) = seq.next_element_seed(child)? {
                items.push(item);
            }
        } else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        if self.keeps_children() {
            let child = Bounded { depth: self.depth + 1 };
            while let Some(key) = map.next_key::<String>()? {
                object.insert(key, map.next_value_seed(child)?);
            }
        } else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    fn nested(levels: usize, leaf: Value) -> Value {
        (0..levels).fold(leaf, |inner, _| json!({ "a": inner }))
    }

    /// The raw JSON text of `levels` nested objects: built as text, since building (or
    /// dropping) such a `Value` would itself recurse that deep.
    fn nested_text(levels: usize) -> String {
        format!("{}1{}", r#"{"a":"#.repeat(levels), "}".repeat(levels))
    }

    #[derive(Deserialize, Debug)]
    struct Holder {
        #[serde(default, deserialize_with = "deserialize")]
        data: Option<Value>,
    }

    #[test]
    fn self_init_directives_and_nulls_are_refused_at_any_depth() {
        let directive =
            json!({"a": [{"v": {"eval_type": "string", "eval_source": "file", "path": "/etc/bao/unseal/key"}}]});
        let refused = check(&directive).unwrap_err();
        assert_eq!(refused.path, ".a[0].v");
        assert!(refused.problem.contains("eval_type"), "{}", refused.problem);
        let half = check(&json!({"eval_source": "env"})).unwrap_err();
        assert!(half.problem.contains("eval_source"), "{}", half.problem);
        // As a value the words are just text.
        assert_eq!(check(&json!({"note": "eval_type"})), Ok(()));
        assert_eq!(check(&json!({"x": null})).unwrap_err().path, ".x");
    }

    #[test]
    fn depth_is_the_path_length_below_data() {
        assert_eq!(check(&nested(MAX_DEPTH, json!(1))), Ok(()));
        assert_eq!(check(&nested(MAX_DEPTH - 1, json!({}))), Ok(()));
        let deep = check(&nested(MAX_DEPTH + 1, json!(1))).unwrap_err();
        assert_eq!(deep.path, ".a".repeat(MAX_DEPTH + 1));
        assert_eq!(deep.problem, format!("nested deeper than {MAX_DEPTH} levels"));
        // An empty container is a value like any other: fine at the limit, not below it.
        assert_eq!(check(&nested(MAX_DEPTH, json!([]))), Ok(()));
        assert!(check(&nested(MAX_DEPTH, json!([[]]))).is_err());
        let in_list = json!({ "a": [[[[[["x"]]]]]] });
        assert_eq!(check(&in_list).unwrap_err().path, ".a[0][0][0][0][0][0]");
    }

    #[test]
    fn strings_keys_entries_and_size_are_bounded() {
        let at_limit = "x".repeat(MAX_STRING_CHARS);
        assert_eq!(check(&json!({ "pem": at_limit })), Ok(()));
        // Characters, not bytes, like OpenAPI maxLength.
        assert_eq!(check(&json!({ "pem": "é".repeat(MAX_STRING_CHARS) })), Ok(()));
        let long = format!("{at_limit}x");
        let v = check(&json!({ "list": ["ok", long] })).unwrap_err();
        assert_eq!(
            (v.path.as_str(), v.problem.contains("string longer")),
            (".list[1]", true)
        );
        let v = check(&json!({ "outer": { long.clone(): 1 } })).unwrap_err();
        assert_eq!((v.path.as_str(), v.problem.contains("key longer")), (".outer", true));
        let many: Vec<u32> = (0..=MAX_ENTRIES as u32).collect();
        assert!(
            check(&json!({ "many": many }))
                .unwrap_err()
                .problem
                .contains("1025 entries")
        );
        let big: serde_json::Map<String, Value> = (0..5).map(|i| (format!("k{i}"), json!(at_limit))).collect();
        let v = check(&Value::Object(big)).unwrap_err();
        assert!(v.problem.starts_with("serializes to "), "{v}");
    }

    #[test]
    fn decoding_keeps_bodies_within_the_limit_exactly() {
        let body = json!({ "type": "kv", "options": { "version": "2" }, "n": 1.5, "t": true, "z": null,
                           "deep": nested(MAX_DEPTH - 2, json!(["x"])) });
        let text = json!({ "data": body }).to_string();
        let holder: Holder = serde_json::from_str(&text).unwrap();
        assert_eq!(holder.data, Some(body));
        let holder: Holder = serde_json::from_str(r#"{"data": null}"#).unwrap();
        assert_eq!(holder.data, None);
    }

    #[test]
    fn too_deep_bodies_decode_truncated_and_still_fail_the_check() {
        for levels in [MAX_DEPTH + 2, 121, 200, 10_000] {
            let text = format!(r#"{{"data":{},"after":1}}"#, nested_text(levels));
            // What a plain Value does with it (beyond 128 levels): the reason this module exists.
            if levels > 127 {
                assert!(serde_json::from_str::<Value>(&text).is_err());
            }
            let holder: Holder = serde_json::from_str(&text).unwrap();
            let data = holder.data.unwrap();
            assert_eq!(data, nested(MAX_DEPTH + 1, json!({})), "{levels} levels");
            assert!(check(&data).unwrap_err().problem.contains("nested deeper"));
        }
    }
}
