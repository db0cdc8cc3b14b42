//! A reader of the HCL1 values `openbao_render::hcl` writes, faithful to `hashicorp/hcl` v1's
//! string lexing and unquoting (`hcl/scanner/scanner.go`, `hcl/strconv/quote.go`): it fails where
//! HCL1 would see something else than a plain literal (a raw `$` before `{` opens an
//! interpolation, a raw newline or NUL ends the literal with an error, U+E123 is reserved), and
//! it decodes escapes as HCL1 does. Only for tests: what `bao` itself reads is checked by
//! `config_injection.rs`.

#![allow(dead_code)] // each test binary uses its own part

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Reads one HCL1 value (string, bool, integer, list or object) that fills `text` exactly.
pub fn read_value(text: &str) -> Result<Value, String> {
    let mut r = Reader {
        chars: text.chars().collect(),
        at: 0,
    };
    let v = r.value()?;
    r.skip_space();
    if r.at != r.chars.len() {
        return Err(format!("trailing text at {}", r.at));
    }
    Ok(v)
}

/// Reads one quoted HCL1 string literal that fills `text` exactly.
pub fn read_string(text: &str) -> Result<String, String> {
    match read_value(text)? {
        Value::String(s) => Ok(s),
        other => Err(format!("not a string: {other}")),
    }
}

struct Reader {
    chars: Vec<char>,
    at: usize,
}

impl Reader {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn next(&mut self) -> Result<char, String> {
        let c = self.peek().ok_or("unexpected end")?;
        self.at += 1;
        Ok(c)
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(|c| c == ' ' || c == '\n') {
            self.at += 1;
        }
    }

    fn expect(&mut self, want: char) -> Result<(), String> {
        self.skip_space();
        match self.next()? {
            c if c == want => Ok(()),
            c => Err(format!("expected {want:?}, found {c:?} at {}", self.at - 1)),
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_space();
        match self.peek().ok_or("unexpected end")? {
            '"' => Ok(Value::String(self.string()?)),
            '[' => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_space();
                    if self.peek() == Some(']') {
                        self.at += 1;
                        return Ok(Value::Array(items));
                    }
                    if !items.is_empty() {
                        self.expect(',')?;
                    }
                    items.push(self.value()?);
                }
            }
            '{' => {
                self.at += 1;
                let mut map = Map::new();
                loop {
                    self.skip_space();
                    if self.peek() == Some('}') {
                        self.at += 1;
                        return Ok(Value::Object(map));
                    }
                    let key = self.string()?;
                    self.expect('=')?;
                    let v = self.value()?;
                    if map.insert(key.clone(), v).is_some() {
                        return Err(format!("duplicate key {key:?}"));
                    }
                }
            }
            _ => {
                let start = self.at;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                {
                    self.at += 1;
                }
                let word: String = self.chars[start..self.at].iter().collect();
                match word.as_str() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    w => w
                        .parse::<i64>()
                        .map(Value::from)
                        .map_err(|_| format!("not an HCL1 value: {w:?} at {start}")),
                }
            }
        }
    }

    /// A quoted literal: the lexer's rules, then `hcl/strconv.Unquote`'s.
    fn string(&mut self) -> Result<String, String> {
        self.skip_space();
        if self.next()? != '"' {
            return Err(format!("expected a string at {}", self.at - 1));
        }
        let mut out = String::new();
        loop {
            let c = self.next().map_err(|_| "literal not terminated".to_string())?;
            match c {
                '"' => return Ok(out),
                '\n' => return Err("literal not terminated (raw newline)".into()),
                '\0' => return Err("unexpected null character (0x00)".into()),
                '\u{E123}' => return Err("U+E123 reserved for internal use".into()),
                '$' if self.peek() == Some('{') => {
                    return Err(format!("interpolation opened at {}", self.at - 1));
                }
                '\\' => out.push(self.escape()?),
                c => out.push(c),
            }
        }
    }

    fn escape(&mut self) -> Result<char, String> {
        let c = self.next()?;
        let hex = |r: &mut Self, n: usize| -> Result<char, String> {
            let digits: String = (0..n).map(|_| r.next()).collect::<Result<_, _>>()?;
            let v = u32::from_str_radix(&digits, 16).map_err(|_| format!("bad escape digits {digits:?}"))?;
            char::from_u32(v).ok_or(format!("escape \\{c}{digits} is no scalar value"))
        };
        Ok(match c {
            'a' => '\u{7}',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\u{b}',
            '\\' => '\\',
            '"' => '"',
            'u' => hex(self, 4)?,
            'U' => hex(self, 8)?,
            // `\x` and octal escapes yield bytes, not characters: the writer never uses them.
            c => return Err(format!("escape \\{c} not written by the writer")),
        })
    }
}

/// Characters HCL1's lexer or OpenBao's path handling could treat specially, plus a few
/// multi-byte ones, mixed with arbitrary characters.
pub const HOSTILE_CHARS: &[char] = &[
    '$',
    '{',
    '}',
    '%',
    '@',
    '"',
    '\\',
    '\n',
    '\r',
    '\t',
    '\0',
    '\u{1}',
    '\u{7f}',
    '\u{85}',
    '\u{E123}',
    '#',
    '/',
    '*',
    '<',
    'E',
    'O',
    'F',
    '=',
    ' ',
    '[',
    ']',
    ',',
    ':',
    '\'',
    '`',
    'é',
    '\u{2028}',
    '\u{FEFF}',
    '😀',
    '\u{10FFFF}',
];

/// Strings biased towards [`HOSTILE_CHARS`], up to `max_len` characters.
pub fn hostile_string(max_len: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![3 => prop::sample::select(HOSTILE_CHARS), 1 => any::<char>()],
        0..max_len,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

/// JSON values without null or floats (HCL1 has no null; numbers are not strings' business),
/// nested up to a few levels, with hostile keys and strings.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        hostile_string(24).prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(hostile_string(12), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
