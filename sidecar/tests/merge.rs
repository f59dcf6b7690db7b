//! The merge engine's semantics, tested directly (no Redis, no sockets), on
//! the native engine, and held against the JavaScript built-ins by a
//! differential property test:
//! path forms, the four built-in modes, RFC 7396 Appendix A, `__proto__` as
//! data, and containment of hostile user modes.

use std::time::Duration;

use std::sync::Arc;

use lake_sidecar::merge::{
    fold_input, Delta, Engine, Fold, FoldDelta, FoldError, Limits, UserMode,
};
use serde_json::value::RawValue;
use serde_json::{json, Value};

fn engine_with(user: Vec<UserMode>) -> Engine {
    let limits = Limits {
        memory_bytes: 64 << 20,
        per_delta: Duration::from_millis(300),
        ..Limits::default()
    };
    Engine::start(1, limits, user).expect("engine starts")
}

fn engine() -> Engine {
    engine_with(Vec::new())
}

fn job(base: Option<&Value>, writes: &[(&str, &str, Value)], path: Option<&str>) -> Fold {
    Fold {
        base: base.map(|b| Arc::from(b.to_string())),
        tree: None,
        deltas: writes
            .iter()
            .map(|w| Delta {
                path: lake_shared::path::parse(w.0).unwrap(),
                mode: w.1.to_string(),
                value: RawValue::from_string(w.2.to_string()).unwrap(),
            })
            .collect(),
        path: path.map(|p| lake_shared::path::parse(p).unwrap()),
    }
}

/// Folds `(field, mode, value)` writes over `base` with the native engine
/// and returns the document.
async fn fold(
    e: &Engine,
    base: Option<Value>,
    writes: &[(&str, &str, Value)],
) -> Result<Value, FoldError> {
    let out = e.fold(job(base.as_ref(), writes, None)).await?;
    Ok(serde_json::from_str(&out.doc.expect("doc")).unwrap())
}

/// The same fold in the JavaScript driver (built-ins in JS).
async fn fold_js(
    e: &Engine,
    base: Option<Value>,
    writes: &[(&str, &str, Value)],
) -> Result<Value, FoldError> {
    let paths: Vec<Vec<String>> = writes
        .iter()
        .map(|w| lake_shared::path::parse(w.0).unwrap())
        .collect();
    let values: Vec<String> = writes.iter().map(|w| w.2.to_string()).collect();
    let deltas: Vec<FoldDelta> = writes
        .iter()
        .enumerate()
        .map(|(i, w)| FoldDelta {
            path: &paths[i],
            mode: w.1,
            value: &values[i],
        })
        .collect();
    let base = base.map(|b| b.to_string());
    let out = e
        .fold_js(fold_input(base.as_deref(), &deltas, None, true))
        .await?;
    Ok(serde_json::from_str(&out.doc.expect("doc requested")).unwrap())
}

async fn one(e: &Engine, base: Value, field: &str, mode: &str, value: Value) -> Value {
    fold(e, Some(base), &[(field, mode, value)]).await.unwrap()
}

#[tokio::test]
async fn set_creates_parents_and_replaces_what_is_in_the_way() {
    let e = engine();
    assert_eq!(
        one(&e, json!({}), "a.b.c", "set", json!(1)).await,
        json!({"a":{"b":{"c":1}}})
    );
    assert_eq!(
        one(&e, json!({"a":5}), "a.b", "set", json!(1)).await,
        json!({"a":{"b":1}})
    );
    assert_eq!(
        one(&e, json!({"a":null}), "a.b", "set", json!(1)).await,
        json!({"a":{"b":1}})
    );
    assert_eq!(
        one(&e, json!({"a":[1,2]}), "a.b", "set", json!(1)).await,
        json!({"a":{"b":1}})
    );
    assert_eq!(
        one(&e, json!({"a":1}), "$", "set", json!([1])).await,
        json!([1])
    );
    assert_eq!(
        one(&e, json!(7), "a", "set", json!(1)).await,
        json!({"a":1})
    );
}

#[tokio::test]
async fn pointer_and_array_segments() {
    let e = engine();
    assert_eq!(
        one(&e, json!({}), "/user.info", "set", json!(1)).await,
        json!({"user.info":1})
    );
    assert_eq!(
        one(&e, json!({}), "/a~1b/c~0d", "set", json!(1)).await,
        json!({"a/b":{"c~d":1}})
    );
    let arr = json!({"a":[10,20,30]});
    assert_eq!(
        one(&e, arr.clone(), "a.1", "set", json!(9)).await,
        json!({"a":[10,9,30]})
    );
    assert_eq!(
        one(&e, arr.clone(), "/a/-", "set", json!(40)).await,
        json!({"a":[10,20,30,40]})
    );
    assert_eq!(
        one(&e, arr.clone(), "a.3", "set", json!(40)).await,
        json!({"a":[10,20,30,40]})
    );
    assert_eq!(
        one(&e, arr.clone(), "a.7", "set", json!(1)).await,
        arr,
        "past the end: unchanged"
    );
    assert_eq!(
        one(&e, arr.clone(), "/a/-", "insert", json!(1)).await,
        json!({"a":[10,20,30,1]})
    );
    assert_eq!(
        one(&e, arr.clone(), "a.0", "merge", json!({"x":1})).await,
        json!({"a":[{"x":1},20,30]})
    );
    assert_eq!(one(&e, arr.clone(), "/a/-", "replace", json!(1)).await, arr);
    assert_eq!(
        one(&e, json!({"a":{"0":1}}), "a.0", "set", json!(2)).await,
        json!({"a":{"0":2}})
    );
}

#[tokio::test]
async fn insert_only_where_absent() {
    let e = engine();
    assert_eq!(
        one(&e, json!({}), "a.b", "insert", json!(1)).await,
        json!({"a":{"b":1}})
    );
    assert_eq!(
        one(&e, json!({"a":{"b":0}}), "a.b", "insert", json!(1)).await,
        json!({"a":{"b":0}})
    );
    for base in [json!({"a":5}), json!({"a":null}), json!({"a":[1]})] {
        assert_eq!(
            one(&e, base.clone(), "a.b", "insert", json!(1)).await,
            base,
            "value in the way"
        );
    }
    assert_eq!(
        one(&e, json!({"a":{}}), "a.b.c", "insert", json!(1)).await,
        json!({"a":{"b":{"c":1}}})
    );
}

#[tokio::test]
async fn replace_only_where_the_whole_path_exists() {
    let e = engine();
    assert_eq!(
        one(&e, json!({"a":{"b":0}}), "a.b", "replace", json!(1)).await,
        json!({"a":{"b":1}})
    );
    assert_eq!(
        one(&e, json!({"a":{}}), "a.b", "replace", json!(1)).await,
        json!({"a":{}})
    );
    assert_eq!(
        one(&e, json!({}), "a.b", "replace", json!(1)).await,
        json!({})
    );
    assert_eq!(
        one(&e, json!({"a":5}), "a.b", "replace", json!(1)).await,
        json!({"a":5})
    );
    assert_eq!(
        one(&e, json!({"a":null}), "a", "replace", json!(1)).await,
        json!({"a":1})
    );
}

#[tokio::test]
async fn merge_at_a_path() {
    let e = engine();
    assert_eq!(
        one(
            &e,
            json!({"p":{"a":1,"b":2}}),
            "p",
            "merge",
            json!({"b":null,"c":3})
        )
        .await,
        json!({"p":{"a":1,"c":3}})
    );
    assert_eq!(
        one(&e, json!({"p":5}), "p", "merge", json!({"a":{"b":null}})).await,
        json!({"p":{"a":{}}})
    );
    assert_eq!(
        one(&e, json!({}), "x.y", "merge", json!({"a":1})).await,
        json!({"x":{"y":{"a":1}}})
    );
    assert_eq!(
        one(&e, json!({"p":{"a":1}}), "p", "merge", json!([1])).await,
        json!({"p":[1]})
    );
}

/// RFC 7396 Appendix A, applied at the root.
#[tokio::test]
async fn rfc7396_appendix_a() {
    let cases = [
        (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
        (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
        (json!({"a":"b"}), json!({"a":null}), json!({})),
        (
            json!({"a":"b","b":"c"}),
            json!({"a":null}),
            json!({"b":"c"}),
        ),
        (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
        (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
        (
            json!({"a":{"b":"c"}}),
            json!({"a":{"b":"d","c":null}}),
            json!({"a":{"b":"d"}}),
        ),
        (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
        (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
        (json!({"a":"b"}), json!(["c"]), json!(["c"])),
        (json!({"a":"foo"}), json!(null), json!(null)),
        (json!({"a":"foo"}), json!("bar"), json!("bar")),
        (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
        (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
        (
            json!({}),
            json!({"a":{"bb":{"ccc":null}}}),
            json!({"a":{"bb":{}}}),
        ),
    ];
    let e = engine();
    for (target, patch, want) in cases {
        assert_eq!(
            one(&e, target.clone(), "$", "merge", patch.clone()).await,
            want,
            "{target} + {patch}"
        );
    }
}

/// Pre-combining patches would resurrect `old`; a left fold must not.
#[tokio::test]
async fn rfc7396_trap_is_a_left_fold() {
    let e = engine();
    let writes = [
        ("$", "set", json!({"k":{"old":2}})),
        ("$", "merge", json!({"k":null})),
        ("$", "merge", json!({"k":{"a":1}})),
    ];
    assert_eq!(fold(&e, None, &writes).await.unwrap(), json!({"k":{"a":1}}));
    // Split at every point, as a snapshot would: same answer.
    for cut in 0..=writes.len() {
        let base = fold(&e, None, &writes[..cut]).await.unwrap();
        assert_eq!(
            fold(&e, Some(base), &writes[cut..]).await.unwrap(),
            json!({"k":{"a":1}})
        );
    }
}

#[tokio::test]
async fn proto_and_constructor_are_ordinary_keys() {
    let e = engine();
    let base: Value = serde_json::from_str(r#"{"__proto__":{"x":1},"constructor":2}"#).unwrap();
    let got = fold(
        &e,
        Some(base),
        &[
            ("__proto__.y", "set", json!(3)),
            ("constructor", "merge", json!({"a":1})),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        got,
        serde_json::from_str::<Value>(r#"{"__proto__":{"x":1,"y":3},"constructor":{"a":1}}"#)
            .unwrap()
    );
    let got = one(
        &e,
        json!({}),
        "$",
        "merge",
        serde_json::from_str(r#"{"__proto__":{"polluted":true}}"#).unwrap(),
    )
    .await;
    assert_eq!(
        got,
        serde_json::from_str::<Value>(r#"{"__proto__":{"polluted":true}}"#).unwrap()
    );
    assert_eq!(
        one(&e, json!({}), "/a\"b'c", "set", json!(1)).await,
        json!({"a\"b'c":1})
    );
}

#[tokio::test]
async fn value_at_path_and_absent_path() {
    let e = engine();
    let base = json!({"a":{"b":[1,2],"n":null}});
    let out = e.fold(job(Some(&base), &[], Some("a.b"))).await.unwrap();
    assert_eq!(out.at_path.as_deref(), Some("[1,2]"));
    let out = e.fold(job(Some(&base), &[], Some("a.n"))).await.unwrap();
    assert_eq!(
        out.at_path.as_deref(),
        Some("null"),
        "a null value is a value"
    );
    let out = e.fold(job(Some(&base), &[], Some("nope"))).await.unwrap();
    assert_eq!(out.at_path, None);
}

#[tokio::test]
async fn numbers_keep_their_exact_text_through_every_built_in_mode() {
    let e = engine();
    let big = r#"{"id":12345678901234567,"amount":0.10,"t":1.5E+300,"neg":-0}"#;
    let writes = [
        ("$", "set", big),
        ("more", "merge", r#"{"x":123456789012345678901234567890}"#),
        ("more.y", "insert", "9007199254740993"),
        ("id", "replace", "18446744073709551616"),
    ];
    let out = e
        .fold(Fold {
            base: None,
            tree: None,
            deltas: writes
                .iter()
                .map(|w| Delta {
                    path: lake_shared::path::parse(w.0).unwrap(),
                    mode: w.1.into(),
                    value: RawValue::from_string(w.2.into()).unwrap(),
                })
                .collect(),
            path: None,
        })
        .await
        .unwrap();
    assert_eq!(
        out.doc.unwrap(),
        r#"{"id":18446744073709551616,"amount":0.10,"t":1.5E+300,"neg":-0,"more":{"x":123456789012345678901234567890,"y":9007199254740993}}"#
    );
}

/// What a custom mode sees of a number JavaScript cannot hold: a double.
/// Only the value at its path passes through JavaScript; the rest of the
/// document keeps every digit.
#[tokio::test]
async fn custom_modes_see_doubles_and_leave_other_numbers_exact() {
    let e = engine_with(vec![mode("same", "function merge(cur, v) { return cur; }")]);
    let base = r#"{"big":12345678901234567,"keep":12345678901234567}"#;
    let out = e
        .fold(Fold {
            base: Some(Arc::from(base)),
            tree: None,
            deltas: vec![Delta {
                path: vec!["big".into()],
                mode: "same".into(),
                value: RawValue::from_string("0".into()).unwrap(),
            }],
            path: None,
        })
        .await
        .unwrap();
    assert_eq!(
        out.doc.unwrap(),
        r#"{"big":12345678901234568,"keep":12345678901234567}"#
    );
}

fn mode(name: &str, source: &str) -> UserMode {
    UserMode {
        name: name.into(),
        source: source.into(),
    }
}

#[tokio::test]
async fn user_modes_and_their_failures_are_contained() {
    let e = engine_with(vec![
        mode(
            "incr",
            "function merge(cur, v) { return (cur === undefined ? 0 : cur) + v; }",
        ),
        mode("drop", "function merge(cur, v) { return undefined; }"),
        mode(
            "boom",
            "function merge(cur, v) { throw new Error('no ' + v); }",
        ),
        mode("spin", "function merge(cur, v) { for (;;) {} }"),
        mode(
            "hog",
            "function merge(cur, v) { const a = []; for (;;) a.push(new Array(1e5).fill(1)); }",
        ),
        mode(
            "deep",
            "function merge(cur, v) { function r(n) { return r(n + 1) + 1; } return r(0); }",
        ),
    ]);
    let got = fold(
        &e,
        None,
        &[
            ("n", "incr", json!(2)),
            ("n", "incr", json!(3)),
            ("x", "drop", json!(0)),
        ],
    )
    .await
    .unwrap();
    assert_eq!(got, json!({"n":5}));
    assert_eq!(
        one(&e, json!({"n":1,"m":2}), "n", "drop", json!(0)).await,
        json!({"m":2})
    );

    for (m, needle) in [
        ("boom", "no 7"),
        ("spin", "deadline"),
        ("hog", "memory"),
        ("deep", "stack"),
    ] {
        let err = fold(&e, None, &[("a", "set", json!(1)), ("a", m, json!(7))])
            .await
            .unwrap_err();
        assert_eq!(err.delta, Some(1), "{m}: {err:?}");
        assert!(
            err.message.to_lowercase().contains(needle),
            "{m}: {}",
            err.message
        );
        // The engine recovers: a plain fold works right after.
        assert_eq!(
            one(&e, json!({}), "ok", "set", json!(true)).await,
            json!({"ok":true})
        );
    }
    assert!(e.rebuilds() >= 4);
}

#[tokio::test]
async fn unknown_mode_at_read_is_an_error_naming_it() {
    let e = engine();
    let err = fold(&e, None, &[("a", "gone", json!(1))])
        .await
        .unwrap_err();
    assert_eq!(err.delta, Some(0));
    assert!(err.message.contains("gone"));
}

#[test]
fn broken_mode_file_stops_start_up() {
    let err = Engine::start(1, Limits::default(), vec![mode("bad", "function merge( {")])
        .err()
        .unwrap();
    assert!(err.contains("bad"), "{err}");
    let err = Engine::start(1, Limits::default(), vec![mode("none", "var x = 1;")])
        .err()
        .unwrap();
    assert!(err.contains("none"), "{err}");
}

mod differential {
    //! Random documents and writes: the native engine and the JavaScript
    //! built-ins must produce the same document, on values JavaScript
    //! represents exactly (small integers), compared as values: objects as
    //! sets of members, since JavaScript lists integer-like keys first and
    //! Lake keeps the order they were written in.

    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("c".to_string()),
            Just("__proto__".to_string()),
            "[a-d]{2}",
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-1000i64..1000).prop_map(Value::from),
            "[a-z ]{0,4}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::vec((key(), inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn field() -> impl Strategy<Value = String> {
        let seg = prop_oneof![
            key(),
            Just("0".to_string()),
            Just("1".to_string()),
            Just("-".to_string())
        ];
        prop_oneof![
            Just("$".to_string()),
            prop::collection::vec(seg, 1..4).prop_map(|s| format!("/{}", s.join("/"))),
        ]
    }

    fn mode() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("set"), Just("insert"), Just("replace"), Just("merge")]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn native_equals_javascript(
            base in prop::option::of(value()),
            writes in prop::collection::vec((field(), mode(), value()), 1..6),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let e = ENGINE.with(|e| e.clone());
            let w: Vec<(&str, &str, Value)> =
                writes.iter().map(|(f, m, v)| (f.as_str(), *m, v.clone())).collect();
            let native = rt.block_on(fold(&e, base.clone(), &w)).unwrap();
            let js = rt.block_on(fold_js(&e, base.clone(), &w)).unwrap();
            // Values compare objects as sets of members: JavaScript lists
            // integer-like keys first, Lake keeps the order they were written.
            prop_assert_eq!(&native, &js, "base {:?} writes {:?}", base, writes);
        }
    }

    thread_local! {
        static ENGINE: Engine = engine();
    }
}

/// A fold handed the base already parsed (the cache's tree) answers exactly
/// what the fold of its text answers, and hands back the tree of its result.
#[tokio::test]
async fn folding_onto_a_cached_tree_equals_folding_onto_its_text() {
    let e = engine();
    let base_text = r#"{"a":{"b":1.50,"c":[1,2,3]},"z":12345678901234567890,"k":"v"}"#;
    let writes = [
        ("a.b", "set", json!(2)),
        ("a.c.1", "replace", json!({"x": null})),
        ("a", "merge", json!({"c": null, "d": "e"})),
        ("n", "insert", json!([1, 2])),
    ];
    let from_text = e
        .fold(job(
            Some(&serde_json::from_str(base_text).unwrap()),
            &writes,
            Some("a"),
        ))
        .await
        .expect("fold");
    let mut with_tree = job(None, &writes, Some("a"));
    with_tree.base = Some(Arc::from(base_text));
    with_tree.tree = Some(lake_sidecar::native::parse(base_text).unwrap());
    let from_tree = e.fold(with_tree).await.expect("fold");
    assert_eq!(
        (&from_tree.doc, &from_tree.at_path),
        (&from_text.doc, &from_text.at_path)
    );
    let doc = from_tree.doc.expect("doc");
    assert_eq!(
        from_tree.tree,
        Some(lake_sidecar::native::parse(&doc).unwrap())
    );
    // Numbers keep their text through the tree.
    assert!(doc.contains("12345678901234567890"), "{doc}");
}

/// Small folds of built-in modes run on the caller's thread, larger ones
/// (and custom modes) on a merge thread: either way the answer is the same.
#[tokio::test]
async fn a_fold_folds_the_same_on_either_side_of_the_inline_bound() {
    let e = engine();
    let writes = [("a.b", "set", json!(1)), ("a", "merge", json!({"c": 2}))];
    for size in [16, lake_sidecar::merge::INLINE_FOLD_BYTES + 1] {
        let base = json!({"pad": "p".repeat(size), "a": {"x": true}});
        let got = fold(&e, Some(base), &writes).await.expect("fold");
        assert_eq!(got["a"], json!({"x": true, "b": 1, "c": 2}), "size {size}");
        assert_eq!(got["pad"].as_str().map(str::len), Some(size));
    }
}
