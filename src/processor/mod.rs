//! Processor stage: splits a decompressed object into events and tags them.
//!
//! Plain code over a blocking `BufRead`: no AWS, no async, so tests feed it bytes. It hands
//! each event to an [`EventSink`] (the batch stage) and never holds more than one event, so
//! memory is bounded by the line cap whatever the object size.

use std::io::BufRead;

/// Where events go. The batch stage implements it.
pub trait EventSink {
    /// Takes one event. `message` holds no LF. An error stops the object.
    fn emit(&mut self, tag: &str, message: &[u8]) -> Result<(), SinkError>;
}

/// The sink refused more events (the relay refused a batch, or shutdown).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// How an object is split into events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessorKind {
    /// One event per line.
    Lines,
}

impl ProcessorKind {
    /// Parses a config name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "lines" => Some(ProcessorKind::Lines),
            _ => None,
        }
    }
}

/// What to do with an event over the length cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// Keep the first `max_event_bytes` bytes.
    Truncate,
    /// Drop the event (counted).
    Drop,
}

/// A resolved processing configuration for one object.
#[derive(Debug, Clone)]
pub struct ProcessorSpec {
    /// The splitter.
    pub kind: ProcessorKind,
    /// The Devo tag of the events.
    pub tag: String,
    /// Longest event, in bytes.
    pub max_event_bytes: usize,
    /// What happens to longer events.
    pub oversize: Oversize,
}

/// Facts about the object being processed, for tags and errors.
#[derive(Debug, Clone, Copy)]
pub struct ObjectContext<'a> {
    /// Bucket name.
    pub bucket: &'a str,
    /// Object key.
    pub key: &'a str,
}

/// What processing one object produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectStats {
    /// Events emitted.
    pub events: u64,
    /// Decompressed bytes read.
    pub bytes_in: u64,
    /// Events cut to the length cap.
    pub truncated: u64,
    /// Events dropped for their length.
    pub dropped: u64,
}

/// Why an object could not be processed to its end.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("reading at byte {offset} of the decompressed object: {source}")]
    Read {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("stopped at byte {offset}: {source}")]
    Sink {
        offset: u64,
        #[source]
        source: SinkError,
    },
}

/// Splits `input` into events for `sink` as `spec` says.
pub fn process(
    input: &mut dyn BufRead,
    spec: &ProcessorSpec,
    _ctx: &ObjectContext<'_>,
    sink: &mut dyn EventSink,
) -> Result<ObjectStats, ProcessError> {
    match spec.kind {
        ProcessorKind::Lines => lines(input, spec, sink),
    }
}

fn lines(
    input: &mut dyn BufRead,
    spec: &ProcessorSpec,
    sink: &mut dyn EventSink,
) -> Result<ObjectStats, ProcessError> {
    let mut stats = ObjectStats::default();
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        let n = read_line_capped(input, &mut line, spec.max_event_bytes).map_err(|source| {
            ProcessError::Read {
                offset: stats.bytes_in,
                source,
            }
        })?;
        if n.read == 0 {
            break;
        }
        stats.bytes_in += n.read as u64;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() && !n.over {
            continue;
        }
        if n.over {
            match spec.oversize {
                Oversize::Truncate => stats.truncated += 1,
                Oversize::Drop => {
                    stats.dropped += 1;
                    continue;
                }
            }
        }
        sink.emit(&spec.tag, &line)
            .map_err(|source| ProcessError::Sink {
                offset: stats.bytes_in,
                source,
            })?;
        stats.events += 1;
    }
    Ok(stats)
}

/// How one capped line read went.
struct LineRead {
    /// Bytes consumed from the input, LF included.
    read: usize,
    /// True when the line was longer than the cap (the rest was skipped).
    over: bool,
}

/// Reads one line without its LF into `out`, keeping at most `cap` bytes and skipping the
/// rest, so one huge line cannot grow memory.
fn read_line_capped(
    input: &mut dyn BufRead,
    out: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<LineRead> {
    let mut read = 0;
    let mut over = false;
    loop {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(LineRead { read, over });
        }
        let (chunk, done) = match memchr(b'\n', buf) {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        let room = cap.saturating_sub(out.len());
        if chunk.len() > room {
            over = true;
        }
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = done.unwrap_or(buf.len());
        input.consume(used);
        read += used;
        if done.is_some() {
            return Ok(LineRead { read, over });
        }
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Vec<(String, Vec<u8>)>);

    impl EventSink for Collect {
        fn emit(&mut self, tag: &str, message: &[u8]) -> Result<(), SinkError> {
            self.0.push((tag.to_string(), message.to_vec()));
            Ok(())
        }
    }

    fn spec(cap: usize, oversize: Oversize) -> ProcessorSpec {
        ProcessorSpec {
            kind: ProcessorKind::Lines,
            tag: "my.app.test".into(),
            max_event_bytes: cap,
            oversize,
        }
    }

    const CTX: ObjectContext<'static> = ObjectContext {
        bucket: "b",
        key: "k",
    };

    #[test]
    fn splits_lines() {
        let mut sink = Collect::default();
        let mut input = &b"a\r\n\nb\nc"[..];
        let stats = process(&mut input, &spec(100, Oversize::Truncate), &CTX, &mut sink).unwrap();
        let msgs: Vec<_> = sink.0.iter().map(|(_, m)| m.as_slice()).collect();
        assert_eq!(msgs, vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(stats.events, 3);
        assert_eq!(stats.bytes_in, 7);
    }

    #[test]
    fn caps_lines() {
        let mut sink = Collect::default();
        let mut input = &b"abcdef\nxy\n"[..];
        let stats = process(&mut input, &spec(3, Oversize::Truncate), &CTX, &mut sink).unwrap();
        assert_eq!(sink.0[0].1, b"abc");
        assert_eq!(sink.0[1].1, b"xy");
        assert_eq!(stats.truncated, 1);
        let mut sink = Collect::default();
        let mut input = &b"abcdef\nxy\n"[..];
        let stats = process(&mut input, &spec(3, Oversize::Drop), &CTX, &mut sink).unwrap();
        assert_eq!(sink.0.len(), 1);
        assert_eq!(stats.dropped, 1);
    }
}
