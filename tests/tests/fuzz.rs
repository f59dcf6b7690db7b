//! The command fuzzer: every `LAKE.*` command, every argument position,
//! arguments drawn from byte classes a hostile (or just international)
//! client sends (code points that are multiples of 256, CJK, emoji, NUL,
//! invalid UTF-8, CR/LF, `printf` directives, empty, 512 KB, numbers at and
//! past every limit, deep and long paths, JSON of odd shapes), over RESP2
//! and RESP3, against a live Redis with the module and a sidecar.
//!
//! After each command Redis must answer `PING`, and the reply must be RESP
//! (a parse or connection error fails the run, naming the seed and the
//! command); no reply may be `LAKEINTERNAL` (a bug by definition) or
//! `LAKEDATA` (with a healthy store, damage the input did). At the
//! end every catalog the fuzzer wrote must read back, and read the same
//! through a cold sidecar; Redis's log holds no crash report.
//!
//! `LAKE_FUZZ_SEED` replays a run; `LAKE_FUZZ_COMMANDS` sets its length
//! (3,000 in `make test`, 100,000 in `make fuzz`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use lake_shared::error::escape_bytes;
use lake_tests::{err_text, redis, wait_for, Lake, Options, StoreKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Catalogs most commands name, so writes pile up where reads, removals,
/// compaction and drops meet them.
const CATALOGS: [&str; 7] = ["fz/a", "fz/b", "fz/c.1", "fz_d", "fz/e-x", "用户", "fz/g"];

const NON_ASCII: [&str; 14] = [
    "Ā",
    "Ѐ",
    "一",
    "\u{3000}",
    "Ȁ",
    "\u{10000}",
    "😀",
    "用户",
    "שלום",
    "e\u{301}",
    "\u{feff}",
    "\u{85}",
    "\u{2028}",
    "ÿ",
];

struct Gen {
    rng: StdRng,
    /// Uuids of acknowledged writes, per catalog: what REMOVE may name.
    written: Vec<(Vec<u8>, String)>,
}

impl Gen {
    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.rng.random_range(0..xs.len())].clone()
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.rng.random_range(0..100) < percent
    }

    /// One argument from a hostile byte class.
    fn hostile(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..12) {
            0 => self.pick(&NON_ASCII).as_bytes().to_vec(),
            1 => format!("a{}b", self.pick(&NON_ASCII)).into_bytes(),
            2 => self.pick(&[&b"\0"[..], b"a\0b", b"\0\0\0"]).to_vec(),
            3 => self
                .pick(&[
                    &[0xffu8][..],
                    &[0xc3],
                    &[0xed, 0xa0, 0x80],
                    &[0xf8, 0x88, 0x80, 0x80, 0x80],
                    &[b'a', 0xfe, b'b'],
                ])
                .to_vec(),
            4 => self
                .pick(&[&b"a\r\nb"[..], b"\n", b"\r", b"x\n-ERR fake\r\n"])
                .to_vec(),
            5 => Vec::new(),
            6 => b"%s%n%x%p%%".to_vec(),
            7 => vec![b'x'; self.pick(&[127usize, 128, 129, 511, 512, 513, 4096])],
            8 => vec![b'y'; 512 * 1024],
            9 => {
                let n = self.rng.random_range(0..40);
                (0..n).map(|_| self.rng.random()).collect()
            }
            10 => self.number(),
            _ => self
                .pick(&[
                    "MODE",
                    "PATH",
                    "AT",
                    "SNAP",
                    "COUNT",
                    "IFSTAMP",
                    "WITHSTAMP",
                    "-",
                    "+",
                    "$",
                    "(",
                    "*",
                ])
                .as_bytes()
                .to_vec(),
        }
    }

    fn catalog(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..20) {
            0..=14 => self.pick(&CATALOGS).as_bytes().to_vec(),
            15 => format!("fz/{}", "n".repeat(self.pick(&[125usize, 126]))).into_bytes(),
            16 => self
                .pick(&["a:b", "a{b}", "../x", "/x", "x/", "a b", ".x", "x//y"])
                .as_bytes()
                .to_vec(),
            _ => self.hostile(),
        }
    }

    fn field(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..20) {
            0..=9 => self
                .pick(&[
                    "a",
                    "b",
                    "a.b",
                    "profile.name",
                    "一.二",
                    "/a~1b",
                    "$",
                    "/",
                    "a:b",
                    "log.-",
                    "items.0",
                    "/__proto__/x",
                    "constructor",
                ])
                .as_bytes()
                .to_vec(),
            10..=12 => {
                let n = self.pick(&[126usize, 127, 128, 129, 200, 256]);
                vec!["a"; n].join(".").into_bytes()
            }
            13 => "/"
                .repeat(self.pick(&[127usize, 128, 129, 300, 512]))
                .into_bytes(),
            14 => format!("a.{}", self.pick(&NON_ASCII)).into_bytes(),
            _ => self.hostile(),
        }
    }

    fn nested(depth: usize) -> Vec<u8> {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
    }

    fn json(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..20) {
            0..=9 => self
                .pick(&[
                    "1",
                    "\"s\"",
                    "null",
                    "{\"k\":1}",
                    "[1,2]",
                    "{\"__proto__\":{\"x\":1}}",
                    "1E400",
                    "-0.0e-7",
                    "123456789012345678901234567890",
                    "\"\\u0000\\ud83d\\ude00 一\"",
                    "{\"a\":null,\"b\":{\"c\":[]}}",
                    "\"Ā\"",
                    "{\"一\":\"二\"}",
                    "true",
                ])
                .as_bytes()
                .to_vec(),
            10..=12 => Self::nested(self.pick(&[1usize, 2, 64, 126, 127, 128, 129, 1000])),
            13 => self
                .pick(&["{", "[1,]", "'x'", "NaN", "", "{\"a\":1}x", "\"\\ud800\""])
                .as_bytes()
                .to_vec(),
            14 => {
                let mut v = b"\"".to_vec();
                v.extend(std::iter::repeat_n(b'z', 512 * 1024));
                v.push(b'"');
                v
            }
            15 => {
                let mut v = b"\"".to_vec();
                v.extend_from_slice(&self.hostile());
                v.push(b'"');
                v
            }
            _ => self.hostile(),
        }
    }

    fn number(&mut self) -> Vec<u8> {
        self.pick(&[
            "0",
            "-1",
            "1",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "9007199254740992",
            "9007199254740993",
            "1.5",
            "1e3",
            "",
            "10000",
            "10001",
            "4294967296",
            " 1",
            "0x10",
        ])
        .as_bytes()
        .to_vec()
    }

    fn bound(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..6) {
            0 => b"-".to_vec(),
            1 => b"+".to_vec(),
            2 => [b"(".to_vec(), self.number()].concat(),
            3 => b"((1".to_vec(),
            4 => self.hostile(),
            _ => self.number(),
        }
    }

    fn uuid(&mut self, cat: &[u8]) -> Vec<u8> {
        let known: Vec<String> = self
            .written
            .iter()
            .filter(|(c, _)| c == cat)
            .map(|(_, u)| u.clone())
            .collect();
        match self.rng.random_range(0..4) {
            0 if !known.is_empty() => self.pick(&known).into_bytes(),
            1 => b"0f8fad5b-d9cb-469f-a165-70867728950e".to_vec(),
            2 => b"0F8FAD5B-D9CB-469F-A165-70867728950E".to_vec(),
            _ => self.hostile(),
        }
    }

    /// One command: name and arguments.
    fn command(&mut self) -> Vec<Vec<u8>> {
        let w = self.rng.random_range(0..100);
        let cat = self.catalog();
        let mut c: Vec<Vec<u8>> = Vec::new();
        match w {
            0..=34 => {
                c.push(b"LAKE.WRITE".to_vec());
                c.push(cat);
                c.push(self.field());
                c.push(self.json());
                if self.chance(30) {
                    c.push(if self.chance(80) {
                        b"MODE".to_vec()
                    } else {
                        self.hostile()
                    });
                    let m = match self.rng.random_range(0..4) {
                        0 => self
                            .pick(&["SET", "insert", "Replace", "merge", "MERGE"])
                            .as_bytes()
                            .to_vec(),
                        1 => self.pick(&["一", "x%n", "nope", ""]).as_bytes().to_vec(),
                        _ => self.hostile(),
                    };
                    c.push(m);
                }
                if self.chance(20) {
                    c.push(if self.chance(80) {
                        b"IFSTAMP".to_vec()
                    } else {
                        self.hostile()
                    });
                    c.push(self.number());
                }
            }
            35..=59 => {
                c.push(b"LAKE.READ".to_vec());
                c.push(cat);
                for _ in 0..self.rng.random_range(0..4) {
                    match self.rng.random_range(0..7) {
                        0 => {
                            c.push(b"PATH".to_vec());
                            c.push(self.field());
                        }
                        1 => {
                            c.push(b"AT".to_vec());
                            c.push(self.number());
                        }
                        2 => c.push(b"SNAP".to_vec()),
                        3 => c.push(b"nosnap".to_vec()),
                        4 => c.push(self.hostile()),
                        5 => c.push(b"WITHSTAMP".to_vec()),
                        _ => c.push(b"AT".to_vec()),
                    }
                }
            }
            60..=67 => {
                c.push(b"LAKE.HISTORY".to_vec());
                c.push(cat);
                for _ in 0..self.rng.random_range(0..4) {
                    match self.rng.random_range(0..6) {
                        0 => {
                            c.push(b"FROM".to_vec());
                            c.push(self.bound());
                        }
                        1 => {
                            c.push(b"TO".to_vec());
                            c.push(self.bound());
                        }
                        2 => {
                            c.push(b"COUNT".to_vec());
                            c.push(self.number());
                        }
                        3 => c.push(b"REV".to_vec()),
                        4 => c.push(b"SNAPSHOTS".to_vec()),
                        _ => c.push(self.hostile()),
                    }
                }
            }
            68..=70 => {
                c.push(b"LAKE.INFO".to_vec());
                c.push(cat);
            }
            71..=72 => {
                // Never BLOCK 0 here: one command at a time, nobody writes.
                c.push(b"LAKE.CHANGES".to_vec());
                c.push(cat);
                for _ in 0..self.rng.random_range(0..4) {
                    match self.rng.random_range(0..6) {
                        5 => c.push(b"WITHVALUES".to_vec()),
                        0 | 1 => {
                            c.push(b"SINCE".to_vec());
                            c.push(if self.chance(30) {
                                b"$".to_vec()
                            } else {
                                self.number()
                            });
                        }
                        2 => {
                            c.push(b"COUNT".to_vec());
                            c.push(self.number());
                        }
                        3 => {
                            c.push(b"BLOCK".to_vec());
                            c.push(
                                self.pick(&["1", "5", "-1", "x", "4294967296"])
                                    .as_bytes()
                                    .to_vec(),
                            );
                        }
                        _ => c.push(self.hostile()),
                    }
                }
            }
            73..=78 => {
                c.push(b"LAKE.REMOVE".to_vec());
                let u = self.uuid(&cat);
                c.push(cat);
                c.push(u);
            }
            79..=81 => {
                c.push(b"LAKE.COMPACT".to_vec());
                c.push(cat);
            }
            82..=85 => {
                c.push(b"LAKE.RETENTION".to_vec());
                c.push(cat);
                match self.rng.random_range(0..4) {
                    0 => {}
                    1 => c.push(b"DEFAULT".to_vec()),
                    2 => c.push(self.number()),
                    _ => c.push(self.hostile()),
                }
            }
            86 => {
                c.push(b"LAKE.DROP".to_vec());
                c.push(cat);
            }
            87..=89 => {
                c.push(b"LAKE.GC".to_vec());
                if self.chance(70) {
                    c.push(b"DRYRUN".to_vec());
                }
                if self.chance(50) {
                    c.push(b"GRACE".to_vec());
                    c.push(self.number());
                }
                if self.chance(10) {
                    c.push(self.hostile());
                }
            }
            90 => {
                c.push(b"LAKE.MREAD".to_vec());
                c.push(cat);
                for _ in 0..self.rng.random_range(0..5) {
                    let more = self.catalog();
                    c.push(more);
                }
                if self.chance(30) {
                    c.push(b"PATH".to_vec());
                    c.push(self.field());
                }
            }
            91 => {
                c.push(
                    self.pick(&[&b"LAKE.NOPE"[..], b"lake.write", b"LAKE.READ"])
                        .to_vec(),
                );
            }
            _ => {
                // Any command with any number of hostile arguments.
                let name = self.pick(&[
                    "LAKE.WRITE",
                    "LAKE.READ",
                    "LAKE.REMOVE",
                    "LAKE.DROP",
                    "LAKE.HISTORY",
                    "LAKE.INFO",
                    "LAKE.COMPACT",
                    "LAKE.RETENTION",
                    "LAKE.GC",
                    "LAKE.MREAD",
                    "LAKE.CHANGES",
                    "LAKE.VIEW",
                ]);
                c.push(name.as_bytes().to_vec());
                c.push(cat);
                for _ in 0..self.rng.random_range(0..8) {
                    c.push(self.hostile());
                }
            }
        }
        c
    }
}

fn show(cmd: &[Vec<u8>]) -> String {
    cmd.iter()
        .map(|a| {
            let s = escape_bytes(&a[..a.len().min(80)]);
            if a.len() > 80 {
                format!("'{s}'..({} bytes)", a.len())
            } else {
                format!("'{s}'")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn no_command_crashes_redis_or_bricks_a_catalog() {
    let seed = env_u64("LAKE_FUZZ_SEED").unwrap_or_else(rand::random);
    let total = env_u64("LAKE_FUZZ_COMMANDS").unwrap_or(3000) as usize;
    println!("fuzz: seed {seed}, {total} commands (replay: LAKE_FUZZ_SEED={seed})");
    let mut lake = Lake::with(Options {
        store: StoreKind::Local,
        timeout_ms: 10_000,
        ..Options::default()
    });
    let mut resp2 = lake.con();
    let client3 = redis::Client::open(format!("{}?protocol=resp3", lake.url())).expect("client");
    let mut resp3 = client3.get_connection().expect("RESP3 connection");
    resp3
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");

    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
        written: Vec::new(),
    };
    let mut replies: BTreeMap<String, usize> = BTreeMap::new();
    let mut examples: BTreeMap<String, String> = BTreeMap::new();
    let mut wrote: BTreeSet<Vec<u8>> = BTreeSet::new();
    let started = Instant::now();
    for n in 0..total {
        let cmd = g.command();
        let con = if g.chance(50) { &mut resp2 } else { &mut resp3 };
        let mut c = redis::cmd(&String::from_utf8_lossy(&cmd[0]));
        for a in &cmd[1..] {
            c.arg(a.as_slice());
        }
        let what = || format!("seed {seed}, command #{n}: {}", show(&cmd));
        let kind = match c.query::<redis::Value>(con) {
            Ok(v) => {
                if cmd[0] == b"LAKE.WRITE" {
                    if let redis::Value::Array(a) = &v {
                        if let Some(redis::Value::BulkString(u)) = a.first() {
                            g.written
                                .push((cmd[1].clone(), String::from_utf8_lossy(u).into_owned()));
                            wrote.insert(cmd[1].clone());
                        }
                    }
                }
                "ok".to_string()
            }
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.code().is_none() => {
                panic!("no RESP reply ({e}); {}", what())
            }
            Err(e) => {
                let text = err_text(e);
                // LAKEINTERNAL is a bug by definition; LAKEDATA, with a
                // healthy store, a catalog the input damaged.
                for bad in ["LAKEINTERNAL", "LAKEDATA"] {
                    assert!(!text.starts_with(bad), "{text}; {}", what());
                }
                let kind = text.split(' ').next().unwrap_or("").to_string();
                examples.entry(kind.clone()).or_insert_with(|| {
                    format!("{} -> {}", show(&cmd), &text[..text.len().min(300)])
                });
                kind
            }
        };
        *replies.entry(kind).or_default() += 1;
        let pong: Result<String, _> = redis::cmd("PING").query(con);
        assert_eq!(
            pong.as_deref().ok(),
            Some("PONG"),
            "Redis is down after {}",
            what()
        );
    }
    let fuzz_secs = started.elapsed().as_secs_f64();

    // Every catalog written reads back, and the same through a cold sidecar.
    let read_all = |con: &mut redis::Connection| -> Vec<(String, Option<String>)> {
        wrote
            .iter()
            .map(|cat| {
                let name = String::from_utf8_lossy(cat).into_owned();
                let doc: Option<String> = redis::cmd("LAKE.READ")
                    .arg(cat.as_slice())
                    .arg("NOSNAP")
                    .query(con)
                    .unwrap_or_else(|e| {
                        panic!(
                            "catalog '{name}' is unreadable (seed {seed}): {}",
                            err_text(e)
                        )
                    });
                (name, doc)
            })
            .collect()
    };
    let warm = read_all(&mut resp2);
    lake.kill_sidecar();
    lake.start_sidecar();
    wait_for("the module to reconnect", Duration::from_secs(20), || {
        redis::cmd("LAKE.READ")
            .arg(CATALOGS[0])
            .query::<Option<String>>(&mut resp2)
            .is_ok()
    });
    let cold = read_all(&mut resp2);
    assert_eq!(warm, cold, "a cold sidecar reads differently (seed {seed})");
    lake.assert_no_crash();
    println!(
        "fuzz: seed {seed}: {total} commands in {fuzz_secs:.1} s, 0 crashes, 0 non-RESP replies, {} catalogs written, 0 unreadable; replies by kind: {replies:?}",
        wrote.len()
    );
    for (kind, example) in examples {
        println!("fuzz: first {kind}: {example}");
    }
}
