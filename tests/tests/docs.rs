//! The documentation as a newcomer walks it: every relative link in
//! README.md and docs/*.md resolves (file and heading), and every
//! `$ redis-cli ...` example runs, in order, against a live Lake (one per
//! page) and answers as written.
//!
//! Example rules: the lines after a `$ redis-cli` line, up to the next one
//! or the end of the block, are its answer as `redis-cli` prints it to a
//! terminal; none written means only "not an error"; a last line `...`
//! means "and more". Stamps (16-digit integers) and uuids differ from run
//! to run: each one written in a page stands for the value the run gave at
//! that place the first time it appears, must be that same value wherever
//! it appears again, and is replaced by it in later commands.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lake_tests::{err_text, redis, Lake};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn pages() -> Vec<PathBuf> {
    let mut out = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    out.extend(docs);
    out
}

/// GitHub's anchor of a heading: lowercase, punctuation dropped, spaces
/// to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim_start_matches('#')
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The lines of a page outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    prose(text)
        .into_iter()
        .filter(|l| l.starts_with('#'))
        .map(slug)
        .collect()
}

#[test]
fn every_link_resolves() {
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("page");
        for line in prose(&text) {
            let mut rest = line;
            while let Some(i) = rest.find("](") {
                let tail = &rest[i + 2..];
                let Some(end) = tail.find(')') else { break };
                let target = &tail[..end];
                rest = &tail[end..];
                if target.starts_with("http://") || target.starts_with("https://") {
                    continue;
                }
                let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
                let dest = if file.is_empty() {
                    page.clone()
                } else {
                    page.parent().expect("dir").join(file)
                };
                assert!(
                    dest.exists(),
                    "{}: link to {target}: no such file",
                    page.display()
                );
                if !anchor.is_empty() {
                    let dtext = std::fs::read_to_string(&dest).expect("target page");
                    assert!(
                        anchors(&dtext).iter().any(|a| a == anchor),
                        "{}: link to {target}: no such heading",
                        page.display()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "only {checked} links found");
}

/// One `$ redis-cli` example: its arguments and the answer written.
struct Example {
    page: String,
    line: usize,
    command: String,
    answer: Vec<String>,
}

fn examples(page: &Path) -> Vec<Example> {
    let text = std::fs::read_to_string(page).expect("page");
    let mut out: Vec<Example> = Vec::new();
    let mut fenced = false;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ redis-cli ") {
            out.push(Example {
                page: page.display().to_string(),
                line: n + 1,
                command: cmd.to_string(),
                answer: Vec::new(),
            });
        } else if let Some(e) = out
            .last_mut()
            .filter(|e| e.line + 1 + e.answer.len() == n + 1)
        {
            e.answer.push(line.to_string());
        }
    }
    out
}

/// Splits a command line as a POSIX shell would (quotes, no expansion),
/// dropping `redis-cli`'s own `-p <port>` and `-c`.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' => words.extend(cur.take()),
            '\'' => {
                let w = cur.get_or_insert_with(String::new);
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    w.push(c);
                }
            }
            '"' => {
                let w = cur.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
            }
            c => cur.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(cur);
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "-p" => {
                it.next();
            }
            "-c" => {}
            _ => out.push(w),
        }
    }
    out
}

/// A reply as `redis-cli` prints it on a terminal (`cliFormatReplyTTY`).
fn format(v: &redis::Value, prefix: &str) -> String {
    use redis::Value as V;
    match v {
        V::Nil => "(nil)\n".into(),
        V::Int(i) => format!("(integer) {i}\n"),
        V::Okay => "OK\n".into(),
        V::SimpleString(s) => format!("{s}\n"),
        V::BulkString(b) => format!("{}\n", repr(b)),
        V::Array(items) if items.is_empty() => "(empty array)\n".into(),
        V::Array(items) => {
            let width = items.len().to_string().len();
            let inner = format!("{prefix}{}", " ".repeat(width + 2));
            let mut out = String::new();
            for (i, item) in items.iter().enumerate() {
                let lead = if i == 0 { "" } else { prefix };
                out.push_str(&format!("{lead}{:>width$}) ", i + 1));
                out.push_str(&format(item, &inner));
            }
            out
        }
        other => format!("{other:?}\n"),
    }
}

/// `sdscatrepr`: quoted, with C escapes and `\xHH` for other bytes.
fn repr(b: &[u8]) -> String {
    let mut s = String::from("\"");
    for &c in b {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            7 => s.push_str("\\a"),
            8 => s.push_str("\\b"),
            c if c.is_ascii_graphic() || c == b' ' => s.push(c as char),
            c => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push('"');
    s
}

/// A stamp or uuid at the start of `s`: its length.
fn placeholder(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 16 {
        return Some(16);
    }
    let uuid = b.len() >= 36
        && b[..36].iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    uuid.then_some(36)
}

/// Matches `actual` against `written`, binding each stamp or uuid written
/// to what the run gave (and requiring the same binding where it repeats).
fn matches(written: &str, actual: &str, seen: &mut HashMap<String, String>) -> bool {
    let (mut w, mut a) = (written, actual);
    loop {
        let boundary = |s: &str, i: usize| i == 0 || !s.as_bytes()[i - 1].is_ascii_alphanumeric();
        let at = (0..=w.len())
            .find(|&i| w.is_char_boundary(i) && boundary(w, i) && placeholder(&w[i..]).is_some());
        let Some(i) = at else { return w == a };
        if a.len() < i || w[..i] != a[..i] {
            return false;
        }
        let wl = placeholder(&w[i..]).unwrap_or(0);
        let Some(al) = placeholder(&a[i..]).filter(|&l| l == wl) else {
            return false;
        };
        let (wt, at_) = (&w[i..i + wl], &a[i..i + al]);
        match seen.get(wt) {
            Some(bound) if bound != at_ => return false,
            _ => {
                seen.insert(wt.to_string(), at_.to_string());
            }
        }
        w = &w[i + wl..];
        a = &a[i + al..];
    }
}

#[test]
fn every_redis_cli_example_answers_as_written() {
    let mut ran = 0;
    for page in pages() {
        let examples = examples(&page);
        if examples.is_empty() {
            continue;
        }
        let lake = Lake::start();
        let mut con = lake.con();
        let mut seen: HashMap<String, String> = HashMap::new();
        for ex in examples {
            let mut words = shell_words(&ex.command);
            for w in &mut words {
                for (written, actual) in &seen {
                    *w = w.replace(written.as_str(), actual);
                }
            }
            let where_ = format!("{}:{}: {}", ex.page, ex.line, ex.command);
            let mut cmd = redis::cmd(&words[0]);
            cmd.arg(&words[1..]);
            let got = match cmd.query::<redis::Value>(&mut con) {
                Ok(v) => format(&v, ""),
                Err(e) if ex.answer.is_empty() => panic!("{where_}: {}", err_text(e)),
                Err(e) => format!("(error) {}\n", err_text(e)),
            };
            let got: Vec<&str> = got.lines().collect();
            let (written, more) = match ex.answer.split_last() {
                Some((last, rest)) if last == "..." => (rest, true),
                _ => (&ex.answer[..], false),
            };
            if ex.answer.is_empty() {
                ran += 1;
                continue;
            }
            assert!(
                if more {
                    got.len() >= written.len()
                } else {
                    got.len() == written.len()
                },
                "{where_}: answered\n{}\nwritten\n{}",
                got.join("\n"),
                ex.answer.join("\n")
            );
            for (w, a) in written.iter().zip(&got) {
                assert!(
                    matches(w, a, &mut seen),
                    "{where_}: answered\n{}\nwritten\n{}",
                    got.join("\n"),
                    ex.answer.join("\n")
                );
            }
            ran += 1;
        }
        lake.assert_no_crash();
    }
    assert!(ran >= 15, "only {ran} examples ran");
}

#[test]
fn the_rules_hold_for_the_matcher() {
    let mut seen = HashMap::new();
    assert!(matches(
        "2) (integer) 1795642755588008",
        "2) (integer) 1796262165522431",
        &mut seen
    ));
    // The same written stamp must be the same value again.
    assert!(!matches(
        "x 1795642755588008",
        "x 1796262165522432",
        &mut seen
    ));
    assert!(matches(
        "x 1795642755588008",
        "x 1796262165522431",
        &mut seen
    ));
    assert!(!matches("\"a\"", "\"b\"", &mut seen));
    assert!(matches(
        "3) \"0f8fad5b-d9cb-469f-a165-70867728950e\"",
        "3) \"750a2246-7ef1-4eec-a2b9-431b5bba1330\"",
        &mut seen
    ));
    assert_eq!(
        shell_words(r#"-p 6379 LAKE.WRITE users p '{"first":"John"}' "a\"b""#),
        vec!["LAKE.WRITE", "users", "p", r#"{"first":"John"}"#, "a\"b"]
    );
    let v = redis::Value::Array(vec![
        redis::Value::Array(vec![
            redis::Value::Int(1),
            redis::Value::BulkString(b"x".to_vec()),
        ]),
        redis::Value::Nil,
    ]);
    assert_eq!(format(&v, ""), "1) 1) (integer) 1\n   2) \"x\"\n2) (nil)\n");
}
