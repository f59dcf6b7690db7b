//! Write modes. Built-ins are case-insensitive keywords; a custom mode is the
//! name of a JS file the sidecar loaded (`<name>.js`), case-sensitive.

use crate::LakeError;

/// Largest custom mode name accepted.
pub const MAX_MODE_BYTES: usize = 64;

/// Normalises a mode argument: built-ins to their lowercase name, custom
/// names checked for shape (`[A-Za-z0-9_-]`, at most 64 bytes) and kept.
pub fn parse(arg: &str) -> Result<String, LakeError> {
    let lower = arg.to_ascii_lowercase();
    if is_builtin(&lower) {
        return Ok(lower);
    }
    if arg.is_empty()
        || arg.len() > MAX_MODE_BYTES
        || !arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(LakeError::invalid(format!(
            "invalid mode '{arg}': use SET, INSERT, REPLACE, MERGE or a loaded custom mode name ([A-Za-z0-9_-], at most {MAX_MODE_BYTES} bytes)"
        )));
    }
    Ok(arg.to_string())
}

/// The built-in mode names, lowercase.
pub const BUILTINS: [&str; 4] = ["set", "insert", "replace", "merge"];

pub fn is_builtin(name: &str) -> bool {
    BUILTINS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_case_insensitive() {
        assert_eq!(parse("SET").unwrap(), "set");
        assert_eq!(parse("Merge").unwrap(), "merge");
        assert_eq!(parse("my_mode-2").unwrap(), "my_mode-2");
        assert!(parse("").is_err());
        assert!(parse("a b").is_err());
        assert!(parse("../x").is_err());
        assert!(parse(&"m".repeat(65)).is_err());
    }
}
