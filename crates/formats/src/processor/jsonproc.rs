//! JSON processors: `json_lines` / `fdr` (one value per line, re-emitted compact) and
//! `json` / `cloudtrail` / `extract` (whole documents, streamed).
//!
//! Documents: values follow each other with or without whitespace (`}{` works). A top-level
//! array becomes one event per element. With `expand_field` (`cloudtrail`: `Records`; a dotted
//! path such as `data.items` reaches into nested objects, see `expand_object`), an object
//! holding that field becomes one event per element of its array (a non-array value is one
//! event, `null` none), streamed so that only one element is in memory; an object without the
//! field is one event (CloudTrail digests, when they are processed). Anything else is one event.
//! `extract` emits one field of each such record instead of the record.
//!
//! Records are sliced and compacted by [`super::json`], never parsed into a value tree.
//!
//! Every record is checked against the JSON grammar (RFC 8259) while it is copied. A record
//! that is not valid JSON (a `json_lines` line, an array element, a top-level document, the
//! value of `expand_field`) meets `invalid_json`: dropped (default) or passed on as text, and
//! counted in `invalid_json`, or the object fails. The records after it go on when its end can
//! be found: the line ends (`json_lines`), or its brackets and quotes balance (documents: the
//! next record starts after them; after garbage between documents, at the next `{` or `[`).
//! Damage to the framing itself (an unclosed bracket or string, a broken `Records` envelope)
//! ends the object with an error (crates/formats/docs/formats.md, "Invalid JSON").
//!
//! A record nested deeper than the scanner's limit is skipped to its end and counted in
//! `malformed_records` (valid JSON, but too deep to check and compact).

use std::io::BufRead;

use super::emit::Emitter;
use super::json::{compact, find_path, JsonFields, JsonReader, Record};
use super::text::LineReader;
use super::{InvalidJson, ProcessError, ProcessorKind, ProcessorSpec};

/// Applies `invalid_json` to a record that is not valid JSON: `raw` holds its bytes as far as
/// they were read (whitespace outside strings removed up to the error, as written after it).
pub(crate) fn invalid_record(
    raw: &[u8],
    offset: u64,
    reason: &'static str,
    spec: &ProcessorSpec,
    out: &mut Emitter<'_>,
) -> Result<(), ProcessError> {
    match spec.invalid_json {
        InvalidJson::Fail => Err(ProcessError::Json { offset, reason }),
        InvalidJson::Drop => {
            out.stats.invalid_json += 1;
            Ok(())
        }
        InvalidJson::Raw => {
            out.stats.invalid_json += 1;
            let cut = raw.len() >= spec.max_event_bytes;
            out.text(raw, cut, &JsonFields(raw))
        }
    }
}

/// `json_lines` / `fdr`: each non-blank line compacted; a line that is not one JSON value meets
/// `invalid_json` (raw: emitted as it is), the next line goes on either way.
pub(crate) fn json_lines(
    input: &mut dyn BufRead,
    spec: &ProcessorSpec,
    out: &mut Emitter<'_>,
) -> Result<(), ProcessError> {
    let mut reader = LineReader::new(spec.max_event_bytes);
    let mut buf = Vec::new();
    let mut line_start = 0;
    while let Some(line) = reader.next(input)? {
        let start = std::mem::replace(&mut line_start, line.end);
        out.stats.bytes_in = line.end;
        let bytes = line.bytes;
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        buf.clear();
        let error = match compact(bytes, &mut buf, usize::MAX) {
            Ok((n, _)) => bytes[n..]
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .map(|k| (n + k, "more data after the value")),
            Err(e) => Some(e),
        };
        match error {
            None => out.json(&buf, line.cut, &JsonFields(&buf))?,
            // A line the cap cut cannot be whole JSON: the oversize rule, not invalid_json.
            Some(_) if line.cut => out.text(bytes, true, &JsonFields(bytes))?,
            Some((at, reason)) => {
                invalid_record(bytes, start + at as u64, reason, spec, out)?;
            }
        }
    }
    out.stats.bytes_in = reader.offset;
    Ok(())
}

/// Buffers reused across the records of one object.
struct Docs<'s> {
    spec: &'s ProcessorSpec,
    rec: Vec<u8>,
    text: Vec<u8>,
}

impl Docs<'_> {
    /// Emits what [`JsonReader::record`] read into `self.rec`.
    fn read(&mut self, read: Record, out: &mut Emitter<'_>) -> Result<(), ProcessError> {
        let rec = std::mem::take(&mut self.rec);
        let res = match read {
            Record::Valid(cut) => self.record(&rec, cut, out),
            Record::TooDeep => {
                out.stats.malformed_records += 1;
                Ok(())
            }
            Record::Invalid { offset, reason } => {
                invalid_record(&rec, offset, reason, self.spec, out)
            }
        };
        self.rec = rec;
        res
    }

    /// Emits one record (or its extracted field).
    fn record(&mut self, rec: &[u8], cut: bool, out: &mut Emitter<'_>) -> Result<(), ProcessError> {
        if self.spec.kind != ProcessorKind::Extract {
            return out.json(rec, cut, &JsonFields(rec));
        }
        let path = self.spec.extract_field.as_deref().unwrap_or("message");
        let Some(raw) = find_path(rec, path) else {
            out.stats.malformed_records += 1;
            return Ok(());
        };
        if raw.first() == Some(&b'"') && raw.len() >= 2 {
            self.text.clear();
            super::json::unescape(&raw[1..raw.len() - 1], &mut self.text);
            let text = std::mem::take(&mut self.text);
            let r = out.text(&text, false, &JsonFields(rec));
            self.text = text;
            r
        } else if raw == b"null" {
            out.stats.malformed_records += 1;
            Ok(())
        } else {
            out.json(raw, false, &JsonFields(rec))
        }
    }
}

/// `json`, `cloudtrail`, `extract`: streams documents.
pub(crate) fn documents(
    input: &mut dyn BufRead,
    spec: &ProcessorSpec,
    out: &mut Emitter<'_>,
) -> Result<(), ProcessError> {
    let mut r = JsonReader::new(input);
    let mut docs = Docs {
        spec,
        rec: Vec::new(),
        text: Vec::new(),
    };
    let cap = spec.max_event_bytes;
    let path = spec.expand_field.as_deref().map(str::as_bytes);
    let mut doc = Vec::new();
    loop {
        out.stats.bytes_in = r.offset;
        match r.peek()? {
            None => break,
            Some(b'[') => {
                r.bump();
                array(&mut r, &mut docs, out)?;
            }
            Some(b'{') if path.is_some() => {
                r.bump();
                doc.clear();
                doc.push(b'{');
                let mut doc_cut = false;
                let path = path.unwrap_or_default();
                let mut env = Envelope::default();
                let found = expand_object(
                    &mut r,
                    &mut docs,
                    out,
                    path,
                    &mut doc,
                    &mut doc_cut,
                    &mut env,
                )?;
                if let Some((offset, reason)) = env.invalid {
                    if found && spec.invalid_json != InvalidJson::Fail {
                        // Its records are out already; the envelope is no event of its own.
                        out.stats.invalid_json += 1;
                    } else {
                        invalid_record(&doc, offset, reason, spec, out)?;
                    }
                } else if env.too_deep && !found {
                    out.stats.malformed_records += 1;
                } else if !found {
                    docs.record(&doc, doc_cut, out)?;
                }
            }
            Some(_) => {
                docs.rec.clear();
                let read = r.record(&mut docs.rec, cap)?;
                if matches!(read, Record::Invalid { .. }) {
                    // Garbage between documents: the next one starts at the next bracket.
                    r.skip_to_document(&mut docs.rec, cap)?;
                    while docs.rec.last().is_some_and(u8::is_ascii_whitespace) {
                        docs.rec.pop();
                    }
                }
                docs.read(read, out)?;
            }
        }
    }
    out.stats.bytes_in = r.offset;
    Ok(())
}

/// What the members of an `expand_field` document showed besides the records: a member nested
/// too deep or not valid JSON (the first such error), and scratch space for skipped members.
#[derive(Default)]
struct Envelope {
    too_deep: bool,
    invalid: Option<(u64, &'static str)>,
    scratch: Vec<u8>,
}

/// Reads the members of an object whose `{` was consumed, through its `}`, and expands the
/// value at `path` (`expand_field`). Member names are compared as written, without their quotes:
/// a member named `path` itself is expanded (so a name holding dots, `"a.b"`, works as before);
/// a member named by a dotted prefix of `path` (`a`, or `a.b`, for `a.b.c`) whose value is an
/// object is searched for the rest. The first member in document order that leads to the field
/// wins; a search that finds nothing goes on with the next members. Until the field is found the
/// members are copied compact into `doc` (capped, `cut` set when something was left out), so
/// that an object without it can be the event; after that they are skipped. Returns whether the
/// field was found.
fn expand_object(
    r: &mut JsonReader<'_>,
    docs: &mut Docs<'_>,
    out: &mut Emitter<'_>,
    path: &[u8],
    doc: &mut Vec<u8>,
    cut: &mut bool,
    env: &mut Envelope,
) -> Result<bool, ProcessError> {
    let cap = docs.spec.max_event_bytes;
    let mut key = Vec::new();
    let mut found = false;
    let mut first = true;
    if r.peek()? == Some(b'}') {
        r.bump();
        *cut |= push_capped(doc, b"}", cap);
        return Ok(false);
    }
    loop {
        if r.peek()? != Some(b'"') {
            return Err(r.error("expected a member name"));
        }
        key.clear();
        r.value(&mut key, true, 4096)?;
        r.expect(b':', "expected ':' after a member name")?;
        let name = key.get(1..key.len().saturating_sub(1)).unwrap_or_default();
        if found {
            // After the records: checked, not kept.
            env.scratch.clear();
            if let Record::Invalid { offset, reason } = r.record(&mut env.scratch, 0)? {
                env.invalid.get_or_insert((offset, reason));
            }
        } else if name == path {
            found = true;
            expand_value(r, docs, out)?;
        } else {
            if !first {
                *cut |= push_capped(doc, b",", cap);
            }
            first = false;
            *cut |= push_capped(doc, &key, cap);
            *cut |= push_capped(doc, b":", cap);
            let prefix =
                path.len() > name.len() && path.starts_with(name) && path[name.len()] == b'.';
            if prefix && r.peek()? == Some(b'{') {
                r.bump();
                *cut |= push_capped(doc, b"{", cap);
                found = expand_object(r, docs, out, &path[name.len() + 1..], doc, cut, env)?;
            } else {
                // Kept in case the field never comes: then the object is the event.
                match r.record(doc, cap)? {
                    Record::Valid(c) => *cut |= c,
                    Record::TooDeep => env.too_deep = true,
                    Record::Invalid { offset, reason } => {
                        env.invalid.get_or_insert((offset, reason));
                    }
                }
            }
        }
        match r.peek()? {
            Some(b',') => r.bump(),
            Some(b'}') => {
                r.bump();
                break;
            }
            _ => return Err(r.error("expected ',' or '}' in an object")),
        }
    }
    if !found {
        *cut |= push_capped(doc, b"}", cap);
    }
    Ok(found)
}

/// The value of `expand_field`: an array is one event per element, `null` none, anything else
/// one event.
fn expand_value(
    r: &mut JsonReader<'_>,
    docs: &mut Docs<'_>,
    out: &mut Emitter<'_>,
) -> Result<(), ProcessError> {
    if r.peek()? == Some(b'[') {
        r.bump();
        return array(r, docs, out);
    }
    docs.rec.clear();
    let read = r.record(&mut docs.rec, docs.spec.max_event_bytes)?;
    if read == Record::Valid(false) && docs.rec == b"null" {
        return Ok(());
    }
    docs.read(read, out)
}

/// Appends what fits under `cap`; true when something was left out.
fn push_capped(out: &mut Vec<u8>, add: &[u8], cap: usize) -> bool {
    let room = cap.saturating_sub(out.len());
    let n = room.min(add.len());
    out.extend_from_slice(&add[..n]);
    n < add.len()
}

/// Emits each element of an array whose `[` was consumed, through its `]`.
fn array(
    r: &mut JsonReader<'_>,
    docs: &mut Docs<'_>,
    out: &mut Emitter<'_>,
) -> Result<(), ProcessError> {
    let cap = docs.spec.max_event_bytes;
    if r.peek()? == Some(b']') {
        r.bump();
        return Ok(());
    }
    loop {
        docs.rec.clear();
        let read = r.record(&mut docs.rec, cap)?;
        out.stats.bytes_in = r.offset;
        docs.read(read, out)?;
        match r.peek()? {
            Some(b',') => r.bump(),
            Some(b']') => {
                r.bump();
                return Ok(());
            }
            _ => return Err(r.error("expected ',' or ']' in an array")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Oversize, ProcessError, ProcessorKind, ProcessorSpec};

    fn cloudtrail() -> ProcessorSpec {
        let mut spec = ProcessorSpec::new(ProcessorKind::Cloudtrail);
        spec.expand_field = Some("Records".into());
        spec
    }

    #[test]
    fn cloudtrail_records_pretty_printed() {
        let doc = b"{\n  \"Records\": [\n    {\n      \"eventVersion\": \"1.08\",\n      \"awsRegion\": \"us-east-1\",\n      \"a b\": [1, 2]\n    },\n    { \"eventVersion\" : \"1.09\" }\n  ]\n}\n";
        let (stats, msgs) = run(doc, &cloudtrail());
        assert_eq!(
            msgs,
            vec![
                r#"{"eventVersion":"1.08","awsRegion":"us-east-1","a b":[1,2]}"#,
                r#"{"eventVersion":"1.09"}"#
            ]
        );
        assert_eq!((stats.events, stats.bytes_in), (2, doc.len() as u64));
    }

    #[test]
    fn cloudtrail_concatenated_empty_and_without_records() {
        let doc = br#"{"Records":[{"a":1}]}{"Records":[]}{"x":"y","Records":null}{"digestPublicKeyFingerprint":"f","logFiles":[]}"#;
        let (_, msgs) = run(doc, &cloudtrail());
        assert_eq!(
            msgs,
            vec![
                r#"{"a":1}"#,
                r#"{"digestPublicKeyFingerprint":"f","logFiles":[]}"#
            ]
        );
    }

    #[test]
    fn cloudtrail_tag_template_from_fields() {
        let spec = cloudtrail()
            .with_tag("cloud.aws.cloudtrail.events.{recipientAccountId|none}.{awsRegion}");
        let doc = br#"{"Records":[{"awsRegion":"eu-west-1","recipientAccountId":"123"},{"x":1}]}"#;
        let (r, sink) = run_key(doc, &spec, "k");
        r.unwrap();
        assert_eq!(
            sink.tags(),
            vec![
                "cloud.aws.cloudtrail.events.123.eu-west-1",
                "cloud.aws.cloudtrail.events.none.unknown"
            ]
        );
    }

    #[test]
    fn json_top_level_array_and_field() {
        let spec = ProcessorSpec::new(ProcessorKind::Json);
        let (_, msgs) = run(b"[1, {\"a\" : 2}]\n{\"b\":3}", &spec);
        assert_eq!(msgs, vec!["1", r#"{"a":2}"#, r#"{"b":3}"#]);
        let mut spec = ProcessorSpec::new(ProcessorKind::Json);
        spec.expand_field = Some("configurationItems".into());
        let (_, msgs) = run(
            br#"{"fileVersion":"1.0","configSnapshotId":"x","configurationItems":[{"i":1},{"i":2}]}"#,
            &spec,
        );
        assert_eq!(msgs, vec![r#"{"i":1}"#, r#"{"i":2}"#]);
    }

    fn expand(path: &str) -> ProcessorSpec {
        let mut spec = ProcessorSpec::new(ProcessorKind::Json);
        spec.expand_field = Some(path.into());
        spec
    }

    #[test]
    fn expand_field_follows_a_nested_path() {
        let doc = br#"{"meta":{"v":1},"data":{"page":2,"items":{"list":[{"i":1},{"i":2}],"n":2}},"after":true}
{"data":{"items":{"list":{"one":1}}}}
{"data":{"items":{"list":null}}}
{"data":{"items":{"other":[1]}},"z":"0"}
{"data":[{"list":[9]}]}"#;
        let (stats, msgs) = run(doc, &expand("data.items.list"));
        assert_eq!(
            msgs,
            vec![
                r#"{"i":1}"#,
                r#"{"i":2}"#,
                r#"{"one":1}"#,
                // Without the field, the document is the event, whole and compact.
                r#"{"data":{"items":{"other":[1]}},"z":"0"}"#,
                // `data` is no object here: nothing to descend into.
                r#"{"data":[{"list":[9]}]}"#,
            ]
        );
        assert_eq!(stats.malformed_records, 0);
        // A top-level name still works, and is a one-segment path.
        let (_, msgs) = run(br#"{"a":{"b":[1]},"c":[2,3]}"#, &expand("c"));
        assert_eq!(msgs, vec!["2", "3"]);
    }

    #[test]
    fn expand_field_with_dots_in_member_names() {
        let spec = expand("a.b.c");
        // A member whose name is the whole path, or a dotted prefix of it, matches as written.
        let (_, msgs) = run(br#"{"x":0,"a.b.c":[1,2]}"#, &spec);
        assert_eq!(msgs, vec!["1", "2"]);
        let (_, msgs) = run(br#"{"a.b":{"c":[3]}}"#, &spec);
        assert_eq!(msgs, vec!["3"]);
        let (_, msgs) = run(br#"{"a":{"b.c":[4]}}"#, &spec);
        assert_eq!(msgs, vec!["4"]);
        // The first member in document order that leads to the field wins ...
        let (_, msgs) = run(br#"{"a":{"b":{"c":[5]}},"a.b.c":[6]}"#, &spec);
        assert_eq!(msgs, vec!["5"]);
        let (_, msgs) = run(br#"{"a.b.c":[6],"a":{"b":{"c":[5]}}}"#, &spec);
        assert_eq!(msgs, vec!["6"]);
        // ... and a prefix that does not lead to it lets the search go on.
        let (_, msgs) = run(br#"{"a":{"b":{"d":1}},"a.b.c":[7]}"#, &spec);
        assert_eq!(msgs, vec!["7"]);
    }

    #[test]
    fn nested_expand_streams_and_caps_the_document_kept_for_the_fallback() {
        let mut spec = expand("a.b");
        spec.max_event_bytes = 12;
        let (stats, msgs) = run(br#"{"a":{"x":"0123456789"}}"#, &spec);
        assert_eq!(msgs, vec![r#"{"a":{"x":"0"#]);
        assert_eq!(stats.truncated, 1);
        // Extract honours the nested expansion too.
        let mut spec = ProcessorSpec::new(ProcessorKind::Extract);
        spec.expand_field = Some("batch.events".into());
        spec.extract_field = Some("msg".into());
        let (_, msgs) = run(
            br#"{"batch":{"id":1,"events":[{"msg":"a"},{"msg":"b"}]}}"#,
            &spec,
        );
        assert_eq!(msgs, vec!["a", "b"]);
    }

    #[test]
    fn json_records_over_the_cap() {
        let mut spec = cloudtrail();
        spec.max_event_bytes = 8;
        let (stats, msgs) = run(br#"{"Records":[{"a":"0123456789"},{"b":1}]}"#, &spec);
        assert_eq!(msgs, vec![r#"{"a":"01"#, r#"{"b":1}"#]);
        assert_eq!(stats.truncated, 1);
        spec.oversize = Oversize::Drop;
        let (stats, msgs) = run(br#"{"Records":[{"a":"0123456789"},{"b":1}]}"#, &spec);
        assert_eq!(msgs, vec![r#"{"b":1}"#]);
        assert_eq!(stats.dropped, 1);
    }

    #[test]
    fn truncated_documents_fail_with_an_offset() {
        let (r, sink) = run_key(br#"{"Records":[{"a":1},{"b":"#, &cloudtrail(), "k");
        assert_eq!(sink.0.len(), 1, "records before the damage are emitted");
        match r {
            Err(ProcessError::Json { offset, .. }) => assert_eq!(offset, 25),
            other => panic!("{other:?}"),
        }
        let (r, _) = run_key(b"{\"Records\":[{}}", &cloudtrail(), "k");
        assert!(matches!(r, Err(ProcessError::Json { .. })), "{r:?}");
    }

    #[test]
    fn a_too_deep_record_is_skipped_and_the_others_kept() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let doc = format!(
            r#"{{"Records":[{{"a":1}},{{"deep":{deep}}},{{"b":2}}]}}{deep}{{"Records":{deep}}}[{{"c":3}}]"#
        );
        let (stats, msgs) = run(doc.as_bytes(), &cloudtrail());
        assert_eq!(msgs, vec![r#"{"a":1}"#, r#"{"b":2}"#, r#"{"c":3}"#]);
        assert_eq!(stats.malformed_records, 3);
        assert_eq!(stats.bytes_in, doc.len() as u64);
        // Not closed: the stream is broken, the records before stay emitted.
        let (r, sink) = run_key(
            format!(r#"{{"Records":[{{"a":1}},{}"#, "[".repeat(200)).as_bytes(),
            &cloudtrail(),
            "k",
        );
        assert!(matches!(r, Err(ProcessError::Json { .. })), "{r:?}");
        assert_eq!(sink.messages(), vec![r#"{"a":1}"#]);
    }

    #[test]
    fn json_lines_compacts_and_drops_or_keeps_bad_lines() {
        let data = b"{ \"a\": 1 }\n\n  \nnot json\n{\"b\":\"x\\ny\"}\r\n";
        let mut spec = ProcessorSpec::new(ProcessorKind::JsonLines);
        let (stats, msgs) = run(data, &spec);
        assert_eq!(msgs, vec![r#"{"a":1}"#, r#"{"b":"x\ny"}"#]);
        assert_eq!(stats.invalid_json, 1);
        spec.invalid_json = super::super::InvalidJson::Raw;
        let (stats, msgs) = run(data, &spec);
        assert_eq!(msgs, vec![r#"{"a":1}"#, "not json", r#"{"b":"x\ny"}"#]);
        assert_eq!(stats.invalid_json, 1);
    }

    #[test]
    fn extract_emits_one_field() {
        let mut spec = ProcessorSpec::new(ProcessorKind::Extract);
        spec.extract_field = Some("detail.msg".into());
        let (stats, msgs) = run(
            br#"{"detail":{"msg":"line1\nline2 \u00e9"}}{"detail":{"msg":{"k":1}}}{"other":1}"#,
            &spec,
        );
        assert_eq!(msgs, vec!["line1\\nline2 é", r#"{"k":1}"#]);
        assert_eq!((stats.malformed_records, stats.escaped_newlines), (1, 1));
        spec.expand_field = Some("Records".into());
        let (_, msgs) = run(br#"{"Records":[{"detail":{"msg":"a"}}]}"#, &spec);
        assert_eq!(msgs, vec!["a"]);
    }

    #[test]
    fn a_huge_record_streams_with_bounded_memory() {
        // 3 MiB record in a document: capped to 1 MiB while reading.
        let mut doc = br#"{"Records":[{"big":""#.to_vec();
        doc.extend(std::iter::repeat_n(b'x', 3 << 20));
        doc.extend_from_slice(br#""},{"small":1}]}"#);
        let (stats, msgs) = run(&doc, &cloudtrail());
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].len(), 1 << 20);
        assert_eq!(stats.truncated, 1);
    }
}
