//! The channel protocol shared by the relay (server side) and its producers (client side):
//! constants, the line syntax `TAG SP MESSAGE LF`, tag validation, the caps a relay announces
//! (`GET /v1/limits`) and the batch encoder.
//!
//! The normative text is `docs/channel.md`; this module is its code. It does no I/O.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

/// Path of the batch endpoint, version 1.
pub const BATCHES_PATH: &str = "/v1/batches";
/// Header carrying the producer's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Optional header carrying the number of lines in the batch.
pub const EVENTS_HEADER: &str = "x-sluice-events";
/// Content type of a decompressed batch body.
pub const CONTENT_TYPE: &str = "application/x-sluice-lines";
/// Longest tag accepted, in bytes.
pub const MAX_TAG_BYTES: usize = 256;
/// Longest idempotency key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 128;
/// Path of the endpoint where a relay announces its caps, version 1.
pub const LIMITS_PATH: &str = "/v1/limits";

/// The caps a relay applies to batches, as `GET /v1/limits` announces them. A producer that
/// keeps every batch within them is never answered 413.
///
/// A relay without the endpoint (404) applies [`ChannelLimits::V1_DEFAULTS`]; a field missing
/// from the answer takes its default too, and unknown fields are ignored, so the answer can
/// grow within version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ChannelLimits {
    /// Largest request body (compressed), in bytes.
    pub max_body_bytes: u64,
    /// Largest decompressed body, in bytes.
    pub max_batch_bytes: u64,
    /// Largest message (the bytes after `TAG SP`), in bytes.
    pub max_event_bytes: u64,
    /// Longest tag, in bytes.
    pub max_tag_bytes: u64,
}

impl ChannelLimits {
    /// The caps of a relay with an empty `[limits]` table, documented in docs/channel.md.
    pub const V1_DEFAULTS: ChannelLimits = ChannelLimits {
        max_body_bytes: 16 * 1024 * 1024,
        max_batch_bytes: 64 * 1024 * 1024,
        max_event_bytes: 1024 * 1024,
        max_tag_bytes: MAX_TAG_BYTES as u64,
    };
}

impl Default for ChannelLimits {
    fn default() -> Self {
        ChannelLimits::V1_DEFAULTS
    }
}

/// Why a tag is not a Devo tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("tag is empty")]
    Empty,
    #[error("tag is longer than {MAX_TAG_BYTES} bytes")]
    TooLong,
    #[error("tag has {0} levels; Devo tags have 2 to 6")]
    Levels(usize),
    #[error("tag level {0} is empty")]
    EmptyLevel(usize),
    #[error("tag holds the byte {0:#04x}; only A-Z a-z 0-9 _ - and . are allowed")]
    Byte(u8),
}

/// Checks that `tag` is a Devo tag: 2 to 6 dot-separated levels of `[A-Za-z0-9_-]`.
pub fn validate_tag(tag: &[u8]) -> Result<(), TagError> {
    if tag.is_empty() {
        return Err(TagError::Empty);
    }
    if tag.len() > MAX_TAG_BYTES {
        return Err(TagError::TooLong);
    }
    let mut levels = 0;
    for (i, level) in tag.split(|&b| b == b'.').enumerate() {
        levels += 1;
        if level.is_empty() {
            return Err(TagError::EmptyLevel(i + 1));
        }
        if let Some(&b) = level
            .iter()
            .find(|&&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        {
            return Err(TagError::Byte(b));
        }
    }
    if !(2..=6).contains(&levels) {
        return Err(TagError::Levels(levels));
    }
    Ok(())
}

/// Checks an idempotency key: 1 to 128 bytes of `[A-Za-z0-9._:-]`.
pub fn validate_idempotency_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_BYTES
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Builds one batch body: lines `TAG SP MESSAGE LF`, gzip-compressed 64 KiB at a time as they
/// are added, so the uncompressed batch never sits in memory whole.
///
/// The caller guarantees that messages hold no LF (processors escape or refuse them); the
/// encoder does not check it again on the hot path, the relay does.
pub struct BatchEncoder {
    gz: GzEncoder<Vec<u8>>,
    /// Lines not yet compressed. The compressor is fed in chunks: gzip's CRC and deflate
    /// have a fixed cost per call that dwarfs a 100-byte event, so writing each line (four
    /// writes: tag, space, message, LF) straight into it cost more than the compression.
    pending: Vec<u8>,
    events: u64,
    raw_bytes: u64,
}

/// Lines gathered before one write into the compressor.
const CHUNK_BYTES: usize = 64 * 1024;

impl BatchEncoder {
    /// A new, empty batch compressed at `level` (0 = store, 1 = fastest … 9 = smallest).
    pub fn new(level: u32) -> Self {
        BatchEncoder {
            gz: GzEncoder::new(
                Vec::with_capacity(64 * 1024),
                Compression::new(level.min(9)),
            ),
            pending: Vec::with_capacity(CHUNK_BYTES + 4096),
            events: 0,
            raw_bytes: 0,
        }
    }

    /// Appends one event. Writing into a `Vec` cannot fail, so neither can this.
    pub fn push(&mut self, tag: &str, message: &[u8]) {
        self.pending.extend_from_slice(tag.as_bytes());
        self.pending.push(b' ');
        self.pending.extend_from_slice(message);
        self.pending.push(b'\n');
        self.events += 1;
        self.raw_bytes += (tag.len() + message.len() + 2) as u64;
        if self.pending.len() >= CHUNK_BYTES {
            self.compress_pending();
        }
    }

    fn compress_pending(&mut self) {
        // Writing into a `Vec` cannot fail.
        let _ = self.gz.write_all(&self.pending);
        self.pending.clear();
    }

    /// Number of events pushed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Uncompressed size of the lines pushed so far, in bytes.
    pub fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Finishes the gzip stream and returns the body.
    pub fn finish(mut self) -> EncodedBatch {
        self.compress_pending();
        let body = self.gz.finish().unwrap_or_default();
        EncodedBatch {
            body: bytes::Bytes::from(body),
            events: self.events,
            raw_bytes: self.raw_bytes,
        }
    }
}

/// A finished batch body, ready to POST.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    /// The gzip body.
    pub body: bytes::Bytes,
    /// Number of lines in it.
    pub events: u64,
    /// Uncompressed size in bytes.
    pub raw_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn tags() {
        assert!(validate_tag(b"cloud.aws.cloudtrail.events").is_ok());
        assert!(validate_tag(b"my.app.a-b.c_d").is_ok());
        assert_eq!(validate_tag(b"single"), Err(TagError::Levels(1)));
        assert_eq!(validate_tag(b"a.b.c.d.e.f.g"), Err(TagError::Levels(7)));
        assert_eq!(validate_tag(b"a..b"), Err(TagError::EmptyLevel(2)));
        assert_eq!(validate_tag(b"a.b c"), Err(TagError::Byte(b' ')));
        assert_eq!(validate_tag(b""), Err(TagError::Empty));
    }

    #[test]
    fn limits_answer_defaults_missing_fields_and_ignores_unknown_ones() {
        let l: ChannelLimits =
            serde_json::from_str(r#"{"max_event_bytes":65536,"future":1}"#).unwrap();
        assert_eq!(l.max_event_bytes, 65536);
        assert_eq!(l.max_body_bytes, ChannelLimits::V1_DEFAULTS.max_body_bytes);
        assert_eq!(l.max_tag_bytes, 256);
        let text = serde_json::to_string(&ChannelLimits::V1_DEFAULTS).unwrap();
        assert_eq!(
            text,
            r#"{"max_body_bytes":16777216,"max_batch_bytes":67108864,"max_event_bytes":1048576,"max_tag_bytes":256}"#
        );
    }

    #[test]
    fn keys() {
        assert!(validate_idempotency_key("collector-1:42"));
        assert!(!validate_idempotency_key(""));
        assert!(!validate_idempotency_key("a b"));
        assert!(!validate_idempotency_key(&"x".repeat(129)));
    }

    #[test]
    fn encoder_round_trip_across_chunks() {
        let mut enc = BatchEncoder::new(1);
        let mut expected = String::new();
        for i in 0..20_000 {
            let message = format!("event number {i}");
            enc.push("my.app.test", message.as_bytes());
            expected.push_str(&format!("my.app.test {message}\n"));
        }
        let batch = enc.finish();
        let mut out = String::new();
        flate2::read::MultiGzDecoder::new(&batch.body[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, expected);
        assert_eq!(batch.raw_bytes, expected.len() as u64);
    }

    #[test]
    fn encoder_round_trip() {
        let mut enc = BatchEncoder::new(1);
        enc.push("my.app.test", b"hello");
        enc.push("my.app.test", b"");
        let batch = enc.finish();
        assert_eq!(batch.events, 2);
        let mut out = String::new();
        flate2::read::MultiGzDecoder::new(&batch.body[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "my.app.test hello\nmy.app.test \n");
        assert_eq!(batch.raw_bytes, out.len() as u64);
    }
}
