//! The built-in merge modes (SET, INSERT, REPLACE, MERGE) in Rust: the left
//! fold of a snapshot and the deltas after it, with no JavaScript on the way.
//!
//! Documents are `serde_json` values with `arbitrary_precision` and
//! `preserve_order`, read by [`parse`], so every number keeps the exact text
//! it was written with (any integer, decimal or exponent form), and object
//! keys keep the order they were first written in: a key set again keeps its
//! place, a key deleted and set again moves to the end.
//!
//! Invariants (the same semantics as the JavaScript driver `js/lake.js`,
//! held against it by a differential test):
//! - A fold applies deltas one at a time, in order; patches are never
//!   combined with each other (RFC 7396 deletions stay deletions).
//! - A step that cannot apply (INSERT over an existing value, REPLACE of an
//!   absent path, an index past an array's end) changes nothing at all.
//! - `__proto__` and `constructor` are ordinary keys.
//! - Custom modes are reached through [`Custom`]: the fold hands it the
//!   current value at the path (or nothing) and the delta's value, and puts
//!   back what it returns (or deletes the path).

use crate::{MAX_DOC_DEPTH, MAX_READ_DEPTH};
use serde_json::{Map, Value};

/// How a mode treats the way to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// Create missing parents; replace a scalar, null or array in the way.
    Force,
    /// Create missing parents; an existing value in the way stops the write.
    Soft,
    /// The whole path must exist.
    Existing,
}

/// A delta's mode: a built-in one, or a custom one by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode<'a> {
    Set,
    Insert,
    Replace,
    Merge,
    Custom(&'a str),
}

impl<'a> Mode<'a> {
    pub fn of(name: &'a str) -> Mode<'a> {
        match name {
            "set" => Mode::Set,
            "insert" => Mode::Insert,
            "replace" => Mode::Replace,
            "merge" => Mode::Merge,
            other => Mode::Custom(other),
        }
    }

    fn policy(self) -> Policy {
        match self {
            Mode::Insert => Policy::Soft,
            Mode::Replace => Policy::Existing,
            _ => Policy::Force,
        }
    }
}

/// Runs a custom mode: `merge(current, value)`; `None` in means absent,
/// `None` out deletes the path.
pub trait Custom {
    fn apply(
        &mut self,
        mode: &str,
        current: Option<Value>,
        value: Value,
    ) -> Result<Option<Value>, String>;
}

/// No custom modes: a fold that meets one fails naming it.
pub struct BuiltinsOnly;

impl Custom for BuiltinsOnly {
    fn apply(&mut self, mode: &str, _: Option<Value>, _: Value) -> Result<Option<Value>, String> {
        Err(format!("unknown mode '{mode}' (is its file in --modes?)"))
    }
}

/// One delta of a fold.
pub struct Delta<'a> {
    pub path: &'a [String],
    pub mode: Mode<'a>,
    pub value: Value,
}

/// Why a fold failed: the index of the delta and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub delta: usize,
    pub message: String,
}

/// What a step did to the node it was given.
enum Out {
    /// Nothing changed anywhere.
    Keep,
    /// The node was modified in place.
    Changed,
    /// The node is to be removed from its parent.
    Delete,
    /// The node is to be replaced by this value.
    Put(Value),
}

/// `doc = fold(base or {}, deltas)`: each delta applied to the result of the
/// one before.
pub fn fold<'a>(
    base: Option<Value>,
    deltas: impl IntoIterator<Item = Delta<'a>>,
    custom: &mut dyn Custom,
) -> Result<Value, Failed> {
    let mut doc = base.unwrap_or_else(|| Value::Object(Map::new()));
    for (i, d) in deltas.into_iter().enumerate() {
        let mut custom = Budgeted {
            inner: &mut *custom,
            budget: MAX_DOC_DEPTH.saturating_sub(d.path.len()),
        };
        match step(Some(&mut doc), d.path, d.mode, d.value, &mut custom) {
            Ok(Out::Keep | Out::Changed) => {}
            Ok(Out::Delete) => doc = Value::Object(Map::new()),
            Ok(Out::Put(v)) => doc = v,
            Err(message) => return Err(Failed { delta: i, message }),
        }
    }
    Ok(doc)
}

/// A custom mode held to the depth budget: what it returns at a path of `n`
/// segments may nest at most `MAX_DOC_DEPTH - n` levels, so every document
/// a fold builds reads back.
struct Budgeted<'c> {
    inner: &'c mut dyn Custom,
    budget: usize,
}

impl Custom for Budgeted<'_> {
    fn apply(
        &mut self,
        mode: &str,
        current: Option<Value>,
        value: Value,
    ) -> Result<Option<Value>, String> {
        let out = self.inner.apply(mode, current, value)?;
        if let Some(d) = out.as_ref().map(depth).filter(|d| *d > self.budget) {
            return Err(format!(
                "mode '{mode}' returned a value nested {d} levels deep where the path leaves {} of the {MAX_DOC_DEPTH}-level depth budget",
                self.budget
            ));
        }
        Ok(out)
    }
}

/// A decimal array index (no sign, no leading zeros), or `None`. One too
/// large for memory is past every array's end.
fn index(seg: &str) -> Option<usize> {
    let b = seg.as_bytes();
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    Some(seg.parse().unwrap_or(usize::MAX))
}

fn step(
    node: Option<&mut Value>,
    segs: &[String],
    mode: Mode<'_>,
    value: Value,
    custom: &mut dyn Custom,
) -> Result<Out, String> {
    let Some((seg, rest)) = segs.split_first() else {
        return leaf(node, mode, value, custom);
    };
    let policy = mode.policy();
    let mut node = node;
    if let Some(Value::Array(a)) = node.as_deref_mut() {
        let idx = if seg == "-" {
            Some(a.len())
        } else {
            index(seg)
        };
        match idx {
            Some(i) if i > a.len() => return Ok(Out::Keep),
            Some(i) => {
                let exists = i < a.len();
                if !exists && policy == Policy::Existing {
                    return Ok(Out::Keep);
                }
                let r = step(a.get_mut(i), rest, mode, value, custom)?;
                return Ok(match r {
                    Out::Keep => Out::Keep,
                    Out::Changed => Out::Changed,
                    Out::Delete if !exists => Out::Keep,
                    Out::Delete => {
                        a.remove(i);
                        Out::Changed
                    }
                    Out::Put(v) if exists => {
                        a[i] = v;
                        Out::Changed
                    }
                    Out::Put(v) => {
                        a.push(v);
                        Out::Changed
                    }
                });
            }
            // A key this array cannot index: only SET and MERGE replace it.
            None if policy != Policy::Force => return Ok(Out::Keep),
            None => node = None,
        }
    }
    if let Some(Value::Object(m)) = node.as_deref_mut() {
        let exists = m.contains_key(seg);
        if !exists && policy == Policy::Existing {
            return Ok(Out::Keep);
        }
        let r = step(m.get_mut(seg), rest, mode, value, custom)?;
        return Ok(match r {
            Out::Keep => Out::Keep,
            Out::Changed => Out::Changed,
            Out::Delete if !exists => Out::Keep,
            Out::Delete => {
                m.shift_remove(seg);
                Out::Changed
            }
            Out::Put(v) => {
                // An existing key keeps its place; a new one goes last.
                m.insert(seg.clone(), v);
                Out::Changed
            }
        });
    }
    // Absent, or a scalar, null or unindexable array in the way.
    let blocked = match node {
        Some(_) => policy != Policy::Force,
        None => policy == Policy::Existing,
    };
    if blocked {
        return Ok(Out::Keep);
    }
    Ok(match step(None, rest, mode, value, custom)? {
        Out::Put(v) => {
            let mut o = Map::new();
            o.insert(seg.clone(), v);
            Out::Put(Value::Object(o))
        }
        _ => Out::Keep,
    })
}

fn leaf(
    node: Option<&mut Value>,
    mode: Mode<'_>,
    value: Value,
    custom: &mut dyn Custom,
) -> Result<Out, String> {
    Ok(match mode {
        Mode::Set | Mode::Replace => Out::Put(value),
        Mode::Insert => match node {
            Some(_) => Out::Keep,
            None => Out::Put(value),
        },
        Mode::Merge => match node {
            Some(cur) => {
                merge_patch_in_place(cur, value);
                Out::Changed
            }
            None => Out::Put(merge_patch(None, value)),
        },
        Mode::Custom(name) => {
            let current = node.map(std::mem::take);
            match custom.apply(name, current, value)? {
                Some(v) => Out::Put(v),
                None => Out::Delete,
            }
        }
    })
}

/// RFC 7396 `MergePatch(target, patch)`; a missing or non-object target
/// counts as `{}`, a non-object patch replaces the target.
pub fn merge_patch(target: Option<Value>, patch: Value) -> Value {
    let mut t = target.unwrap_or(Value::Null);
    merge_patch_in_place(&mut t, patch);
    t
}

fn merge_patch_in_place(target: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        return;
    };
    for (k, pv) in patch {
        if pv.is_null() {
            t.shift_remove(&k);
        } else {
            match t.get_mut(&k) {
                Some(cur) => merge_patch_in_place(cur, pv),
                None => {
                    t.insert(k, merge_patch(None, pv));
                }
            }
        }
    }
}

/// The value at `segs` in `doc`, if there is one.
pub fn get<'a>(doc: &'a Value, segs: &[String]) -> Option<&'a Value> {
    let mut node = doc;
    for seg in segs {
        node = match node {
            Value::Array(a) => a.get(index(seg)?)?,
            Value::Object(m) => m.get(seg)?,
            _ => return None,
        };
    }
    Some(node)
}

/// Parses JSON text keeping every number's exact text. (`serde_json` with
/// `arbitrary_precision` keeps digits but rewrites exponents: `1E2` becomes
/// `1e+2`.) Strings are decoded by `serde_json`; object keys keep their
/// order; a repeated key keeps its first place and its last value. Accepts
/// nesting up to [`MAX_READ_DEPTH`]: whatever Lake stored reads back.
pub fn parse(text: &str) -> Result<Value, String> {
    Parser::new(text, true, MAX_READ_DEPTH).run()
}

/// The JSON text of `v`, byte for byte what `serde_json::to_string` writes
/// (numbers as their exact text, keys in their order, the same escapes),
/// with strings copied a run at a time between the bytes that need an
/// escape, found a word at a time (documents are mostly long plain text).
pub fn to_text(v: &Value) -> String {
    to_text_sized(v, 256)
}

/// [`to_text`] into a buffer of `capacity` bytes to start with (the size
/// the caller expects, so the text is not copied as it grows).
pub fn to_text_sized(v: &Value, capacity: usize) -> String {
    let mut out = Vec::with_capacity(capacity);
    write_value(&mut out, v);
    // Only whole strings and ASCII went in.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// One delta as text: what the module keeps of a write it indexed.
#[derive(Debug, Clone, Copy)]
pub struct TextDelta<'a> {
    pub path: &'a [String],
    pub mode: &'a str,
    pub value: &'a str,
}

/// `doc`, a document's text, with `deltas` folded on (built-in modes only):
/// `to_text(fold(parse(doc), deltas))`. Equal to the text of the fold of
/// everything from the start, since a fold is a left fold and [`parse`]
/// reads back exactly the value [`to_text`] wrote. An error (text that does
/// not parse, a custom mode) means the fold must be done elsewhere.
pub fn extend(doc: &str, deltas: &[TextDelta<'_>]) -> Result<String, String> {
    let base = parse(doc)?;
    let mut values = Vec::with_capacity(deltas.len());
    for d in deltas {
        let mode = Mode::of(d.mode);
        if let Mode::Custom(name) = mode {
            return Err(format!("mode '{name}' is not built in"));
        }
        values.push(Delta {
            path: d.path,
            mode,
            value: parse(d.value)?,
        });
    }
    let size = doc.len() + deltas.iter().map(|d| d.value.len()).sum::<usize>() + 64;
    let folded = fold(Some(base), values, &mut BuiltinsOnly).map_err(|f| f.message)?;
    Ok(to_text_sized(&folded, size))
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => out.extend_from_slice(n.as_str().as_bytes()),
        Value::String(t) => write_str(out, t.as_bytes()),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k.as_bytes());
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// Whether byte `c` needs an escape in a JSON string.
fn needs_escape(c: u8) -> bool {
    c < 0x20 || c == b'"' || c == b'\\'
}

/// `b` (a string's bytes) quoted, escaped as serde_json escapes: `\"`,
/// `\\`, the short forms of backspace, tab, newline, form feed and
/// carriage return, `\u00xx` for the other control characters; nothing
/// else.
fn write_str(out: &mut Vec<u8>, b: &[u8]) {
    out.reserve(b.len() + 2);
    out.push(b'"');
    // Short strings (most keys and values): one pass, no scanner set-up.
    if b.len() < 32 && !b.iter().any(|c| needs_escape(*c)) {
        out.extend_from_slice(b);
        out.push(b'"');
        return;
    }
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        let run = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
        let clean = !rest[..run].iter().fold(false, |any, c| any | (*c < 0x20));
        let plain = if clean {
            run
        } else {
            rest[..run].iter().position(|c| *c < 0x20).unwrap_or(run)
        };
        out.extend_from_slice(&rest[..plain]);
        i += plain;
        let Some(&c) = b.get(i) else { break };
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0a => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x0d => out.extend_from_slice(b"\\r"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 0xf)]);
            }
        }
        i += 1;
    }
    out.push(b'"');
}

/// Checks that `text` is JSON that a write may store, building nothing, and
/// returns its nesting depth (a scalar is 0, `[1]` is 1): at most
/// [`MAX_DOC_DEPTH`], so what a write stores can always be read back.
pub fn validate(text: &str) -> Result<usize, String> {
    let mut p = Parser::new(text, false, MAX_DOC_DEPTH);
    p.value(0)?;
    p.end()?;
    Ok(p.deepest)
}

/// The nesting depth of a value (a scalar is 0, `{"a":[]}` is 2).
/// Iterative, so no document can exhaust the stack here.
pub fn depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(m) => Box::new(m.values()),
            _ => continue,
        };
        deepest = deepest.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    deepest
}

struct Parser<'a> {
    b: &'a [u8],
    text: &'a str,
    i: usize,
    /// Build the value; without it only the grammar is checked.
    build: bool,
    /// Deepest nesting accepted.
    limit: usize,
    /// Deepest nesting met so far.
    deepest: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, build: bool, limit: usize) -> Self {
        Parser {
            b: text.as_bytes(),
            text,
            i: 0,
            build,
            limit,
            deepest: 0,
        }
    }

    fn run(mut self) -> Result<Value, String> {
        let v = self.value(0)?;
        self.end()?;
        Ok(v)
    }

    fn end(&mut self) -> Result<(), String> {
        self.ws();
        if self.i != self.b.len() {
            return Err(self.err("trailing characters"));
        }
        Ok(())
    }

    /// Enters a container one level below `depth`.
    fn nest(&mut self, depth: usize) -> Result<(), String> {
        if depth + 1 > self.limit {
            return Err(self.err(&format!("nested deeper than {} levels", self.limit)));
        }
        self.deepest = self.deepest.max(depth + 1);
        Ok(())
    }

    fn err(&self, what: &str) -> String {
        format!("{what} at byte {}", self.i)
    }

    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        self.ws();
        match self.b.get(self.i) {
            Some(b'{') => {
                self.nest(depth)?;
                self.i += 1;
                let mut m = Map::new();
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Value::Object(m));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.ws();
                    if self.b.get(self.i) != Some(&b':') {
                        return Err(self.err("expected ':'"));
                    }
                    self.i += 1;
                    let v = self.value(depth + 1)?;
                    if self.build {
                        m.insert(k, v);
                    }
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Value::Object(m));
                        }
                        _ => return Err(self.err("expected ',' or '}'")),
                    }
                }
            }
            Some(b'[') => {
                self.nest(depth)?;
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Value::Array(a));
                }
                loop {
                    let v = self.value(depth + 1)?;
                    if self.build {
                        a.push(v);
                    }
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Value::Array(a));
                        }
                        _ => return Err(self.err("expected ',' or ']'")),
                    }
                }
            }
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.word("true", Value::Bool(true)),
            Some(b'f') => self.word("false", Value::Bool(false)),
            Some(b'n') => self.word("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.err("expected a JSON value")),
        }
    }

    fn word(&mut self, w: &str, v: Value) -> Result<Value, String> {
        if self.b[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            Ok(v)
        } else {
            Err(self.err("expected a JSON value"))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.i;
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        if !self.build {
            return Ok(Value::Null);
        }
        let text = &self.text[start..self.i];
        Ok(Value::Number(serde_json::Number::from_string_unchecked(
            text.to_string(),
        )))
    }

    fn string(&mut self) -> Result<String, String> {
        if self.b.get(self.i) != Some(&b'"') {
            return Err(self.err("expected a string"));
        }
        let start = self.i;
        self.i += 1;
        let mut plain = true;
        loop {
            // A run up to the next quote or backslash, found a word at a
            // time; control characters in it are refused.
            let rest = self.b.get(self.i..).unwrap_or_default();
            let run = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
            let control = rest[..run].iter().fold(false, |any, c| any | (*c < 0x20));
            if control {
                self.i += rest[..run].iter().position(|c| *c < 0x20).unwrap_or(0);
                return Err(self.err("control character in a string"));
            }
            self.i += run;
            match self.b.get(self.i) {
                Some(b'"') => break,
                Some(_) => {
                    plain = false;
                    self.i += 2;
                }
                None => return Err(self.err("unterminated string")),
            }
        }
        self.i += 1;
        if plain {
            return Ok(if self.build {
                self.text[start + 1..self.i - 1].to_string()
            } else {
                String::new()
            });
        }
        serde_json::from_str(&self.text[start..self.i]).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        crate::path::parse(s).unwrap()
    }

    fn v(s: &str) -> Value {
        parse(s).unwrap()
    }

    #[test]
    fn parse_keeps_numbers_and_refuses_bad_json() {
        for t in [
            "1E2",
            "1e2",
            "-0",
            "0.10",
            "1.5E-7",
            "123456789012345678901234567890",
            "-1e+2",
        ] {
            assert_eq!(serde_json::to_string(&v(t)).unwrap(), t);
        }
        assert_eq!(
            serde_json::to_string(&v(
                r#" { "a\u0041" : [ "x\n\u00e9", true , null ] , "b":{} } "#
            ))
            .unwrap(),
            r#"{"aA":["x\né",true,null],"b":{}}"#
        );
        for bad in [
            "",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "[1,]",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "tru",
            "\"a",
            "\"\u{1}\"",
            "[1] x",
            "\"\\ud800\"",
            "nan",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
            assert!(validate(bad).is_err(), "{bad:?} validated");
        }
    }

    fn nested(n: usize) -> String {
        format!("{}1{}", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn writes_stay_within_the_budget_and_reads_accept_far_more() {
        assert_eq!(validate("1"), Ok(0));
        assert_eq!(validate(r#"{"a":[1,{"b":{}}]}"#), Ok(4));
        assert_eq!(validate(&nested(MAX_DOC_DEPTH)), Ok(MAX_DOC_DEPTH));
        assert!(validate(&nested(MAX_DOC_DEPTH + 1))
            .unwrap_err()
            .contains("deeper than 128"));
        // What an older build let a write build (512 path segments + 128)
        // reads back; only absurd text is refused.
        let old = nested(640);
        assert_eq!(depth(&parse(&old).unwrap()), 640);
        assert!(parse(&nested(MAX_READ_DEPTH)).is_ok());
        assert!(parse(&nested(MAX_READ_DEPTH + 1)).is_err());
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth(&v("1")), 0);
        assert_eq!(depth(&v("[]")), 1);
        assert_eq!(depth(&v(r#"{"a":[1,{"b":{}}],"c":[]}"#)), 4);
    }

    /// Wraps every value it is given in one more array.
    struct Deeper;
    impl Custom for Deeper {
        fn apply(
            &mut self,
            _: &str,
            cur: Option<Value>,
            _: Value,
        ) -> Result<Option<Value>, String> {
            Ok(Some(Value::Array(vec![cur.unwrap_or(Value::Null)])))
        }
    }

    #[test]
    fn a_custom_mode_cannot_build_past_the_budget() {
        let path = p("a.b");
        let step = |doc: Option<Value>| {
            fold(
                doc,
                [Delta {
                    path: &path,
                    mode: Mode::Custom("deeper"),
                    value: Value::Null,
                }],
                &mut Deeper,
            )
        };
        let mut doc = None;
        for _ in 0..MAX_DOC_DEPTH - 2 {
            doc = Some(step(doc).expect("within the budget"));
        }
        assert_eq!(depth(doc.as_ref().unwrap()), MAX_DOC_DEPTH);
        let e = step(doc).unwrap_err();
        assert_eq!(e.delta, 0);
        assert!(e.message.contains("budget"), "{}", e.message);
    }

    fn run(base: Option<&str>, deltas: &[(&str, &str, &str)]) -> String {
        let paths: Vec<Vec<String>> = deltas.iter().map(|d| p(d.0)).collect();
        let doc = fold(
            base.map(v),
            deltas.iter().zip(&paths).map(|(d, path)| Delta {
                path,
                mode: Mode::of(d.1),
                value: v(d.2),
            }),
            &mut BuiltinsOnly,
        )
        .unwrap();
        serde_json::to_string(&doc).unwrap()
    }

    #[test]
    fn numbers_keep_their_text() {
        assert_eq!(
            run(
                None,
                &[(
                    "$",
                    "set",
                    r#"{"n":12345678901234567,"d":1.50,"e":1E+2,"z":-0}"#
                )]
            ),
            r#"{"n":12345678901234567,"d":1.50,"e":1E+2,"z":-0}"#
        );
        assert_eq!(
            run(
                Some(r#"{"a":{"x":123456789012345678901234567890}}"#),
                &[("a", "merge", r#"{"y":0.1000}"#)]
            ),
            r#"{"a":{"x":123456789012345678901234567890,"y":0.1000}}"#
        );
    }

    #[test]
    fn key_order_is_first_write_order() {
        assert_eq!(
            run(
                None,
                &[
                    ("b", "set", "1"),
                    ("a", "set", "2"),
                    ("1", "set", "3"),
                    ("b", "set", "4")
                ]
            ),
            r#"{"b":4,"a":2,"1":3}"#
        );
        assert_eq!(
            run(
                Some(r#"{"b":1,"a":2}"#),
                &[("$", "merge", r#"{"b":null}"#), ("b", "set", "5")]
            ),
            r#"{"a":2,"b":5}"#
        );
    }

    #[test]
    fn modes_on_paths_and_arrays() {
        assert_eq!(
            run(None, &[("a.b.c", "set", "1")]),
            r#"{"a":{"b":{"c":1}}}"#
        );
        assert_eq!(
            run(Some(r#"{"a":5}"#), &[("a.b", "set", "1")]),
            r#"{"a":{"b":1}}"#
        );
        assert_eq!(
            run(Some(r#"{"a":5}"#), &[("a.b", "insert", "1")]),
            r#"{"a":5}"#
        );
        assert_eq!(
            run(Some(r#"{"a":1}"#), &[("a", "insert", "2")]),
            r#"{"a":1}"#
        );
        assert_eq!(run(None, &[("a.b", "replace", "2")]), "{}");
        assert_eq!(
            run(Some(r#"{"a":[1,2]}"#), &[("a.-", "set", "3")]),
            r#"{"a":[1,2,3]}"#
        );
        assert_eq!(
            run(Some(r#"{"a":[1,2]}"#), &[("a.2", "set", "3")]),
            r#"{"a":[1,2,3]}"#
        );
        assert_eq!(
            run(Some(r#"{"a":[1,2]}"#), &[("a.3", "set", "3")]),
            r#"{"a":[1,2]}"#
        );
        assert_eq!(
            run(
                Some(r#"{"a":[1,2]}"#),
                &[("a.99999999999999999999999", "set", "3")]
            ),
            r#"{"a":[1,2]}"#
        );
        assert_eq!(
            run(Some(r#"{"a":[1,2]}"#), &[("a.0", "replace", "9")]),
            r#"{"a":[9,2]}"#
        );
        assert_eq!(
            run(Some(r#"{"a":[1,2]}"#), &[("a.x", "set", "9")]),
            r#"{"a":{"x":9}}"#
        );
        assert_eq!(
            run(Some(r#"{"a":[1,2]}"#), &[("a.x", "merge", "9")]),
            r#"{"a":{"x":9}}"#
        );
        assert_eq!(
            run(Some(r#"{"a":[1,2]}"#), &[("a.x", "insert", "9")]),
            r#"{"a":[1,2]}"#
        );
        assert_eq!(
            run(None, &[("/__proto__/x", "set", "1")]),
            r#"{"__proto__":{"x":1}}"#
        );
    }

    #[test]
    fn merge_is_a_left_fold_and_null_is_a_document() {
        // Pre-combining these patches would resurrect "b".
        assert_eq!(
            run(
                Some(r#"{"k":{"a":1,"b":2}}"#),
                &[
                    ("$", "merge", r#"{"k":null}"#),
                    ("$", "merge", r#"{"k":{"a":1}}"#)
                ]
            ),
            r#"{"k":{"a":1}}"#
        );
        assert_eq!(
            run(Some(r#"{"a":"foo"}"#), &[("$", "merge", "null")]),
            "null"
        );
        assert_eq!(run(None, &[("a", "merge", r#"{"x":null}"#)]), r#"{"a":{}}"#);
    }

    #[test]
    fn rfc7396_appendix_a() {
        let cases = [
            (r#"{"a":"b"}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"b":"c"}"#, r#"{"a":"b","b":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"a":null}"#, r#"{}"#),
            (r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#, r#"{"b":"c"}"#),
            (r#"{"a":["b"]}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"c"}"#, r#"{"a":["b"]}"#, r#"{"a":["b"]}"#),
            (
                r#"{"a":{"b":"c"}}"#,
                r#"{"a":{"b":"d","c":null}}"#,
                r#"{"a":{"b":"d"}}"#,
            ),
            (r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, r#"{"a":[1]}"#),
            (r#"["a","b"]"#, r#"["c","d"]"#, r#"["c","d"]"#),
            (r#"{"a":"b"}"#, r#"["c"]"#, r#"["c"]"#),
            (r#"{"a":"foo"}"#, "null", "null"),
            (r#"{"a":"foo"}"#, r#""bar""#, r#""bar""#),
            (r#"{"e":null}"#, r#"{"a":1}"#, r#"{"e":null,"a":1}"#),
            ("[1,2]", r#"{"a":"b","c":null}"#, r#"{"a":"b"}"#),
            ("{}", r#"{"a":{"bb":{"ccc":null}}}"#, r#"{"a":{"bb":{}}}"#),
        ];
        for (target, patch, want) in cases {
            assert_eq!(
                run(Some(target), &[("$", "merge", patch)]),
                want,
                "{target} + {patch}"
            );
        }
    }

    #[test]
    fn unknown_custom_mode_names_the_delta() {
        let path = p("a");
        let e = fold(
            None,
            [
                Delta {
                    path: &path,
                    mode: Mode::Set,
                    value: v("1"),
                },
                Delta {
                    path: &path,
                    mode: Mode::of("incr"),
                    value: v("1"),
                },
            ],
            &mut BuiltinsOnly,
        )
        .unwrap_err();
        assert_eq!(e.delta, 1);
        assert!(e.message.contains("incr"), "{}", e.message);
    }

    #[test]
    fn get_walks_objects_and_arrays() {
        let d = v(r#"{"a":[{"b":null}]}"#);
        assert_eq!(get(&d, &p("a.0.b")), Some(&Value::Null));
        assert_eq!(get(&d, &p("a.1")), None);
        assert_eq!(get(&d, &p("a.x")), None);
        assert_eq!(get(&d, &p("$")), Some(&d));
    }

    proptest::proptest! {
        /// Strings read back exactly, escapes, quotes and any character
        /// included.
        #[test]
        fn strings_read_back(text in "(?s).{0,64}") {
            let json = serde_json::to_string(&text).unwrap();
            proptest::prop_assert_eq!(parse(&json).unwrap(), Value::String(text.clone()));
            proptest::prop_assert!(validate(&json).is_ok());
        }

        /// A quoted run of arbitrary characters (raw control characters,
        /// stray backslashes, unterminated) is accepted exactly when
        /// serde_json accepts it, and then reads the same.
        #[test]
        fn strings_are_refused_as_serde_json_refuses_them(body in "[a\\\\\"\\x00-\\x1f\\u{e9}u0-9]{0,12}") {
            let json = format!("\"{body}");
            let ours = parse(&json).ok();
            let theirs = serde_json::from_str::<Value>(&json).ok();
            proptest::prop_assert_eq!(&ours, &theirs, "{:?}", json);
            proptest::prop_assert_eq!(validate(&json).is_ok(), theirs.is_some(), "{:?}", json);
        }
    }

    fn arb_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "(?s).{0,24}".prop_map(Value::String),
            "[a\\x00-\\x1f\\x7f\"\\\\/\\u{e9}\\u{1f600}]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(("(?s).{0,8}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn arb_delta() -> impl proptest::strategy::Strategy<Value = (String, &'static str, Value)> {
        use proptest::prelude::*;
        (
            prop_oneof![
                Just("$"),
                Just("a"),
                Just("a.b"),
                Just("0"),
                Just("a.0"),
                Just("/b~1c")
            ],
            prop_oneof![Just("set"), Just("insert"), Just("replace"), Just("merge")],
            arb_value(),
        )
            .prop_map(|(p, m, v)| (p.to_string(), m, v))
    }

    proptest::proptest! {
        /// A document's text extended by more deltas is the text of the
        /// fold of everything from the start, wherever the fold is cut.
        #[test]
        fn extend_equals_one_fold(
            base in arb_value(),
            deltas in proptest::collection::vec(arb_delta(), 0..8),
            cut in 0usize..8,
        ) {
            let cut = cut.min(deltas.len());
            let paths: Vec<Vec<String>> = deltas.iter().map(|d| p(&d.0)).collect();
            let whole = |upto: usize| {
                let ds = deltas[..upto].iter().zip(&paths).map(|(d, path)| Delta {
                    path,
                    mode: Mode::of(d.1),
                    value: d.2.clone(),
                });
                fold(Some(base.clone()), ds, &mut BuiltinsOnly).map(|v| to_text(&v))
            };
            let texts: Vec<String> = deltas.iter().map(|d| to_text(&d.2)).collect();
            let rest: Vec<TextDelta> = (cut..deltas.len())
                .map(|i| TextDelta { path: &paths[i], mode: deltas[i].1, value: &texts[i] })
                .collect();
            let (Ok(first), Ok(all)) = (whole(cut), whole(deltas.len())) else {
                return Ok(());
            };
            proptest::prop_assert_eq!(extend(&first, &rest), Ok(all));
        }
    }

    proptest::proptest! {
        /// `to_text` writes exactly what serde_json writes.
        #[test]
        fn to_text_equals_serde_json(v in arb_value()) {
            proptest::prop_assert_eq!(to_text(&v), serde_json::to_string(&v).unwrap());
        }
    }
}
