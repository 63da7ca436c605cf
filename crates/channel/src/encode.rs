//! The producer's side of a batch body: lines `TAG SP MESSAGE LF` gzip-compressed as they
//! are added. The relay's side is [`crate::decode`]. It does no I/O.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

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
