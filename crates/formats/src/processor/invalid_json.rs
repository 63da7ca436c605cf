//! Tests of the strict JSON path: one fixture per kind of damage, each with its documented
//! outcome under `invalid_json` = `drop` (default), `raw` and `fail`
//! (crates/formats/docs/formats.md, "Invalid JSON"), and a property test over generated valid
//! and damaged documents: every JSON event that comes out parses, and valid documents come out
//! equal to what went in. Test code only.

use super::testutil::*;
use super::{InvalidJson, ProcessError, ProcessorKind, ProcessorSpec};

fn spec(kind: ProcessorKind, invalid: InvalidJson) -> ProcessorSpec {
    let mut spec = ProcessorSpec::new(kind);
    spec.invalid_json = invalid;
    if kind == ProcessorKind::Cloudtrail {
        spec.expand_field = Some("Records".into());
    }
    spec
}

/// Every message parses as JSON.
fn assert_all_parse(msgs: &[String], context: &str) {
    for m in msgs {
        assert!(
            serde_json::from_str::<serde_json::Value>(m).is_ok(),
            "{context}: emitted {m:?}, which does not parse"
        );
    }
}

/// One case: input, processor, events under `drop`, events under `raw`, and the offset and
/// reason of the error under `fail`.
struct Case {
    name: &'static str,
    kind: ProcessorKind,
    input: &'static str,
    dropped: &'static [&'static str],
    raw: &'static [&'static str],
    fail_at: u64,
    reason: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "bare word as a value, then a good document",
        kind: ProcessorKind::Json,
        input: r#"{"bad": json}{"good":"json"}"#,
        dropped: &[r#"{"good":"json"}"#],
        raw: &[r#"{"bad":json}"#, r#"{"good":"json"}"#],
        fail_at: 8,
        reason: "expected a JSON value",
    },
    Case {
        name: "cut literal",
        kind: ProcessorKind::Json,
        input: r#"{"a": tru} {"b":1}"#,
        dropped: &[r#"{"b":1}"#],
        raw: &[r#"{"a":tru}"#, r#"{"b":1}"#],
        fail_at: 9,
        reason: "invalid number or literal",
    },
    Case {
        name: "misspelt literal",
        kind: ProcessorKind::Json,
        input: r#"[{"a":nul1},{"b":false}]"#,
        dropped: &[r#"{"b":false}"#],
        raw: &[r#"{"a":nul1}"#, r#"{"b":false}"#],
        fail_at: 9,
        reason: "invalid number or literal",
    },
    Case {
        name: "missing colon",
        kind: ProcessorKind::Json,
        input: r#"{"a" "b"}{"c":1}"#,
        dropped: &[r#"{"c":1}"#],
        raw: &[r#"{"a""b"}"#, r#"{"c":1}"#],
        fail_at: 5,
        reason: "expected ':' after a member name",
    },
    Case {
        name: "missing comma between members",
        kind: ProcessorKind::Cloudtrail,
        input: r#"{"Records":[{"a":1 "b":2},{"c":3}]}"#,
        dropped: &[r#"{"c":3}"#],
        raw: &[r#"{"a":1"b":2}"#, r#"{"c":3}"#],
        fail_at: 19,
        reason: "expected ',' or a closing bracket",
    },
    Case {
        name: "member name not a string",
        kind: ProcessorKind::Json,
        input: "{a:1}\n{\"b\":2}",
        dropped: &[r#"{"b":2}"#],
        raw: &["{a:1}", r#"{"b":2}"#],
        fail_at: 1,
        reason: "expected a member name or '}'",
    },
    Case {
        name: "trailing comma in an object",
        kind: ProcessorKind::Cloudtrail,
        input: r#"{"Records":[{"a":1,},{"b":2}]}"#,
        dropped: &[r#"{"b":2}"#],
        raw: &[r#"{"a":1,}"#, r#"{"b":2}"#],
        fail_at: 19,
        reason: "trailing comma",
    },
    Case {
        name: "trailing comma in a nested array",
        kind: ProcessorKind::Json,
        input: r#"[{"a":[1,2,]},{"b":2}]"#,
        dropped: &[r#"{"b":2}"#],
        raw: &[r#"{"a":[1,2,]}"#, r#"{"b":2}"#],
        fail_at: 11,
        reason: "trailing comma",
    },
    Case {
        name: "bad numbers",
        kind: ProcessorKind::Json,
        input: r#"[{"n":01},{"n":1.},{"n":-},{"n":.5},{"n":1e},{"n":-0.5E+3}]"#,
        dropped: &[r#"{"n":-0.5E+3}"#],
        raw: &[
            r#"{"n":01}"#,
            r#"{"n":1.}"#,
            r#"{"n":-}"#,
            r#"{"n":.5}"#,
            r#"{"n":1e}"#,
            r#"{"n":-0.5E+3}"#,
        ],
        fail_at: 7,
        reason: "invalid number or literal",
    },
    Case {
        name: "bad escape",
        kind: ProcessorKind::Json,
        input: r#"{"a":"x\qy"}{"b":"\u00e9"}"#,
        dropped: &[r#"{"b":"\u00e9"}"#],
        raw: &[r#"{"a":"x\qy"}"#, r#"{"b":"\u00e9"}"#],
        fail_at: 8,
        reason: "invalid escape in a string",
    },
    Case {
        name: "short unicode escape",
        kind: ProcessorKind::Json,
        input: r#"{"a":"\u12"}{"b":1}"#,
        dropped: &[r#"{"b":1}"#],
        raw: &[r#"{"a":"\u12"}"#, r#"{"b":1}"#],
        fail_at: 10,
        reason: "invalid escape in a string",
    },
    Case {
        name: "lone surrogate",
        kind: ProcessorKind::Json,
        input: r#"{"a":"\ud83dx"}{"b":"\ud83d\ude00"}"#,
        dropped: &[r#"{"b":"\ud83d\ude00"}"#],
        raw: &[r#"{"a":"\ud83dx"}"#, r#"{"b":"\ud83d\ude00"}"#],
        fail_at: 12,
        reason: "lone surrogate in a \\u escape",
    },
    Case {
        name: "raw control character in a string",
        kind: ProcessorKind::Json,
        input: "{\"a\":\"x\ty\"}{\"b\":1}",
        dropped: &[r#"{"b":1}"#],
        raw: &["{\"a\":\"x\ty\"}", r#"{"b":1}"#],
        fail_at: 7,
        reason: "control character in a string",
    },
    Case {
        name: "garbage between documents",
        kind: ProcessorKind::Json,
        input: "{\"a\":1}\ngarbage here\n{\"b\":2}",
        dropped: &[r#"{"a":1}"#, r#"{"b":2}"#],
        raw: &[r#"{"a":1}"#, "garbage here", r#"{"b":2}"#],
        fail_at: 8,
        reason: "expected a JSON value",
    },
    Case {
        name: "stray closing bracket between documents",
        kind: ProcessorKind::Json,
        input: r#"{"a":1}}{"b":2}"#,
        dropped: &[r#"{"a":1}"#, r#"{"b":2}"#],
        raw: &[r#"{"a":1}"#, "}", r#"{"b":2}"#],
        fail_at: 7,
        reason: "expected a JSON value",
    },
    Case {
        name: "bad member of a document without its expand_field",
        kind: ProcessorKind::Cloudtrail,
        input: r#"{"x":tru,"y":1}{"Records":[{"a":1}]}"#,
        dropped: &[r#"{"a":1}"#],
        raw: &[r#"{"x":tru,"y":1}"#, r#"{"a":1}"#],
        fail_at: 8,
        reason: "invalid number or literal",
    },
    Case {
        name: "json_lines: each line is a record",
        kind: ProcessorKind::JsonLines,
        input: "{\"a\":1}\n{\"a\" 1}\n{\"b\":2} x\n[1,]\nnot json\n{\"c\":3}\n",
        dropped: &[r#"{"a":1}"#, r#"{"c":3}"#],
        raw: &[
            r#"{"a":1}"#,
            r#"{"a" 1}"#,
            r#"{"b":2} x"#,
            "[1,]",
            "not json",
            r#"{"c":3}"#,
        ],
        fail_at: 13,
        reason: "expected ':' after a member name",
    },
    Case {
        name: "cloudwatch_logs: a bad log event",
        kind: ProcessorKind::CloudwatchLogs,
        input: r#"{"messageType":"DATA_MESSAGE","logEvents":[{"id":"1","message":tru},{"id":"2"}]}"#,
        dropped: &[r#"{"id":"2"}"#],
        raw: &[r#"{"id":"1","message":tru}"#, r#"{"id":"2"}"#],
        fail_at: 66,
        reason: "invalid number or literal",
    },
];

#[test]
fn each_kind_of_damage_has_its_documented_outcome() {
    for case in CASES {
        let input = case.input.as_bytes();
        let (stats, msgs) = run(input, &spec(case.kind, InvalidJson::Drop));
        assert_eq!(msgs, case.dropped, "{} (drop)", case.name);
        assert_all_parse(&msgs, case.name);
        let bad = (case.raw.len() - case.dropped.len()) as u64;
        assert_eq!(stats.invalid_json, bad, "{} (drop count)", case.name);
        assert_eq!(stats.bytes_in, input.len() as u64, "{}", case.name);

        let (stats, msgs) = run(input, &spec(case.kind, InvalidJson::Raw));
        assert_eq!(msgs, case.raw, "{} (raw)", case.name);
        assert_eq!(stats.invalid_json, bad, "{} (raw count)", case.name);

        let (r, _) = run_key(input, &spec(case.kind, InvalidJson::Fail), "k");
        match r {
            Err(ProcessError::Json { offset, reason }) => {
                assert_eq!(
                    (offset, reason),
                    (case.fail_at, case.reason),
                    "{}",
                    case.name
                )
            }
            other => panic!("{} (fail): {other:?}", case.name),
        }
    }
}

#[test]
fn damaged_framing_fails_the_object_whatever_the_setting() {
    // An unclosed string or bracket, or a broken envelope: where the records end is unknown.
    for (kind, input) in [
        (ProcessorKind::Json, r#"{"a":"open}{"b":1}"#),
        (
            ProcessorKind::Cloudtrail,
            r#"{"Records":[{"a":1} {"b":2}]}"#,
        ),
        (ProcessorKind::Cloudtrail, r#"{"Records" [{"a":1}]}"#),
        (ProcessorKind::CloudwatchLogs, r#"{"logEvents" [{"a":1}]}"#),
    ] {
        for invalid in [InvalidJson::Drop, InvalidJson::Raw] {
            let (r, sink) = run_key(input.as_bytes(), &spec(kind, invalid), "k");
            assert!(
                matches!(r, Err(ProcessError::Json { .. })),
                "{input}: {r:?}"
            );
            assert_all_parse(&sink.messages(), input);
        }
    }
}

/// A tiny generator of JSON documents, written with random whitespace and escapes.
struct Gen(fastrand::Rng);

impl Gen {
    fn ws(&mut self, out: &mut String, newlines: bool) {
        const WS: [&str; 5] = ["", "", " ", "\t", "\r\n  "];
        let n = if newlines { 5 } else { 4 };
        out.push_str(WS[self.0.usize(..n)]);
    }

    fn string(&mut self, out: &mut String) {
        const CHARS: [char; 12] = [
            'a', 'Z', ' ', '"', '\\', '/', '\n', '\u{1}', 'é', '€', '😀', '}',
        ];
        out.push('"');
        for _ in 0..self.0.usize(..8) {
            let c = CHARS[self.0.usize(..CHARS.len())];
            match (c, self.0.u8(..4)) {
                ('"', _) => out.push_str("\\\""),
                ('\\', _) => out.push_str("\\\\"),
                ('\n', _) => out.push_str("\\n"),
                ('/', 0) => out.push_str("\\/"),
                (c, 0) | (c @ '\u{1}', _) => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
                (c, _) => out.push(c),
            }
        }
        out.push('"');
    }

    fn number(&mut self, out: &mut String) {
        const NUMS: [&str; 8] = ["0", "-0", "12", "-3.25", "1e5", "2.5E-3", "7e+2", "100"];
        out.push_str(NUMS[self.0.usize(..NUMS.len())]);
    }

    fn value(&mut self, out: &mut String, depth: u32, newlines: bool) {
        let kind = if depth >= 4 {
            self.0.u8(..4)
        } else {
            self.0.u8(..6)
        };
        match kind {
            0 => self.string(out),
            1 => self.number(out),
            2 => out.push_str(["true", "false", "null"][self.0.usize(..3)]),
            3 if depth > 0 => self.string(out),
            3 | 4 => self.object(out, depth, newlines),
            _ => {
                out.push('[');
                for k in 0..self.0.usize(..4) {
                    if k > 0 {
                        out.push(',');
                    }
                    self.ws(out, newlines);
                    self.value(out, depth + 1, newlines);
                    self.ws(out, newlines);
                }
                out.push(']');
            }
        }
    }

    fn object(&mut self, out: &mut String, depth: u32, newlines: bool) {
        out.push('{');
        for k in 0..self.0.usize(..4) {
            if k > 0 {
                out.push(',');
            }
            self.ws(out, newlines);
            self.string(out);
            self.ws(out, newlines);
            out.push(':');
            self.ws(out, newlines);
            self.value(out, depth + 1, newlines);
            self.ws(out, newlines);
        }
        out.push('}');
    }

    /// Damages `doc` once: a byte deleted, replaced or inserted, from bytes that matter to the
    /// grammar.
    fn damage(&mut self, doc: &mut Vec<u8>) {
        const BYTES: &[u8] = b"{}[]\",:\\ tfnu0-.e\x01x";
        let at = self.0.usize(..doc.len());
        let b = BYTES[self.0.usize(..BYTES.len())];
        match self.0.u8(..3) {
            0 => {
                doc.remove(at);
            }
            1 => doc[at] = b,
            _ => doc.insert(at, b),
        }
    }
}

/// The documents `n` generated objects, each written out and parsed back by serde_json.
fn documents(g: &mut Gen, n: usize, newlines: bool) -> Vec<(String, serde_json::Value)> {
    (0..n)
        .map(|_| {
            let mut doc = String::new();
            g.object(&mut doc, 0, newlines);
            let value = serde_json::from_str(&doc).expect("the generator writes valid JSON");
            (doc, value)
        })
        .collect()
}

fn parsed(msgs: &[String]) -> Vec<serde_json::Value> {
    msgs.iter()
        .map(|m| serde_json::from_str(m).unwrap_or_else(|e| panic!("{m:?}: {e}")))
        .collect()
}

#[test]
fn generated_documents_round_trip_and_damaged_ones_never_emit_broken_json() {
    let mut g = Gen(fastrand::Rng::with_seed(20261201));
    // How the damaged inputs fared: some records dropped, some objects failed (framing lost).
    let (mut dropped, mut failed) = (0, 0);
    for round in 0..3000 {
        let lines = round % 2 == 1;
        let kind = if lines {
            ProcessorKind::JsonLines
        } else {
            ProcessorKind::Json
        };
        let docs = documents(&mut g, 1 + round % 4, !lines);
        let sep = if lines { "\n" } else { "" };
        let joined: String = docs.iter().map(|(d, _)| format!("{d}{sep}")).collect();
        // Valid: every document comes out, equal in value.
        let (stats, msgs) = run(joined.as_bytes(), &spec(kind, InvalidJson::Drop));
        let want: Vec<_> = docs.iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(parsed(&msgs), want, "round {round}: {joined:?}");
        assert_eq!(stats.invalid_json, 0, "round {round}");
        // Compact already: compacting again changes nothing.
        for m in &msgs {
            let mut again = Vec::new();
            super::json::compact(m.as_bytes(), &mut again, usize::MAX).unwrap();
            assert_eq!(again, m.as_bytes(), "round {round}");
        }

        // Damaged: whatever comes out parses, under drop; nothing panics under raw or fail.
        let mut bad = joined.clone().into_bytes();
        for _ in 0..1 + round % 3 {
            if !bad.is_empty() {
                g.damage(&mut bad);
            }
        }
        let (r, sink) = run_key(&bad, &spec(kind, InvalidJson::Drop), "k");
        let context = format!("round {round}: {:?}", String::from_utf8_lossy(&bad));
        assert_all_parse(&sink.messages(), &context);
        match &r {
            Ok(stats) => {
                assert_eq!(stats.bytes_in, bad.len() as u64, "{context}");
                dropped += u64::from(stats.invalid_json > 0);
            }
            Err(_) => failed += 1,
        }
        for invalid in [InvalidJson::Raw, InvalidJson::Fail] {
            let _ = run_key(&bad, &spec(kind, invalid), "k");
        }
    }
    assert!(
        dropped > 500 && failed > 100,
        "dropped {dropped}, failed {failed}"
    );
}
