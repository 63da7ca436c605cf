//! The caps the collector and its relay agree on, and the re-split of a refused batch.
//!
//! The relay announces its caps on the channel (`GET /v1/limits`, docs/channel.md). From them
//! [`Agreed`] derives what the collector may produce: the largest decompressed batch that stays
//! within the relay's decompressed cap and, compressed at any level, within its body cap; and
//! the largest event, lowered when one line of it would not fit such a batch. The configuration
//! is then clamped to them (`Settings::apply_limits`), so batches fit before they are sent.
//!
//! When a relay still refuses a batch (restarted with smaller caps, or one malformed line),
//! [`resplit`] re-reads the batch and cuts it again under fresh caps, truncating or dropping
//! over-long events by the input's `oversize` rule and dropping only the line the relay named.
//! It does no I/O; the forwarder fetches, sends and counts.

use sluice_channel::decode::{DecodeLimits, LineDecoder};
use sluice_channel::encode::{BatchEncoder, EncodedBatch};
use sluice_channel::limits::ChannelLimits;

use sluice_formats::processor::charset::floor_boundary;
use sluice_formats::processor::Oversize;

/// Bytes a line holds besides its tag and message: the SP and the LF.
const LINE_OVERHEAD: u64 = 2;

/// The most a gzip body of `raw` input bytes can weigh, whatever the level. Incompressible
/// data grows: level 1 (zlib-rs's "quick" deflate) writes literals with static Huffman codes,
/// up to 9 bits a byte (zlib-ng's `deflateBound` counts the same 1/8); stored blocks (level 0)
/// add 5 bytes per 64 KiB; plus block headers, the gzip header and trailer.
pub fn gzip_bound(raw: u64) -> u64 {
    raw.saturating_add(raw / 8)
        .saturating_add(raw / 16384)
        .saturating_add(128)
}

/// The largest input whose [`gzip_bound`] is at most `body` bytes.
pub fn raw_within(body: u64) -> u64 {
    if body <= 128 {
        return 0;
    }
    // Inverse of the bound, rounded, then nudged to the exact answer: a few steps at most.
    let mut raw = ((u128::from(body - 128) * 16384) / 18433) as u64;
    while raw > 0 && gzip_bound(raw) > body {
        raw -= 1;
    }
    while gzip_bound(raw + 1) <= body {
        raw += 1;
    }
    raw
}

/// A relay's caps and what they allow the collector to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// What the relay announced.
    pub relay: ChannelLimits,
    /// Largest decompressed batch: within `max_batch_bytes` and, gzip at any level, within
    /// `max_body_bytes`.
    pub batch_bytes: u64,
    /// Largest message: the relay's `max_event_bytes`, lowered when one line of that size
    /// (with the longest tag) would not fit a batch.
    pub event_bytes: u64,
}

/// Caps under which no batch can be sent at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the relay's limits.{key} ({value}) leaves no room for a batch of one event with a {tag}-byte tag; raise it on the relay")]
pub struct NoRoom {
    /// The relay key that is too small.
    pub key: &'static str,
    /// Its value.
    pub value: u64,
    /// The relay's tag cap.
    pub tag: u64,
}

impl Agreed {
    /// Derives what the collector may produce under `relay`'s caps.
    pub fn new(relay: ChannelLimits) -> Result<Agreed, NoRoom> {
        let by_body = raw_within(relay.max_body_bytes);
        let (batch_bytes, key, value) = if by_body < relay.max_batch_bytes {
            (by_body, "max_body_bytes", relay.max_body_bytes)
        } else {
            (
                relay.max_batch_bytes,
                "max_batch_bytes",
                relay.max_batch_bytes,
            )
        };
        let line_room = batch_bytes.saturating_sub(relay.max_tag_bytes + LINE_OVERHEAD);
        if line_room == 0 {
            return Err(NoRoom {
                key,
                value,
                tag: relay.max_tag_bytes,
            });
        }
        Ok(Agreed {
            relay,
            batch_bytes,
            event_bytes: relay.max_event_bytes.min(line_room),
        })
    }
}

/// What a re-split produced.
#[derive(Debug, Default)]
pub struct Resplit {
    /// The new batches, in the order of the lines.
    pub parts: Vec<EncodedBatch>,
    /// Events cut to the event cap.
    pub truncated: u64,
    /// Events dropped for their length (`oversize = "drop"`).
    pub dropped_oversize: u64,
    /// Lines dropped because the relay named them malformed.
    pub dropped_malformed: u64,
    /// Lines read from the refused batch.
    pub lines: u64,
}

/// Why a batch could not be re-split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResplitError {
    /// Our own batch did not decode: a bug, never a reason to guess.
    #[error("the refused batch does not decode: {0}")]
    Decode(String),
    /// The relay named a line the batch does not have.
    #[error("the relay named line {line} but the batch holds {lines} lines")]
    NoSuchLine { line: u64, lines: u64 },
}

/// Re-reads the gzip `body` of a refused batch and cuts it into batches within `agreed`:
/// each message over `agreed.event_bytes` is truncated (on a character boundary) or dropped,
/// per `oversize`; line `drop_line` (1-based), when given, is dropped; every part holds at
/// most `agreed.batch_bytes` decompressed bytes, so its body fits `max_body_bytes` too.
pub fn resplit(
    body: &[u8],
    agreed: &Agreed,
    oversize: Oversize,
    drop_line: Option<u64>,
    level: u32,
) -> Result<Resplit, ResplitError> {
    // Our own batch, already in memory: no caps while reading it back (half of u64::MAX, as
    // the decoder adds the tag cap to the event cap).
    let mut lines = LineDecoder::new(
        body,
        DecodeLimits {
            max_batch_bytes: u64::MAX / 2,
            max_event_bytes: u64::MAX / 2,
        },
    );
    let mut out = Resplit::default();
    let mut encoder: Option<BatchEncoder> = None;
    let cap = agreed.event_bytes as usize;
    while let Some(line) = lines
        .next_raw()
        .map_err(|e| ResplitError::Decode(e.to_string()))?
    {
        out.lines += 1;
        if drop_line == Some(out.lines) {
            out.dropped_malformed += 1;
            continue;
        }
        // Every line the encoder wrote has its SP; a line without one goes back as a tag
        // alone, for the relay to name.
        let (tag, message) = match memchr::memchr(b' ', line) {
            Some(sp) => (&line[..sp], &line[sp + 1..]),
            None => (line, &line[line.len()..]),
        };
        let message = if message.len() > cap {
            if oversize == Oversize::Drop {
                out.dropped_oversize += 1;
                continue;
            }
            out.truncated += 1;
            &message[..floor_boundary(message, cap)]
        } else {
            message
        };
        let size = (tag.len() + message.len()) as u64 + LINE_OVERHEAD;
        // Cut before the line that would take the part over the cap.
        if encoder
            .as_ref()
            .is_some_and(|e| !e.is_empty() && e.raw_bytes() + size > agreed.batch_bytes)
        {
            out.parts.extend(encoder.take().map(BatchEncoder::finish));
        }
        // Tags are ASCII (the relay checks them); a tag that is not goes back for the relay to
        // name, as its bytes.
        let tag = String::from_utf8_lossy(tag);
        encoder
            .get_or_insert_with(|| BatchEncoder::new(level))
            .push(&tag, message);
    }
    if let Some(e) = encoder.filter(|e| !e.is_empty()) {
        out.parts.push(e.finish());
    }
    if let Some(line) = drop_line.filter(|&l| l > out.lines) {
        return Err(ResplitError::NoSuchLine {
            line,
            lines: out.lines,
        });
    }
    Ok(out)
}

/// The line a 400 answer names: the relay starts the reason with `line N: ` when one line is
/// malformed (docs/channel.md).
pub fn named_line(reason: &str) -> Option<u64> {
    let rest = reason.strip_prefix("line ")?;
    let (n, _) = rest.split_once(':')?;
    n.parse().ok().filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn lines_of(batch: &EncodedBatch) -> Vec<String> {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&batch.body[..])
            .read_to_string(&mut text)
            .unwrap();
        text.lines().map(str::to_string).collect()
    }

    fn batch(lines: &[(&str, &str)]) -> EncodedBatch {
        let mut e = BatchEncoder::new(1);
        for (t, m) in lines {
            e.push(t, m.as_bytes());
        }
        e.finish()
    }

    fn relay(body: u64, batch: u64, event: u64) -> ChannelLimits {
        ChannelLimits {
            max_body_bytes: body,
            max_batch_bytes: batch,
            max_event_bytes: event,
            max_tag_bytes: 256,
        }
    }

    #[test]
    fn gzip_bound_holds_for_incompressible_data_at_every_level() {
        for size in [0usize, 1, 100, 1000, 70_000, 300_000] {
            let noise: Vec<u8> = (0..size).map(|_| fastrand::u8(..)).collect();
            for level in [0, 1, 6, 9] {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                std::io::Write::write_all(&mut e, &noise).unwrap();
                let out = e.finish().unwrap();
                let bound = gzip_bound(size as u64);
                assert!(
                    out.len() as u64 <= bound,
                    "level {level}, {size} bytes: {} > {bound}",
                    out.len()
                );
            }
        }
        // The channel's encoder (64 KiB chunks) on lines of hex noise.
        for level in [0, 1, 9] {
            let mut e = BatchEncoder::new(level);
            for _ in 0..3000 {
                let m: Vec<u8> = (0..100).map(|_| fastrand::u8(33..=126)).collect();
                e.push("my.app.noise", &m);
            }
            let b = e.finish();
            assert!(
                b.body.len() as u64 <= gzip_bound(b.raw_bytes),
                "level {level}"
            );
        }
        for body in [129, 200, 4096, 65_536, 16 << 20, u64::MAX / 4] {
            let raw = raw_within(body);
            assert!(gzip_bound(raw) <= body, "{body}");
            assert!(
                gzip_bound(raw + 1) > body || raw + 1 > body,
                "{body}: not the largest"
            );
        }
        assert_eq!(raw_within(64), 0);
    }

    #[test]
    fn agreed_caps_keep_a_line_within_both_body_caps() {
        let a = Agreed::new(ChannelLimits::V1_DEFAULTS).unwrap();
        assert_eq!(a.event_bytes, 1 << 20);
        assert!(a.batch_bytes < 16 << 20 && gzip_bound(a.batch_bytes) <= 16 << 20);
        // The decompressed cap binds.
        let a = Agreed::new(relay(16 << 20, 100_000, 1 << 20)).unwrap();
        assert_eq!(a.batch_bytes, 100_000);
        assert_eq!(
            a.event_bytes,
            100_000 - 258,
            "one line with the longest tag fits"
        );
        // The compressed cap binds.
        let a = Agreed::new(relay(10_000, 1 << 20, 65_536)).unwrap();
        assert!(gzip_bound(a.batch_bytes) <= 10_000);
        assert_eq!(a.event_bytes, a.batch_bytes - 258);
        // No room at all: the error names the relay key.
        let e = Agreed::new(relay(16 << 20, 200, 100)).unwrap_err();
        assert_eq!(e.key, "max_batch_bytes");
        assert!(
            e.to_string().contains("limits.max_batch_bytes (200)"),
            "{e}"
        );
        let e = Agreed::new(relay(400, 1 << 20, 100)).unwrap_err();
        assert_eq!(e.key, "max_body_bytes");
    }

    #[test]
    fn resplit_truncates_by_rule_and_cuts_under_the_cap() {
        let long = "é".repeat(100); // 200 bytes
        let original = batch(&[
            ("a.b", "one"),
            ("a.b", &long),
            ("a.b", "three"),
            ("a.b", "four"),
        ]);
        let mut agreed = Agreed::new(relay(1 << 20, 1 << 20, 51)).unwrap();
        agreed.batch_bytes = 80;
        let r = resplit(&original.body, &agreed, Oversize::Truncate, None, 1).unwrap();
        assert_eq!((r.lines, r.truncated, r.dropped_oversize), (4, 1, 0));
        let all: Vec<String> = r.parts.iter().flat_map(lines_of).collect();
        // Cut on a character boundary: 50 bytes, 25 characters.
        assert_eq!(
            all,
            vec![
                "a.b one".to_string(),
                format!("a.b {}", "é".repeat(25)),
                "a.b three".into(),
                "a.b four".into()
            ]
        );
        for p in &r.parts {
            assert!(p.raw_bytes <= 80, "{}", p.raw_bytes);
            assert_eq!(p.events as usize, lines_of(p).len());
        }
        assert!(r.parts.len() >= 2, "cut under the cap");

        let r = resplit(&original.body, &agreed, Oversize::Drop, None, 1).unwrap();
        assert_eq!((r.truncated, r.dropped_oversize), (0, 1));
        let all: Vec<String> = r.parts.iter().flat_map(lines_of).collect();
        assert_eq!(all, ["a.b one", "a.b three", "a.b four"]);
    }

    #[test]
    fn resplit_drops_only_the_named_line() {
        let original = batch(&[("a.b", "one"), ("a.b", "two"), ("a.b", "three")]);
        let agreed = Agreed::new(ChannelLimits::V1_DEFAULTS).unwrap();
        let r = resplit(&original.body, &agreed, Oversize::Truncate, Some(2), 1).unwrap();
        assert_eq!(r.dropped_malformed, 1);
        assert_eq!(r.parts.len(), 1);
        assert_eq!(lines_of(&r.parts[0]), ["a.b one", "a.b three"]);
        // Dropping the only line leaves nothing to send.
        let single = batch(&[("a.b", "x")]);
        let r = resplit(&single.body, &agreed, Oversize::Truncate, Some(1), 1).unwrap();
        assert!(r.parts.is_empty());
        // A line the batch does not have is an error, never a guess.
        assert_eq!(
            resplit(&single.body, &agreed, Oversize::Truncate, Some(5), 1).unwrap_err(),
            ResplitError::NoSuchLine { line: 5, lines: 1 }
        );
        assert!(resplit(b"not gzip", &agreed, Oversize::Truncate, None, 1).is_err());
    }

    #[test]
    fn named_lines() {
        assert_eq!(named_line("line 3: tag has 1 levels"), Some(3));
        assert_eq!(named_line("line 12: message holds a CR byte"), Some(12));
        assert_eq!(named_line("body is not valid gzip"), None);
        assert_eq!(named_line("line x: what"), None);
        assert_eq!(named_line("line 0: what"), None);
    }
}
