//! `cloudwatch_logs`: CloudWatch Logs subscription data as Firehose writes it to S3 — gzip
//! members (already joined by the decompress stage) of `{"messageType":"DATA_MESSAGE",
//! "owner":..,"logGroup":..,"logStream":..,"subscriptionFilters":[..],"logEvents":[..]}`
//! documents glued together (`}{`) or separated by whitespace.
//!
//! One event per `logEvents[]` entry: the entry with `logGroup`, `logStream` and `owner` added
//! (default), or its `message` text alone (`cloudwatch_message_only`; trailing newlines removed,
//! inner ones escaped by the emitter). `CONTROL_MESSAGE` documents are skipped and counted.
//! Entries are streamed one at a time; the envelope fields must come before `logEvents`, as
//! CloudWatch writes them (fields that come later are not added to the entries).
//!
//! A log event that is not valid JSON meets `invalid_json` and the next one goes on (when its
//! brackets balance); damage to the envelope ends the object with an error.
//!
//! It does not handle Firehose's own "decompress + extract message" mode: use `lines` there.

use std::borrow::Cow;
use std::io::BufRead;

use super::emit::Emitter;
use super::json::{find_member, json_field, value_text, JsonReader, Record};
use super::jsonproc::invalid_record;
use super::tag::FieldSource;
use super::{ProcessError, ProcessorSpec};

/// Raw (still quoted) envelope values of the current document.
#[derive(Default)]
struct Envelope {
    message_type: Vec<u8>,
    owner: Vec<u8>,
    group: Vec<u8>,
    stream: Vec<u8>,
}

/// Entry fields first, then the envelope's, for tag templates.
struct EntryFields<'a> {
    entry: &'a [u8],
    env: &'a Envelope,
}

impl FieldSource for EntryFields<'_> {
    fn field(&self, path: &str) -> Option<Cow<'_, str>> {
        let raw = match path {
            "logGroup" => &self.env.group,
            "logStream" => &self.env.stream,
            "owner" => &self.env.owner,
            "messageType" => &self.env.message_type,
            _ => return json_field(self.entry, path),
        };
        (!raw.is_empty()).then(|| value_text(raw))
    }
}

/// Splits CloudWatch Logs documents into log events.
pub(crate) fn process(
    input: &mut dyn BufRead,
    spec: &ProcessorSpec,
    out: &mut Emitter<'_>,
) -> Result<(), ProcessError> {
    let mut r = JsonReader::new(input);
    let cap = spec.max_event_bytes;
    let mut env = Envelope::default();
    let mut key = Vec::new();
    let mut entry = Vec::new();
    let mut event = Vec::new();
    let mut scratch = Vec::new();
    loop {
        out.stats.bytes_in = r.offset;
        match r.peek()? {
            None => break,
            Some(b'{') => r.bump(),
            Some(_) => return Err(r.error("expected a CloudWatch Logs document ('{')")),
        }
        env.message_type.clear();
        env.owner.clear();
        env.group.clear();
        env.stream.clear();
        if r.peek()? == Some(b'}') {
            r.bump();
            continue;
        }
        loop {
            if r.peek()? != Some(b'"') {
                return Err(r.error("expected a member name"));
            }
            key.clear();
            r.value(&mut key, true, 256)?;
            r.expect(b':', "expected ':' after a member name")?;
            let slot = match key.as_slice() {
                b"\"messageType\"" => Some(&mut env.message_type),
                b"\"owner\"" => Some(&mut env.owner),
                b"\"logGroup\"" => Some(&mut env.group),
                b"\"logStream\"" => Some(&mut env.stream),
                _ => None,
            };
            if let Some(slot) = slot {
                slot.clear();
                r.value(slot, true, 4096)?;
            } else if key == b"\"logEvents\""
                && (env.message_type.is_empty() || env.message_type == b"\"DATA_MESSAGE\"")
                && r.peek()? == Some(b'[')
            {
                r.bump();
                if r.peek()? == Some(b']') {
                    r.bump();
                } else {
                    loop {
                        entry.clear();
                        let read = r.record(&mut entry, cap)?;
                        out.stats.bytes_in = r.offset;
                        match read {
                            Record::Valid(cut) => {
                                emit_entry(&entry, cut, &env, spec, out, &mut event, &mut scratch)?
                            }
                            Record::TooDeep => out.stats.malformed_records += 1,
                            Record::Invalid { offset, reason } => {
                                invalid_record(&entry, offset, reason, spec, out)?
                            }
                        }
                        match r.peek()? {
                            Some(b',') => r.bump(),
                            Some(b']') => {
                                r.bump();
                                break;
                            }
                            _ => return Err(r.error("expected ',' or ']' in logEvents")),
                        }
                    }
                }
            } else {
                scratch.clear();
                r.value(&mut scratch, false, 0)?;
            }
            match r.peek()? {
                Some(b',') => r.bump(),
                Some(b'}') => {
                    r.bump();
                    break;
                }
                _ => return Err(r.error("expected ',' or '}' in a document")),
            }
        }
        if !env.message_type.is_empty() && env.message_type != b"\"DATA_MESSAGE\"" {
            out.stats.skipped_documents += 1;
        }
    }
    out.stats.bytes_in = r.offset;
    Ok(())
}

/// Emits one log event.
fn emit_entry(
    entry: &[u8],
    cut: bool,
    env: &Envelope,
    spec: &ProcessorSpec,
    out: &mut Emitter<'_>,
    event: &mut Vec<u8>,
    text: &mut Vec<u8>,
) -> Result<(), ProcessError> {
    let fields = EntryFields { entry, env };
    if spec.cloudwatch_message_only {
        let Some(raw) = find_member(entry, b"message") else {
            out.stats.malformed_records += 1;
            return Ok(());
        };
        text.clear();
        if raw.first() == Some(&b'"') && raw.len() >= 2 {
            super::json::unescape(&raw[1..raw.len() - 1], text);
        } else {
            text.extend_from_slice(raw);
        }
        while matches!(text.last(), Some(b'\n' | b'\r')) {
            text.pop();
        }
        return out.text(text, false, &fields);
    }
    if cut || entry.len() < 2 || entry[entry.len() - 1] != b'}' {
        return out.json(entry, cut, &fields);
    }
    event.clear();
    event.extend_from_slice(&entry[..entry.len() - 1]);
    for (name, raw) in [
        (&b"logGroup"[..], &env.group),
        (b"logStream", &env.stream),
        (b"owner", &env.owner),
    ] {
        if raw.is_empty() {
            continue;
        }
        if event.len() > 1 {
            event.push(b',');
        }
        event.push(b'"');
        event.extend_from_slice(name);
        event.extend_from_slice(b"\":");
        event.extend_from_slice(raw);
    }
    event.push(b'}');
    out.json(event, false, &fields)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{ProcessorKind, ProcessorSpec};

    const DOCS: &[u8] = br#"{"messageType":"CONTROL_MESSAGE","owner":"CloudwatchLogs","logGroup":"","logStream":"","subscriptionFilters":[],"logEvents":[{"id":"","timestamp":1,"message":"CWL CONTROL MESSAGE: Checking health of destination Firehose."}]}{"messageType":"DATA_MESSAGE","owner":"123","logGroup":"/aws/lambda/f","logStream":"s1","subscriptionFilters":["f"],"logEvents":[{"id":"1","timestamp":2,"message":"START\n"},{"id":"2","timestamp":3,"message":"{\"k\":\"v\"}"}]}
 {"messageType":"DATA_MESSAGE","owner":"123","logGroup":"g2","logStream":"s2","logEvents":[]}"#;

    #[test]
    fn entries_with_group_and_stream() {
        let spec = ProcessorSpec::new(ProcessorKind::CloudwatchLogs);
        let (stats, msgs) = run(DOCS, &spec);
        assert_eq!(
            msgs,
            vec![
                r#"{"id":"1","timestamp":2,"message":"START\n","logGroup":"/aws/lambda/f","logStream":"s1","owner":"123"}"#,
                r#"{"id":"2","timestamp":3,"message":"{\"k\":\"v\"}","logGroup":"/aws/lambda/f","logStream":"s1","owner":"123"}"#,
            ]
        );
        assert_eq!((stats.events, stats.skipped_documents), (2, 1));
    }

    #[test]
    fn message_only_and_group_tags() {
        let mut spec = ProcessorSpec::new(ProcessorKind::CloudwatchLogs)
            .with_tag("cloud.aws.cloudwatch.{owner}.{logStream}");
        spec.cloudwatch_message_only = true;
        let (r, sink) = run_key(DOCS, &spec, "k");
        r.unwrap();
        assert_eq!(sink.messages(), vec!["START", r#"{"k":"v"}"#]);
        assert_eq!(sink.tags(), vec!["cloud.aws.cloudwatch.123.s1"; 2]);
    }

    #[test]
    fn not_a_document() {
        let spec = ProcessorSpec::new(ProcessorKind::CloudwatchLogs);
        let (r, _) = run_key(b"plain text", &spec, "k");
        assert!(r.is_err());
    }
}
