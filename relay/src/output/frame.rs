//! Devo syslog framing (DEVO.md): turns a stored batch into the exact bytes that go on the
//! wire, `<PRI>Mmm dd HH:MM:SS HOST TAG: MESSAGE LF`, optionally octet-counted
//! (`LEN SP line`) and optionally in Devo's compressed "zip" mode (lines gathered into a buffer
//! that is written as one gzip member, level 6, each time it passes its size and at the end of
//! the batch).
//!
//! It produces bounded chunks, so a batch is never held formatted in memory whole; it does no
//! I/O.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::config::Framing;
use sluice_channel::decode::{BatchError, DecodeLimits, LineDecoder};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The RFC 3164 date `Mmm dd HH:MM:SS` (day padded with a space) of a UTC unix time.
pub(crate) fn rfc3164_date(unix_secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        MONTHS[t.month() as usize - 1],
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Formats single events; keeps the header of the current second.
pub struct Framer {
    prefix_pri: String,
    host: String,
    octet_counting: bool,
    zip_buffer: Option<usize>,
    /// Second of `header`, and the header `<PRI>DATE HOST ` itself.
    header_secs: i64,
    header: Vec<u8>,
}

impl Framer {
    pub fn new(f: &Framing) -> Self {
        Framer {
            prefix_pri: format!("<{}>", f.facility as u16 * 8 + f.severity as u16),
            host: f.hostname.clone(),
            octet_counting: f.octet_counting,
            zip_buffer: f.zip_buffer,
            header_secs: i64::MIN,
            header: Vec::new(),
        }
    }

    /// Sets the date used by the following lines (current UTC time, refreshed per batch).
    pub(crate) fn set_time(&mut self, unix_secs: i64) {
        if unix_secs != self.header_secs {
            self.header_secs = unix_secs;
            self.header.clear();
            self.header.extend_from_slice(self.prefix_pri.as_bytes());
            self.header
                .extend_from_slice(rfc3164_date(unix_secs).as_bytes());
            self.header.push(b' ');
            self.header.extend_from_slice(self.host.as_bytes());
            self.header.push(b' ');
        }
    }

    /// Uses the wall clock.
    pub(crate) fn set_now(&mut self) {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.set_time(secs);
    }

    /// Appends one event's line (LF included) to `out`.
    pub(crate) fn push(&self, tag: &[u8], message: &[u8], out: &mut Vec<u8>) {
        if self.octet_counting {
            let len = self.header.len() + tag.len() + 2 + message.len() + 1;
            let _ = write!(out, "{len} ");
        }
        out.extend_from_slice(&self.header);
        out.extend_from_slice(tag);
        out.extend_from_slice(b": ");
        out.extend_from_slice(message);
        out.push(b'\n');
    }

    /// Frames one stored batch body, chunk by chunk.
    pub fn batch<'a>(&'a mut self, body: &'a [u8]) -> BatchFrames<'a> {
        self.set_now();
        BatchFrames {
            dec: LineDecoder::new(
                body,
                DecodeLimits {
                    // The ingest checked the caps; delivery must not refuse what was accepted.
                    max_batch_bytes: u64::MAX,
                    max_event_bytes: u32::MAX as u64,
                },
            ),
            zip: Vec::new(),
            framer: self,
            done: false,
        }
    }
}

/// What one chunk holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkStats {
    pub events: u64,
}

/// The framed bytes of one batch, produced in chunks.
pub struct BatchFrames<'a> {
    dec: LineDecoder<&'a [u8]>,
    framer: &'a Framer,
    zip: Vec<u8>,
    done: bool,
}

impl BatchFrames<'_> {
    /// Appends framed bytes to `out` until it holds at least `target` bytes or the batch ends.
    /// `None` once everything was produced.
    pub fn next_chunk(
        &mut self,
        out: &mut Vec<u8>,
        target: usize,
    ) -> Result<Option<ChunkStats>, BatchError> {
        if self.done {
            return Ok(None);
        }
        let mut stats = ChunkStats::default();
        while out.len() < target {
            let Some(line) = self.dec.next_raw()? else {
                self.done = true;
                if !self.zip.is_empty() {
                    gzip_member(&self.zip, out);
                    self.zip.clear();
                }
                break;
            };
            let sp = memchr::memchr(b' ', line).unwrap_or(line.len());
            let (tag, message) = (&line[..sp], line.get(sp + 1..).unwrap_or_default());
            stats.events += 1;
            match self.framer.zip_buffer {
                None => self.framer.push(tag, message, out),
                Some(size) => {
                    self.framer.push(tag, message, &mut self.zip);
                    if self.zip.len() >= size {
                        gzip_member(&self.zip, out);
                        self.zip.clear();
                    }
                }
            }
        }
        if stats.events == 0 && out.is_empty() {
            return Ok(None);
        }
        Ok(Some(stats))
    }
}

fn gzip_member(data: &[u8], out: &mut Vec<u8>) {
    let mut e = GzEncoder::new(std::mem::take(out), Compression::new(6));
    let _ = e.write_all(data);
    *out = e.finish().unwrap_or_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_channel::encode::BatchEncoder;
    use std::io::Read;

    fn framing() -> Framing {
        Framing {
            hostname: "myhost".into(),
            facility: 1,
            severity: 6,
            octet_counting: false,
            zip_buffer: None,
        }
    }

    fn body(lines: &[(&str, &str)]) -> Vec<u8> {
        let mut e = BatchEncoder::new(1);
        for (t, m) in lines {
            e.push(t, m.as_bytes());
        }
        e.finish().body.to_vec()
    }

    fn all(f: &mut Framer, body: &[u8]) -> Vec<u8> {
        let mut frames = f.batch(body);
        let (mut out, mut chunk) = (Vec::new(), Vec::new());
        while frames.next_chunk(&mut chunk, 16).unwrap().is_some() {
            out.extend_from_slice(&chunk);
            chunk.clear();
        }
        out
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3164_date(0), "Jan  1 00:00:00");
        assert_eq!(rfc3164_date(1_700_000_000), "Nov 14 22:13:20");
    }

    #[test]
    fn devo_line_exact() {
        let mut f = Framer::new(&framing());
        f.set_time(0);
        let mut out = Vec::new();
        f.push(b"my.app.test.rust", b"hello world", &mut out);
        assert_eq!(
            out,
            b"<14>Jan  1 00:00:00 myhost my.app.test.rust: hello world\n"
        );
        assert_eq!(out.len(), 57);
    }

    #[test]
    fn octet_counting() {
        let mut fr = framing();
        fr.octet_counting = true;
        let mut f = Framer::new(&fr);
        f.set_time(0);
        let mut out = Vec::new();
        f.push(b"my.app.test.rust", b"hello world", &mut out);
        assert_eq!(
            out,
            b"57 <14>Jan  1 00:00:00 myhost my.app.test.rust: hello world\n"
        );
    }

    #[test]
    fn facility_severity() {
        let mut fr = framing();
        fr.facility = 16;
        fr.severity = 3;
        let mut f = Framer::new(&fr);
        f.set_time(0);
        let mut out = Vec::new();
        f.push(b"a.b", b"", &mut out);
        assert_eq!(out, b"<131>Jan  1 00:00:00 myhost a.b: \n");
    }

    #[test]
    fn batch_in_small_chunks() {
        let b = body(&[("my.app.a", "one"), ("my.app.b", ""), ("my.app.c", "three")]);
        let mut f = Framer::new(&framing());
        let out = all(&mut f, &b);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        for (l, want) in lines
            .iter()
            .zip(["my.app.a: one", "my.app.b: ", "my.app.c: three"])
        {
            assert!(l.starts_with("<14>") && l.ends_with(want), "{l}");
            assert_eq!(&l[19..27], " myhost ", "{l}");
        }
    }

    #[test]
    fn zip_mode_members() {
        let mut fr = framing();
        fr.zip_buffer = Some(100);
        let lines: Vec<(String, String)> = (0..50)
            .map(|i| ("my.app.z".to_string(), format!("event {i}")))
            .collect();
        let refs: Vec<(&str, &str)> = lines
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let b = body(&refs);
        let mut f = Framer::new(&fr);
        let mut frames = f.batch(&b);
        let mut out = Vec::new();
        let mut events = 0;
        while let Some(s) = frames.next_chunk(&mut out, 1 << 20).unwrap() {
            events += s.events;
        }
        assert_eq!(events, 50);
        // Several members, back to back, each starting with the gzip magic.
        assert_eq!(&out[..2], &[0x1f, 0x8b]);
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&out[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text.lines().count(), 50);
        assert!(text.lines().last().unwrap().ends_with("my.app.z: event 49"));
        let members = out.windows(3).filter(|w| w == &[0x1f, 0x8b, 8]).count();
        assert!(members > 5, "{members}");
    }
}
