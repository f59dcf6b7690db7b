//! Computed views (`LAKE.VIEW <catalog> <name>`, the sidecar's `--views`):
//! equal to the function applied to the document, computed once per
//! catalog version (counted by the sidecar's `views_run_total`),
//! recomputed after a write, a removal and a drop, with the custom modes'
//! error rules and limits.

use lake_tests::{err_text, redis, write, Lake, Options};
use serde_json::{json, Value};

fn views() -> Vec<(String, String)> {
    [
        ("count", "function view(doc) { return Object.keys(doc).length; }"),
        (
            "card",
            "function view(doc) { return { name: doc.name, city: doc.address ? doc.address.city : null }; }",
        ),
        (
            "total",
            "function view(doc) { return (doc.items || []).reduce((s, i) => s + i.price, 0); }",
        ),
        ("boom", "function view(doc) { throw new Error('no view today'); }"),
        ("spin", "function view(doc) { for (;;) {} }"),
    ]
    .map(|(n, s)| (n.to_string(), s.to_string()))
    .to_vec()
}

fn view(con: &mut redis::Connection, cat: &str, name: &str) -> Result<Option<Value>, String> {
    redis::cmd("LAKE.VIEW")
        .arg(cat)
        .arg(name)
        .query::<Option<String>>(con)
        .map(|t| t.map(|t| serde_json::from_str(&t).expect("a view answers JSON")))
        .map_err(err_text)
}

fn doc(con: &mut redis::Connection, cat: &str) -> Value {
    let t: String = redis::cmd("LAKE.READ").arg(cat).query(con).expect("read");
    serde_json::from_str(&t).expect("JSON")
}

/// Once per version whether the repeat is answered by the module's reply
/// cache or by the sidecar's view cache (the module's off).
#[test]
fn a_view_is_its_function_of_the_document_computed_once_per_version() {
    once_per_version(true);
    once_per_version(false);
}

fn once_per_version(reply_cache: bool) {
    let lake = Lake::with(Options {
        views: views(),
        module_args: if reply_cache {
            Vec::new()
        } else {
            ["reply-cache-mb", "0"].map(String::from).to_vec()
        },
        ..Options::default()
    });
    let mut con = lake.con();
    assert_eq!(view(&mut con, "shop", "count"), Ok(None), "empty catalog");
    write(&mut con, "shop", "name", "\"Lake Shop\"").unwrap();
    write(
        &mut con,
        "shop",
        "address",
        r#"{"city":"Hangzhou","street":"West Lake"}"#,
    )
    .unwrap();
    write(&mut con, "shop", "items", r#"[{"price":3},{"price":4.5}]"#).unwrap();
    let d = doc(&mut con, "shop");
    assert_eq!(view(&mut con, "shop", "count"), Ok(Some(json!(3))));
    assert_eq!(
        view(&mut con, "shop", "card"),
        Ok(Some(
            json!({"name": d["name"], "city": d["address"]["city"]})
        ))
    );
    assert_eq!(view(&mut con, "shop", "total"), Ok(Some(json!(7.5))));
    let runs = lake.metric("views_run_total");
    assert_eq!(runs, 3);
    // Unchanged catalog: answered from the cache, the function not called.
    for _ in 0..5 {
        assert_eq!(view(&mut con, "shop", "count"), Ok(Some(json!(3))));
    }
    assert_eq!(lake.metric("views_run_total"), runs);
    if reply_cache {
        let info: String = redis::cmd("INFO").arg("lake").query(&mut con).unwrap();
        assert!(info.contains("lake_reply_cache_hits:5"), "{info}");
    } else {
        assert_eq!(lake.metric("views_cached_total"), 5);
    }
    // A write: computed again, once.
    let (uuid, _) = write(&mut con, "shop", "open", "true").unwrap();
    assert_eq!(view(&mut con, "shop", "count"), Ok(Some(json!(4))));
    assert_eq!(view(&mut con, "shop", "count"), Ok(Some(json!(4))));
    assert_eq!(lake.metric("views_run_total"), runs + 1);
    // A removal is a new version.
    let _: i64 = redis::cmd("LAKE.REMOVE")
        .arg("shop")
        .arg(&uuid)
        .query(&mut con)
        .unwrap();
    assert_eq!(view(&mut con, "shop", "count"), Ok(Some(json!(3))));
    assert_eq!(lake.metric("views_run_total"), runs + 2);
    // A dropped catalog has no view; written again, a new one.
    let _: i64 = redis::cmd("LAKE.DROP").arg("shop").query(&mut con).unwrap();
    assert_eq!(view(&mut con, "shop", "count"), Ok(None));
    write(&mut con, "shop", "name", "\"again\"").unwrap();
    assert_eq!(view(&mut con, "shop", "count"), Ok(Some(json!(1))));
    assert_eq!(lake.metric("views_run_total"), runs + 3);
    lake.assert_no_crash();
}

#[test]
fn a_failing_view_is_named_and_redis_stays_up() {
    let lake = Lake::with(Options {
        views: views(),
        ..Options::default()
    });
    let mut con = lake.con();
    write(&mut con, "v", "a", "1").unwrap();
    let e = view(&mut con, "v", "boom").expect_err("throwing view");
    assert!(
        e.starts_with("LAKEDATA") && e.contains("view 'boom'") && e.contains("no view today"),
        "{e}"
    );
    let e = view(&mut con, "v", "spin").expect_err("endless view");
    assert!(e.starts_with("LAKEDATA") && e.contains("deadline"), "{e}");
    assert_eq!(lake.metric("view_errors_total"), 2);
    // The runtime was rebuilt: the next view works.
    assert_eq!(view(&mut con, "v", "count"), Ok(Some(json!(1))));
    for (args, what) in [
        (vec!["v", "nope"], "unknown view 'nope'"),
        (vec!["v", "bad name"], "invalid view name"),
        (vec!["v"], "wrong number of arguments"),
        (vec!["v", "count", "x"], "wrong number of arguments"),
        (vec!["bad cat", "count"], "invalid catalog name"),
    ] {
        let e = redis::cmd("LAKE.VIEW")
            .arg(&args)
            .query::<redis::Value>(&mut con)
            .map_err(err_text)
            .expect_err("bad LAKE.VIEW");
        assert!(e.starts_with("ERR") && e.contains(what), "{args:?}: {e}");
    }
    lake.assert_no_crash();
}
