//! Field paths: where in the catalog's document a write applies.
//!
//! Three spellings:
//! - `$` is the root of the document.
//! - A path starting with `/` is an RFC 6901 JSON Pointer: `/user.info` is the
//!   single key `user.info`, `~1` stands for `/` and `~0` for `~`; any other
//!   `~` escape is an input error.
//! - Anything else is the dot form: `a.b.c`, split on every `.`; an empty
//!   segment (`a..b`, `.a`, `a.`) is an input error.
//!
//! A parsed path is a list of string segments; whether a segment indexes an
//! array is decided at merge time, against the document (see the merge engine).
//! The field text itself is at most [`MAX_FIELD_BYTES`] and holds no control
//! characters; it may contain `:` (members split at the last `:`).

use crate::{LakeError, MAX_DOC_DEPTH, MAX_FIELD_BYTES};

/// The depth budget of a write: `segments` path segments plus a value
/// nested `value_depth` levels must fit in [`MAX_DOC_DEPTH`], so every
/// document a fold builds from it reads back. The module checks the path
/// alone (depth 0) before anything is sent; the sidecar checks both.
pub fn check_write_depth(segments: usize, value_depth: usize) -> Result<(), LakeError> {
    if segments + value_depth > MAX_DOC_DEPTH {
        return Err(LakeError::invalid(format!(
            "field path of {segments} segments and a value nested {value_depth} levels deep exceed the depth budget of {MAX_DOC_DEPTH} levels; nothing was stored"
        )));
    }
    Ok(())
}

/// Parses a field path into its segments; the root is the empty list.
pub fn parse(field: &str) -> Result<Vec<String>, LakeError> {
    if field.is_empty() {
        return Err(LakeError::invalid(
            "invalid field: empty (use '$' for the root)",
        ));
    }
    if field.len() > MAX_FIELD_BYTES {
        return Err(LakeError::invalid(format!(
            "invalid field: longer than {MAX_FIELD_BYTES} bytes"
        )));
    }
    if field.chars().any(char::is_control) {
        return Err(LakeError::invalid(
            "invalid field: control characters are not allowed",
        ));
    }
    if field == "$" {
        return Ok(Vec::new());
    }
    if let Some(pointer) = field.strip_prefix('/') {
        return pointer.split('/').map(unescape_pointer_segment).collect();
    }
    field
        .split('.')
        .map(|seg| {
            if seg.is_empty() {
                Err(LakeError::invalid(format!(
                    "invalid field '{field}': empty segment in dot path (use a /json/pointer for unusual keys)"
                )))
            } else {
                Ok(seg.to_string())
            }
        })
        .collect()
}

fn unescape_pointer_segment(seg: &str) -> Result<String, LakeError> {
    let mut out = String::with_capacity(seg.len());
    let mut chars = seg.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('~'),
            Some('1') => out.push('/'),
            _ => {
                return Err(LakeError::invalid(format!(
                    "invalid field: bad JSON Pointer escape in '{seg}' (only ~0 and ~1)"
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn root() {
        assert!(p("$").is_empty());
    }

    #[test]
    fn dot_form() {
        assert_eq!(p("a.b.c"), ["a", "b", "c"]);
        assert_eq!(p("profile.name"), ["profile", "name"]);
        assert_eq!(p("a:b.c"), ["a:b", "c"]);
        assert_eq!(p("items.0"), ["items", "0"]);
    }

    #[test]
    fn pointer_form() {
        assert_eq!(p("/user.info"), ["user.info"]);
        assert_eq!(p("/a~1b/c~0d"), ["a/b", "c~d"]);
        assert_eq!(p("/a/0/-"), ["a", "0", "-"]);
        assert_eq!(p("/"), [""]);
        assert_eq!(p("/~01"), ["~1"]);
    }

    #[test]
    fn write_depth_budget() {
        assert!(check_write_depth(MAX_DOC_DEPTH, 0).is_ok());
        assert!(check_write_depth(100, 28).is_ok());
        let e = check_write_depth(100, 29).unwrap_err();
        assert!(e.message.contains("depth budget of 128"), "{}", e.message);
        assert!(check_write_depth(MAX_DOC_DEPTH + 1, 0).is_err());
    }

    #[test]
    fn rejected() {
        let long = "a".repeat(513);
        for f in [
            "",
            "a..b",
            ".a",
            "a.",
            "/a~2",
            "/a~",
            "a\tb",
            "a\nb",
            long.as_str(),
        ] {
            assert!(parse(f).is_err(), "{f:?} should be rejected");
        }
        assert!(parse(&"a".repeat(512)).is_ok());
    }
}
