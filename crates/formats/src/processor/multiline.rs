//! Multiline events for the `lines` processor (and `elb`, which shares its splitter): joins
//! consecutive lines into one event by a regex, with Filebeat's `pattern` semantics (`pattern`,
//! `negate`, `match = "after" | "before"`, `max_lines`, `max_bytes`).
//!
//! Lines of one event are joined with LF, which the emitter then writes as `\n` (backslash, n:
//! the channel carries no raw LF), so a Java stack trace reaches Devo as one event. The group in
//! progress is emitted when the object ends: a whole object is read, so Filebeat's `timeout`
//! has no use here. Past `max_lines` or `max_bytes` the rest of the group is dropped, as Filebeat
//! does (counted `multiline_cut_lines`). It does not apply to the column or JSON processors.

use std::io::BufRead;

use serde::Deserialize;

use super::emit::Emitter;
use super::tag::NoFields;
use super::text::{skip_headers, LineReader};
use super::{ObjectStats, ProcessError, ProcessorSpec};

/// Filebeat's default `max_lines`.
pub const DEFAULT_MAX_LINES: usize = 500;

/// Which neighbour a line that matches (after `negate`) belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MultilineMatch {
    /// A matching line continues the event of the line before it (Java `\tat ...` lines).
    After,
    /// A matching line starts or continues an event that the next line ends (a line ending in
    /// `\`).
    Before,
}

/// The `multiline` table of an input or selector, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// Regex searched in each line (unanchored; `^` anchors it).
    pub pattern: String,
    /// Inverts the match: lines that do NOT match the pattern are the ones `match` places.
    #[serde(default)]
    pub negate: bool,
    /// `after` or `before`.
    #[serde(rename = "match")]
    pub match_: MultilineMatch,
    /// Most lines in one event (default 500); later lines of the group are dropped.
    pub max_lines: Option<usize>,
    /// Most bytes in one event (default: the input's `max_event_bytes`); the rest is dropped.
    pub max_bytes: Option<usize>,
}

/// A validated `multiline` table.
#[derive(Debug, Clone)]
pub struct Multiline {
    /// The compiled pattern (over bytes: lines are matched before any UTF-8 fix).
    pub pattern: regex::bytes::Regex,
    pub negate: bool,
    pub match_: MultilineMatch,
    pub max_lines: usize,
    /// `None`: the spec's `max_event_bytes`, read when the object is processed (so a cap lowered
    /// to the relay's after resolution applies too).
    pub max_bytes: Option<usize>,
}

impl MultilineConfig {
    /// Compiles and checks the table; the error is the reason (the caller names the key).
    pub fn resolve(&self, max_max_bytes: usize) -> Result<Multiline, String> {
        let pattern =
            regex::bytes::Regex::new(&self.pattern).map_err(|e| format!("invalid pattern: {e}"))?;
        let max_lines = self.max_lines.unwrap_or(DEFAULT_MAX_LINES);
        if max_lines == 0 {
            return Err("max_lines must be > 0".into());
        }
        if let Some(n) = self.max_bytes {
            if !(1..=max_max_bytes).contains(&n) {
                return Err(format!("max_bytes {n} is outside 1..={max_max_bytes}"));
            }
        }
        Ok(Multiline {
            pattern,
            negate: self.negate,
            match_: self.match_,
            max_lines,
            max_bytes: self.max_bytes,
        })
    }
}

/// The event being gathered.
struct Group {
    buf: Vec<u8>,
    lines: usize,
    max_lines: usize,
    max_bytes: usize,
    /// Bytes were left out (max_bytes, or a line cut by the reader): the event is "cut" for
    /// the emitter, so `oversize` applies to it.
    bytes_cut: bool,
}

impl Group {
    fn add(&mut self, line: &[u8], line_cut: bool, stats: &mut ObjectStats) {
        if self.lines >= self.max_lines || self.bytes_cut {
            stats.multiline_cut_lines += 1;
            return;
        }
        let sep = usize::from(self.lines > 0);
        let room = self.max_bytes.saturating_sub(self.buf.len());
        if sep + line.len() > room {
            if room > sep {
                self.buf.extend_from_slice(&b"\n"[..sep]);
                self.buf.extend_from_slice(&line[..room - sep]);
                self.lines += 1;
            }
            self.bytes_cut = true;
            stats.multiline_cut_lines += 1;
            return;
        }
        self.buf.extend_from_slice(&b"\n"[..sep]);
        self.buf.extend_from_slice(line);
        self.lines += 1;
        if line_cut {
            self.bytes_cut = true;
            stats.multiline_cut_lines += 1;
        }
    }

    fn flush(&mut self, out: &mut Emitter<'_>) -> Result<(), ProcessError> {
        if self.lines == 0 {
            return Ok(());
        }
        let r = out.text(&self.buf, self.bytes_cut, &NoFields);
        self.buf.clear();
        self.lines = 0;
        self.bytes_cut = false;
        r
    }
}

/// `lines` with `multiline`: one event per group of lines. Empty lines are skipped, as
/// everywhere (they neither match nor break a group).
pub(crate) fn lines(
    input: &mut dyn BufRead,
    spec: &ProcessorSpec,
    ml: &Multiline,
    out: &mut Emitter<'_>,
) -> Result<(), ProcessError> {
    let max_bytes = ml.max_bytes.unwrap_or(spec.max_event_bytes);
    let mut reader = LineReader::new(max_bytes);
    skip_headers(input, &mut reader, spec, out)?;
    let mut group = Group {
        buf: Vec::new(),
        lines: 0,
        max_lines: ml.max_lines,
        max_bytes,
        bytes_cut: false,
    };
    let mut prev_matched = false;
    while let Some(line) = reader.next(input)? {
        out.stats.bytes_in = line.end;
        if line.bytes.is_empty() {
            continue;
        }
        let matched = ml.pattern.is_match(line.bytes) != ml.negate;
        // Filebeat: `after` appends a matching line to the group before it; `before` keeps
        // a group open while its last line matched.
        let continues = group.lines > 0
            && match ml.match_ {
                MultilineMatch::After => matched,
                MultilineMatch::Before => prev_matched,
            };
        if !continues {
            group.flush(out)?;
        }
        group.add(line.bytes, line.cut, &mut out.stats);
        prev_matched = matched;
    }
    // The object's end closes the last group: nothing waits for lines that will not come.
    group.flush(out)?;
    out.stats.bytes_in = reader.offset;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Oversize, ProcessorKind, ProcessorSpec};
    use super::*;

    fn spec(pattern: &str, negate: bool, match_: MultilineMatch) -> ProcessorSpec {
        let mut spec = ProcessorSpec::new(ProcessorKind::Lines);
        spec.multiline = Some(
            MultilineConfig {
                pattern: pattern.into(),
                negate,
                match_,
                max_lines: None,
                max_bytes: None,
            }
            .resolve(usize::MAX)
            .unwrap(),
        );
        spec
    }

    fn java_fixture() -> Vec<u8> {
        let path = format!(
            "{}/fixtures/objects/java_stacktrace.log",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn negate_after_joins_everything_up_to_the_next_timestamp() {
        let (stats, msgs) = run(
            &java_fixture(),
            &spec(r"^\d{4}-\d{2}-\d{2} ", true, MultilineMatch::After),
        );
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert_eq!(
            msgs[1],
            "2024-05-01 10:00:01,456 ERROR [worker-1] com.example.Job - job failed\\n\
             java.lang.IllegalStateException: could not open /data/in.csv\\n\
             \tat com.example.Job.open(Job.java:42)\\n\
             \tat com.example.Job.run(Job.java:17)\\n\
             \tat java.base/java.lang.Thread.run(Thread.java:833)\\n\
             Caused by: java.io.FileNotFoundException: /data/in.csv (No such file or directory)\\n\
             \tat java.base/java.io.FileInputStream.open0(Native Method)\\n\
             \tat java.base/java.io.FileInputStream.open(FileInputStream.java:216)\\n\
             \t... 2 more"
        );
        assert_eq!(
            msgs[2],
            "2024-05-01 10:00:02,000 INFO  [main] com.example.App - done"
        );
        assert_eq!(
            (
                stats.events,
                stats.escaped_newlines,
                stats.multiline_cut_lines
            ),
            (3, 1, 0)
        );
    }

    #[test]
    fn filebeat_java_pattern_without_negate_joins_the_trace_to_the_exception_line() {
        // Filebeat's documented Java stack trace pattern: continuation lines match, `after`.
        let (_, msgs) = run(
            &java_fixture(),
            &spec(
                r"^[[:space:]]+(at|\.{3})[[:space:]]+\b|^Caused by:",
                false,
                MultilineMatch::After,
            ),
        );
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        assert!(msgs[1].ends_with("job failed"));
        assert!(msgs[2].starts_with("java.lang.IllegalStateException: could not open"));
        assert!(msgs[2].ends_with("\\n\t... 2 more"));
        assert_eq!(msgs[2].matches("\\n").count(), 7);
    }

    #[test]
    fn before_keeps_a_group_open_while_its_last_line_matches() {
        // Lines ending in a backslash continue on the next line.
        let s = spec(r"\\$", false, MultilineMatch::Before);
        let (_, msgs) = run(b"a \\\nb\nc \\\nd \\\ne\nf\n", &s);
        assert_eq!(msgs, vec!["a \\\\nb", "c \\\\nd \\\\ne", "f"]);
        // negate: lines NOT ending in `;` continue on the next one.
        let s = spec(r";$", true, MultilineMatch::Before);
        let (_, msgs) = run(b"select *\nfrom t;\nselect 1;\n", &s);
        assert_eq!(msgs, vec!["select *\\nfrom t;", "select 1;"]);
    }

    #[test]
    fn after_without_negate_and_leading_continuations() {
        // A continuation line first in the object has nothing to join: it starts the event.
        let s = spec(r"^\s", false, MultilineMatch::After);
        let (_, msgs) = run(b"  orphan\n  more\nrec1\n  c1\n\n  c2\nrec2", &s);
        assert_eq!(
            msgs,
            vec!["  orphan\\n  more", "rec1\\n  c1\\n  c2", "rec2"],
            "empty lines are skipped and do not break a group"
        );
    }

    #[test]
    fn the_last_group_is_flushed_at_the_end_of_the_object() {
        let s = spec(r"^\[", true, MultilineMatch::After);
        for data in [
            &b"[1] a\n x\n y"[..],
            b"[1] a\n x\n y\n",
            b"[1] a\n x\n y\n\n",
        ] {
            let (stats, msgs) = run(data, &s);
            assert_eq!(msgs, vec!["[1] a\\n x\\n y"]);
            assert_eq!(stats.bytes_in, data.len() as u64);
        }
        let (stats, msgs) = run(b"", &s);
        assert!(msgs.is_empty());
        assert_eq!(stats.events, 0);
    }

    #[test]
    fn max_lines_keeps_the_first_lines_and_drops_the_rest_of_the_group() {
        let mut s = spec(r"^\[", true, MultilineMatch::After);
        s.multiline.as_mut().unwrap().max_lines = 3;
        let (stats, msgs) = run(b"[1] a\n1\n2\n3\n4\n[2] b\n1\n", &s);
        assert_eq!(msgs, vec!["[1] a\\n1\\n2", "[2] b\\n1"]);
        assert_eq!(stats.multiline_cut_lines, 2);
        assert_eq!(stats.truncated, 0, "a line cut is not a byte cut");
    }

    #[test]
    fn max_bytes_cuts_the_event_and_drops_the_rest_of_the_group() {
        let mut s = spec(r"^\[", true, MultilineMatch::After);
        s.multiline.as_mut().unwrap().max_bytes = Some(12);
        // "[1] abc\n12345" is 13 bytes: the second line is cut after "1234", the third dropped.
        let (stats, msgs) = run(b"[1] abc\n12345\nzz\n[2] b\nshort\n", &s);
        assert_eq!(msgs, vec!["[1] abc\\n1234", "[2] b\\nshort"]);
        assert_eq!((stats.multiline_cut_lines, stats.truncated), (2, 1));
        // A first line longer than max_bytes is cut while read; its group keeps nothing more.
        let (stats, msgs) = run(b"[1] 0123456789abcdef\nmore\n[2] x\n", &s);
        assert_eq!(msgs, vec!["[1] 01234567", "[2] x"]);
        assert_eq!((stats.multiline_cut_lines, stats.truncated), (2, 1));
        // `oversize = "drop"` drops an event cut by bytes, as any over-long event.
        s.oversize = Oversize::Drop;
        let (stats, msgs) = run(b"[1] abc\n12345\n[2] b\n", &s);
        assert_eq!(msgs, vec!["[2] b"]);
        assert_eq!(stats.dropped, 1);
    }

    #[test]
    fn max_bytes_defaults_to_max_event_bytes() {
        let mut s = spec(r"^\[", true, MultilineMatch::After);
        s.max_event_bytes = 10;
        let (stats, msgs) = run(b"[1] a\nbcdefgh\n", &s);
        // The group is cut at 10 raw bytes; escaping the LF then makes it 11, cut to 10 again.
        assert_eq!(msgs, vec!["[1] a\\nbcd"]);
        assert_eq!((stats.multiline_cut_lines, stats.truncated), (1, 1));
    }

    #[test]
    fn skip_header_lines_come_first() {
        let mut s = spec(r"^\[", true, MultilineMatch::After);
        s.skip_header_lines = 1;
        let (stats, msgs) = run(b"header\n[1] a\n b\n", &s);
        assert_eq!(msgs, vec!["[1] a\\n b"]);
        assert_eq!(stats.skipped_lines, 1);
    }

    #[test]
    fn config_is_checked() {
        let cfg = |toml_text: &str| toml::from_str::<MultilineConfig>(toml_text);
        let ok = cfg("pattern = '^\\['\nmatch = 'after'").unwrap();
        let ml = ok.resolve(100).unwrap();
        assert_eq!((ml.negate, ml.max_lines, ml.max_bytes), (false, 500, None));
        assert!(cfg("pattern = 'x'").is_err(), "match is required");
        assert!(cfg("match = 'after'").is_err(), "pattern is required");
        assert!(cfg("pattern = 'x'\nmatch = 'around'").is_err());
        assert!(cfg("pattern = 'x'\nmatch = 'after'\ntimeout = '5s'").is_err());
        let bad = |t: &str| cfg(t).unwrap().resolve(100).unwrap_err();
        assert!(bad("pattern = '('\nmatch = 'after'").contains("pattern"));
        assert!(bad("pattern = 'x'\nmatch = 'after'\nmax_lines = 0").contains("max_lines"));
        assert!(bad("pattern = 'x'\nmatch = 'after'\nmax_bytes = 101").contains("max_bytes"));
    }
}
