//! The last step every processor shares: turns a candidate event into what the sink gets.
//!
//! In order: drop when already over the cap and `oversize = drop`; fix invalid UTF-8 per
//! `encoding`; escape embedded LF/CR as `\n`/`\r` (so one event stays one Devo line); apply the
//! byte cap again (fixing and escaping can grow an event) on a character boundary; append the
//! enrichment object to JSON object events; render the tag; hand it to the sink; count.
//!
//! Valid, LF-free events under the cap are passed through without a copy. It does not split.

use super::charset::{self, Encoding};
use super::json::write_json_string;
use super::tag::{default_tag, BoundTag, FieldSource};
use super::{EventSink, ObjectContext, ObjectStats, Oversize, ProcessError, ProcessorSpec};

/// Shapes, tags and counts events for one object.
pub(crate) struct Emitter<'a> {
    sink: &'a mut dyn EventSink,
    /// Counters; processors also keep `bytes_in` current (it is the offset of errors).
    pub stats: ObjectStats,
    max: usize,
    oversize: Oversize,
    encoding: Encoding,
    tag: BoundTag,
    tag_buf: String,
    fixed: Vec<u8>,
    escaped: Vec<u8>,
    enriched: Vec<u8>,
    /// `"<field>":{...}}` appended to JSON objects, when enrichment is on.
    enrich: Option<Vec<u8>>,
}

impl<'a> Emitter<'a> {
    pub fn new(spec: &ProcessorSpec, ctx: &ObjectContext<'_>, sink: &'a mut dyn EventSink) -> Self {
        let captures: Vec<(String, Option<String>)> = match &spec.key_pattern {
            Some(re) => {
                let caps = re.captures(ctx.key);
                re.capture_names()
                    .flatten()
                    .map(|name| {
                        let value = caps
                            .as_ref()
                            .and_then(|c| c.name(name))
                            .map(|m| m.as_str().to_string());
                        (name.to_string(), value)
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let tag = match &spec.tag {
            Some(t) => t.bind(&captures, spec.max_tag_bytes),
            None => BoundTag::Static(default_tag(spec.kind, ctx.key).to_string()),
        };
        Emitter {
            sink,
            stats: ObjectStats::default(),
            max: spec.max_event_bytes,
            oversize: spec.oversize,
            encoding: spec.encoding,
            tag,
            tag_buf: String::new(),
            fixed: Vec::new(),
            escaped: Vec::new(),
            enriched: Vec::new(),
            enrich: spec
                .enrich_field
                .as_deref()
                .map(|field| enrichment(field, ctx)),
        }
    }

    /// True when tags need each record's fields (processors skip field lookups otherwise).
    pub fn wants_fields(&self) -> bool {
        matches!(self.tag, BoundTag::PerRecord { .. })
    }

    /// Emits a text event. `cut` says the processor already cut it to the cap.
    pub fn text(
        &mut self,
        msg: &[u8],
        cut: bool,
        fields: &dyn FieldSource,
    ) -> Result<(), ProcessError> {
        self.event(msg, cut, false, fields)
    }

    /// Emits a compact JSON event (gets enrichment when it is a whole object).
    pub fn json(
        &mut self,
        msg: &[u8],
        cut: bool,
        fields: &dyn FieldSource,
    ) -> Result<(), ProcessError> {
        self.event(msg, cut, true, fields)
    }

    fn event(
        &mut self,
        msg: &[u8],
        mut cut: bool,
        json: bool,
        fields: &dyn FieldSource,
    ) -> Result<(), ProcessError> {
        if cut && self.oversize == Oversize::Drop {
            self.stats.dropped += 1;
            return Ok(());
        }
        let mut fixed = std::mem::take(&mut self.fixed);
        let mut escaped = std::mem::take(&mut self.escaped);
        let mut enriched = std::mem::take(&mut self.enriched);
        let mut m = msg;
        if let Some(invalid) = charset::fix(m, self.encoding, cut, &mut fixed) {
            if invalid {
                self.stats.invalid_utf8 += 1;
            }
            m = &fixed;
        }
        if memchr::memchr3(b'\n', b'\r', 0, m).is_some() {
            escape_newlines(m, &mut escaped);
            self.stats.escaped_newlines += 1;
            m = &escaped;
        }
        if m.len() > self.max {
            if self.oversize == Oversize::Drop {
                self.stats.dropped += 1;
                self.fixed = fixed;
                self.escaped = escaped;
                self.enriched = enriched;
                return Ok(());
            }
            m = &m[..charset::floor_boundary(m, self.max)];
            cut = true;
        }
        if json && !cut && m.len() >= 2 && m[0] == b'{' && m[m.len() - 1] == b'}' {
            // Enrichment must not push an event past the cap (the relay holds the same one):
            // an event it would not fit in goes out as it is.
            if let Some(suffix) = self
                .enrich
                .as_ref()
                .filter(|sfx| m.len() + sfx.len() < self.max)
            {
                enriched.clear();
                enriched.extend_from_slice(&m[..m.len() - 1]);
                if m.len() > 2 {
                    enriched.push(b',');
                }
                enriched.extend_from_slice(suffix);
                m = &enriched;
            }
        }
        self.tag.render(fields, &mut self.tag_buf);
        let result = self.sink.emit(&self.tag_buf, m);
        self.fixed = fixed;
        self.escaped = escaped;
        self.enriched = enriched;
        result.map_err(|source| ProcessError::Sink {
            offset: self.stats.bytes_in,
            source,
        })?;
        self.stats.events += 1;
        if cut {
            self.stats.truncated += 1;
        }
        Ok(())
    }

    /// The counters of the object.
    pub fn finish(self) -> ObjectStats {
        self.stats
    }
}

/// Copies `m` to `out` (cleared) with LF as `\n`, CR as `\r` and NUL as `\0`: Devo forbids
/// all three in a message, and the relay refuses a batch holding one.
fn escape_newlines(m: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(m.len() + 16);
    let mut rest = m;
    while let Some(i) = memchr::memchr3(b'\n', b'\r', 0, rest) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(match rest[i] {
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => b"\\0",
        });
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

/// The enrichment member (without its leading comma) and the object's closing brace.
fn enrichment(field: &str, ctx: &ObjectContext<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_json_string(field.as_bytes(), &mut out);
    out.extend_from_slice(b":{\"bucket\":");
    write_json_string(ctx.bucket.as_bytes(), &mut out);
    out.extend_from_slice(b",\"key\":");
    write_json_string(ctx.key.as_bytes(), &mut out);
    if let Some(id) = ctx.message_id {
        out.extend_from_slice(b",\"sqs_message_id\":");
        write_json_string(id.as_bytes(), &mut out);
    }
    if let Some(ms) = ctx.sent_timestamp_ms {
        out.extend_from_slice(format!(",\"sqs_sent_timestamp\":{ms}").as_bytes());
    }
    if let Some(n) = ctx.receive_count {
        out.extend_from_slice(format!(",\"sqs_receive_count\":{n}").as_bytes());
    }
    out.extend_from_slice(b"}}");
    out
}

#[cfg(test)]
mod tests {
    use super::super::tag::NoFields;
    use super::super::testutil::Collect;
    use super::super::ProcessorKind;
    use super::*;

    fn emitter<'a>(spec: &ProcessorSpec, sink: &'a mut Collect) -> Emitter<'a> {
        let ctx = ObjectContext::new("bkt", "a/\"k\"").with_message(Some("m-1"), Some(17), Some(2));
        Emitter::new(spec, &ctx, sink)
    }

    #[test]
    fn escapes_newlines_and_fixes_utf8() {
        let spec = ProcessorSpec::new(ProcessorKind::Lines);
        let mut sink = Collect::default();
        let mut e = emitter(&spec, &mut sink);
        e.text(b"a\nb\r\nc", false, &NoFields).unwrap();
        e.text(b"caf\xe9", false, &NoFields).unwrap();
        let stats = e.finish();
        assert_eq!(sink.messages(), vec!["a\\nb\\r\\nc", "caf\u{FFFD}"]);
        assert_eq!(sink.tags(), vec!["my.app.sluice.lines"; 2]);
        assert_eq!((stats.escaped_newlines, stats.invalid_utf8), (1, 1));
    }

    #[test]
    fn nul_is_escaped_so_the_relay_accepts_the_batch() {
        let spec = ProcessorSpec::new(ProcessorKind::Lines);
        let mut sink = Collect::default();
        let mut e = emitter(&spec, &mut sink);
        e.text(b"a\0b", false, &NoFields).unwrap();
        assert_eq!(sink.messages(), vec!["a\\0b"]);
    }

    #[test]
    fn caps_after_growth_on_char_boundary() {
        let mut spec = ProcessorSpec::new(ProcessorKind::Lines);
        spec.max_event_bytes = 5;
        let mut sink = Collect::default();
        let mut e = emitter(&spec, &mut sink);
        e.text(b"ab\n\xe9", false, &NoFields).unwrap(); // -> ab\n� = 7 bytes
        let stats = e.finish();
        assert_eq!(sink.messages(), vec!["ab\\n"]);
        assert_eq!(stats.truncated, 1);

        spec.oversize = Oversize::Drop;
        let mut sink = Collect::default();
        let mut e = emitter(&spec, &mut sink);
        e.text(b"ab\n\xe9", false, &NoFields).unwrap();
        e.text(b"abc", true, &NoFields).unwrap();
        e.text(b"abc", false, &NoFields).unwrap();
        let stats = e.finish();
        assert_eq!(sink.messages(), vec!["abc"]);
        assert_eq!(stats.dropped, 2);
    }

    #[test]
    fn enriches_json_objects_only() {
        let mut spec = ProcessorSpec::new(ProcessorKind::Json);
        spec.enrich_field = Some("meta".into());
        let mut sink = Collect::default();
        let mut e = emitter(&spec, &mut sink);
        e.json(br#"{"a":1}"#, false, &NoFields).unwrap();
        e.json(b"{}", false, &NoFields).unwrap();
        e.json(b"[1]", false, &NoFields).unwrap();
        e.text(b"{x}", false, &NoFields).unwrap();
        e.finish();
        let meta = r#""meta":{"bucket":"bkt","key":"a/\"k\"","sqs_message_id":"m-1","sqs_sent_timestamp":17,"sqs_receive_count":2}"#;
        assert_eq!(
            sink.messages(),
            vec![
                format!("{{\"a\":1,{meta}}}"),
                format!("{{{meta}}}"),
                "[1]".to_string(),
                "{x}".to_string()
            ]
        );
    }
}
