//! Streaming decoding of a batch body (gzip, one or more members) into its `TAG SP MESSAGE`
//! lines, with caps on the decompressed size and on one line, and the channel's line rules
//! (docs/channel.md).
//!
//! It inflates 64 KiB at a time and keeps at most one partial line besides, so a gzip bomb is
//! refused once it passes the cap, never inflated into memory. It does no I/O besides reading
//! the body it is given.

use std::io::Read;

use flate2::read::MultiGzDecoder;

use crate::wire::{validate_tag, MAX_TAG_BYTES};

const CHUNK: usize = 64 * 1024;

/// Why a batch body is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Malformed: answered 400.
    #[error("{0}")]
    Malformed(String),
    /// Over a cap: answered 413.
    #[error("{0}")]
    TooLarge(String),
}

impl BatchError {
    fn line(n: u64, what: impl std::fmt::Display) -> Self {
        BatchError::Malformed(format!("line {n}: {what}"))
    }
}

/// Caps applied while decoding.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest decompressed body.
    pub max_batch_bytes: u64,
    /// Largest message (the part after `TAG SP`).
    pub max_event_bytes: u64,
}

/// One event: its tag and its message.
pub type Event<'a> = (&'a [u8], &'a [u8]);

/// Reads lines out of a gzip body, one at a time.
pub struct LineDecoder<R: Read> {
    gz: MultiGzDecoder<R>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    carry: Vec<u8>,
    clear_carry: bool,
    limits: DecodeLimits,
    total: u64,
    lines: u64,
}

impl<R: Read> LineDecoder<R> {
    pub fn new(body: R, limits: DecodeLimits) -> Self {
        LineDecoder {
            gz: MultiGzDecoder::new(body),
            buf: vec![0; CHUNK],
            start: 0,
            end: 0,
            carry: Vec::new(),
            clear_carry: false,
            limits,
            total: 0,
            lines: 0,
        }
    }

    /// Lines returned so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Decompressed bytes read so far.
    pub fn decompressed_bytes(&self) -> u64 {
        self.total
    }

    fn max_line(&self) -> u64 {
        self.limits.max_event_bytes + MAX_TAG_BYTES as u64 + 1
    }

    /// The next line without its LF, or `None` at the end of the body.
    pub fn next_raw(&mut self) -> Result<Option<&[u8]>, BatchError> {
        if self.clear_carry {
            self.carry.clear();
            self.clear_carry = false;
        }
        // Where the line lies: (in carry?, start, end) in buf when not in carry.
        let found: Option<(bool, usize, usize)> = loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                let (s, e) = (self.start, self.start + i);
                self.start = e + 1;
                if self.carry.is_empty() {
                    break Some((false, s, e));
                }
                self.carry.extend_from_slice(&self.buf[s..e]);
                break Some((true, 0, 0));
            }
            self.carry
                .extend_from_slice(&self.buf[self.start..self.end]);
            self.start = 0;
            self.end = 0;
            if self.carry.len() as u64 > self.max_line() {
                return Err(BatchError::TooLarge(format!(
                    "line {}: event over limits.max_event_bytes ({})",
                    self.lines + 1,
                    self.limits.max_event_bytes
                )));
            }
            let n = loop {
                match self.gz.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(BatchError::Malformed(format!(
                            "body is not valid gzip: {e}"
                        )))
                    }
                }
            };
            if n == 0 {
                if !self.carry.is_empty() {
                    return Err(BatchError::line(self.lines + 1, "no LF at the end"));
                }
                break None;
            }
            self.total += n as u64;
            if self.total > self.limits.max_batch_bytes {
                return Err(BatchError::TooLarge(format!(
                    "decompressed body over limits.max_batch_bytes ({})",
                    self.limits.max_batch_bytes
                )));
            }
            self.end = n;
        };
        match found {
            None => Ok(None),
            Some((in_carry, s, e)) => {
                self.lines += 1;
                let line: &[u8] = if in_carry {
                    self.clear_carry = true;
                    &self.carry
                } else {
                    &self.buf[s..e]
                };
                Ok(Some(line))
            }
        }
    }

    /// The next line split into tag and message, checked against the channel's rules.
    pub fn next_event(&mut self) -> Result<Option<Event<'_>>, BatchError> {
        let max_event = self.limits.max_event_bytes;
        let n = self.lines + 1;
        let Some(line) = self.next_raw()? else {
            return Ok(None);
        };
        split_event(line, n, max_event).map(Some)
    }
}

/// Splits and checks one line (without LF): `TAG SP MESSAGE`.
pub fn split_event(line: &[u8], n: u64, max_event: u64) -> Result<(&[u8], &[u8]), BatchError> {
    let sp =
        memchr::memchr(b' ', line).ok_or_else(|| BatchError::line(n, "no space after the tag"))?;
    let (tag, message) = (&line[..sp], &line[sp + 1..]);
    validate_tag(tag).map_err(|e| BatchError::line(n, e))?;
    if message.len() as u64 > max_event {
        return Err(BatchError::TooLarge(format!(
            "line {n}: event of {} bytes over limits.max_event_bytes ({max_event})",
            message.len()
        )));
    }
    if let Some(i) = memchr::memchr2(b'\r', 0, message) {
        let what = if message[i] == b'\r' { "CR" } else { "NUL" };
        return Err(BatchError::line(
            n,
            format!("message holds a {what} byte at offset {i}; Devo forbids CR and NUL"),
        ));
    }
    Ok((tag, message))
}

/// What a valid batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub events: u64,
    pub decompressed_bytes: u64,
}

/// Checks a whole body against every rule of the channel.
pub fn check(body: &[u8], limits: DecodeLimits) -> Result<Checked, BatchError> {
    let mut dec = LineDecoder::new(body, limits);
    while dec.next_event()?.is_some() {}
    if dec.lines() == 0 {
        return Err(BatchError::Malformed("empty batch".into()));
    }
    Ok(Checked {
        events: dec.lines(),
        decompressed_bytes: dec.decompressed_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    const L: DecodeLimits = DecodeLimits {
        max_batch_bytes: 1 << 20,
        max_event_bytes: 100,
    };

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn good_batch_and_multi_member() {
        let mut body = gz(b"my.app.a hello\nmy.app.b \n");
        body.extend(gz(b"my.app.c world\n"));
        let c = check(&body, L).unwrap();
        assert_eq!(c.events, 3);
        let mut d = LineDecoder::new(&body[..], L);
        let mut got = Vec::new();
        while let Some((t, m)) = d.next_event().unwrap() {
            got.push(format!(
                "{}|{}",
                String::from_utf8_lossy(t),
                String::from_utf8_lossy(m)
            ));
        }
        assert_eq!(got, ["my.app.a|hello", "my.app.b|", "my.app.c|world"]);
    }

    #[test]
    fn lines_spanning_chunks() {
        let mut data = Vec::new();
        for i in 0..20_000 {
            data.extend_from_slice(format!("my.app.t message-{i:08}\n").as_bytes());
        }
        let body = gz(&data);
        let mut d = LineDecoder::new(&body[..], L);
        let mut n = 0;
        while let Some((_, m)) = d.next_event().unwrap() {
            assert_eq!(m, format!("message-{n:08}").as_bytes());
            n += 1;
        }
        assert_eq!(n, 20_000);
    }

    #[test]
    fn refusals() {
        let err = |data: &[u8]| check(&gz(data), L).unwrap_err();
        assert_eq!(err(b""), BatchError::Malformed("empty batch".into()));
        assert!(err(b"my.app.a x\nnospace\n")
            .to_string()
            .starts_with("line 2: no space"));
        assert!(err(b"bad x\n")
            .to_string()
            .starts_with("line 1: tag has 1 levels"));
        assert!(err(b"my.app.a x").to_string().contains("no LF"));
        assert!(err(b"my.app.a x\rz\n").to_string().contains("CR"));
        assert!(err(b"my.app.a x\0z\n").to_string().contains("NUL"));
        let long = format!("my.app.a {}\n", "x".repeat(101));
        assert!(matches!(err(long.as_bytes()), BatchError::TooLarge(_)));
        let very_long = format!("my.app.a {}\n", "x".repeat(200_000));
        assert!(matches!(err(very_long.as_bytes()), BatchError::TooLarge(_)));
        assert!(check(b"not gzip at all", L)
            .unwrap_err()
            .to_string()
            .contains("gzip"));
    }

    #[test]
    fn gzip_bomb_stops_at_cap() {
        // 64 MiB of zeros compresses to ~64 KiB; the cap is 1 MiB.
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        let chunk = "my.app.a aaaaaaaaaaaaaaaaaaaaaaa\n".repeat(32 * 1024);
        for _ in 0..64 {
            e.write_all(chunk.as_bytes()).unwrap();
        }
        let body = e.finish().unwrap();
        assert!(body.len() < 1 << 20);
        let err = check(&body, L).unwrap_err();
        assert!(err.to_string().contains("max_batch_bytes"), "{err}");
    }
}
