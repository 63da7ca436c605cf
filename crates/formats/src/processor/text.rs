//! Line-oriented processors: `lines`, `elb` (one event per line), `vpc_flow` (header line,
//! optional JSON keyed by the header) and `w3c` (`#` comments dropped, optional JSON keyed by
//! `#Fields`). Also the capped line reader the JSON-lines processors use.
//!
//! Lines are handed out as slices of the reader's buffer when they fit in it (no copy); a line
//! longer than the cap is cut while reading, so one huge line never grows memory. Empty lines
//! are skipped everywhere. Joining lines into one event (`multiline`) is `super::multiline`.

use std::borrow::Cow;
use std::io::BufRead;
use std::ops::Range;

use super::emit::Emitter;
use super::json::write_json_string;
use super::tag::{FieldSource, NoFields};
use super::{ProcessError, ProcessorSpec};

/// The VPC flow log v2 default format, used to key JSON records of headerless objects.
const VPC_V2_FIELDS: &[&str] = &[
    "version",
    "account-id",
    "interface-id",
    "srcaddr",
    "dstaddr",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "start",
    "end",
    "action",
    "log-status",
];

/// One line: its bytes (no LF, no trailing CR) and whether the cap cut it.
pub(crate) struct Line<'b> {
    pub bytes: &'b [u8],
    pub cut: bool,
    /// Input bytes consumed up to the end of this line.
    pub end: u64,
}

/// Reads capped lines out of a `BufRead`.
pub(crate) struct LineReader {
    cap: usize,
    carry: Vec<u8>,
    /// Bytes of the input buffer handed out by the last line, consumed on the next call.
    pending: usize,
    /// Bytes consumed (or handed out) so far.
    pub offset: u64,
}

impl LineReader {
    pub fn new(cap: usize) -> Self {
        LineReader {
            cap,
            carry: Vec::new(),
            pending: 0,
            offset: 0,
        }
    }

    /// The next line, or `None` at the end of the input.
    pub fn next<'b>(
        &'b mut self,
        input: &'b mut dyn BufRead,
    ) -> Result<Option<Line<'b>>, ProcessError> {
        input.consume(self.pending);
        self.pending = 0;
        self.carry.clear();
        let mut cut = false;
        let mut partial = false;
        let found = loop {
            let buf = match input.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ProcessError::Read {
                        offset: self.offset,
                        source,
                    })
                }
            };
            if buf.is_empty() {
                if !partial {
                    return Ok(None);
                }
                return Ok(Some(finish(&self.carry, cut, self.offset)));
            }
            match memchr::memchr(b'\n', buf) {
                Some(i) if !partial => break i,
                Some(i) => {
                    cut |= append_capped(&mut self.carry, &buf[..i], self.cap);
                    input.consume(i + 1);
                    self.offset += i as u64 + 1;
                    return Ok(Some(finish(&self.carry, cut, self.offset)));
                }
                None => {
                    cut |= append_capped(&mut self.carry, buf, self.cap);
                    let n = buf.len();
                    input.consume(n);
                    self.offset += n as u64;
                    partial = true;
                }
            }
        };
        // The whole line is in the input's buffer: hand out a slice of it (fill_buf returns
        // the same buffered bytes again without reading).
        let buf = input.fill_buf().map_err(|source| ProcessError::Read {
            offset: self.offset,
            source,
        })?;
        self.offset += found as u64 + 1;
        self.pending = found + 1;
        let mut line = &buf[..found];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if line.len() > self.cap {
            line = &line[..self.cap];
            cut = true;
        }
        Ok(Some(finish(line, cut, self.offset)))
    }
}

/// Appends what fits under `cap`; true when something was left out.
fn append_capped(out: &mut Vec<u8>, add: &[u8], cap: usize) -> bool {
    let room = cap.saturating_sub(out.len());
    let n = room.min(add.len());
    out.extend_from_slice(&add[..n]);
    n < add.len()
}

fn finish(line: &[u8], cut: bool, end: u64) -> Line<'_> {
    let bytes = match line.last() {
        Some(b'\r') if !cut => &line[..line.len() - 1],
        _ => line,
    };
    Line { bytes, cut, end }
}

/// Skips `spec.skip_header_lines` lines, counted.
pub(crate) fn skip_headers(
    input: &mut dyn BufRead,
    reader: &mut LineReader,
    spec: &ProcessorSpec,
    out: &mut Emitter<'_>,
) -> Result<(), ProcessError> {
    for _ in 0..spec.skip_header_lines {
        if reader.next(input)?.is_none() {
            break;
        }
        out.stats.skipped_lines += 1;
    }
    Ok(())
}

/// `lines` and `elb`: one event per non-empty line, or per group of lines with `multiline`.
pub(crate) fn lines(
    input: &mut dyn BufRead,
    spec: &ProcessorSpec,
    out: &mut Emitter<'_>,
) -> Result<(), ProcessError> {
    if let Some(ml) = &spec.multiline {
        return super::multiline::lines(input, spec, ml, out);
    }
    let mut reader = LineReader::new(spec.max_event_bytes);
    skip_headers(input, &mut reader, spec, out)?;
    while let Some(line) = reader.next(input)? {
        out.stats.bytes_in = line.end;
        if line.bytes.is_empty() {
            continue;
        }
        out.text(line.bytes, line.cut, &NoFields)?;
    }
    out.stats.bytes_in = reader.offset;
    Ok(())
}

/// True when `line` looks like a header: space-separated lower-case names (`account-id`).
fn is_vpc_header(line: &[u8]) -> bool {
    let mut any = false;
    for tok in line.split(|&b| b == b' ').filter(|t| !t.is_empty()) {
        if !tok[0].is_ascii_lowercase()
            || !tok
                .iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return false;
        }
        any = true;
    }
    any
}

/// Column names and the values of one record (as spans of its line), for tags.
struct Columns<'a> {
    names: &'a [String],
    line: &'a [u8],
    spans: &'a [Range<usize>],
}

impl FieldSource for Columns<'_> {
    fn field(&self, path: &str) -> Option<Cow<'_, str>> {
        let i = self.names.iter().position(|n| n == path)?;
        let v = &self.line[self.spans.get(i)?.clone()];
        // `-` is these formats' "no value": let the template's fallback apply.
        (v != b"-").then(|| String::from_utf8_lossy(v))
    }
}

/// Fills `spans` with the fields of `line` split on `sep` (runs of spaces count as one).
fn split_spans(line: &[u8], sep: u8, spans: &mut Vec<Range<usize>>) {
    spans.clear();
    let mut start = 0;
    for i in memchr::memchr_iter(sep, line) {
        if sep != b' ' || i > start {
            spans.push(start..i);
        }
        start = i + 1;
    }
    if sep != b' ' || line.len() > start {
        spans.push(start..line.len());
    }
}

/// `"name":` for each column name, encoded once per header.
fn json_keys(names: &[String]) -> Vec<Vec<u8>> {
    names
        .iter()
        .map(|n| {
            let mut k = Vec::with_capacity(n.len() + 3);
            write_json_string(n.as_bytes(), &mut k);
            k.push(b':');
            k
        })
        .collect()
}

/// Writes `{"name":"value",...}`; values past the names get `field_<n>` (1-based) keys.
fn columns_json(cols: &Columns<'_>, keys: &[Vec<u8>], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(cols.line.len() * 2 + keys.iter().map(Vec::len).sum::<usize>());
    out.push(b'{');
    for (i, span) in cols.spans.iter().enumerate() {
        let v = &cols.line[span.clone()];
        if i > 0 {
            out.push(b',');
        }
        match keys.get(i) {
            Some(k) => out.extend_from_slice(k),
            None => {
                write_json_string(format!("field_{}", i + 1).as_bytes(), out);
                out.push(b':');
            }
        }
        write_json_string(v, out);
    }
    out.push(b'}');
}

/// `vpc_flow`: the first non-empty line is the header when it looks like one (any version,
/// custom formats included); every other non-empty line is a record.
pub(crate) fn vpc_flow(
    input: &mut dyn BufRead,
    spec: &ProcessorSpec,
    out: &mut Emitter<'_>,
) -> Result<(), ProcessError> {
    let mut reader = LineReader::new(spec.max_event_bytes);
    skip_headers(input, &mut reader, spec, out)?;
    let mut names: Option<Vec<String>> = None;
    let default_names: Vec<String> = VPC_V2_FIELDS.iter().map(|s| s.to_string()).collect();
    let mut keys = json_keys(&default_names);
    let mut spans = Vec::new();
    let mut json = Vec::new();
    let need_columns = spec.vpc_flow_json || out.wants_fields();
    let mut first = true;
    while let Some(line) = reader.next(input)? {
        out.stats.bytes_in = line.end;
        if line.bytes.is_empty() {
            continue;
        }
        if first {
            first = false;
            if is_vpc_header(line.bytes) {
                names = Some(
                    line.bytes
                        .split(|&b| b == b' ')
                        .filter(|t| !t.is_empty())
                        .map(|t| String::from_utf8_lossy(t).into_owned())
                        .collect(),
                );
                keys = json_keys(names.as_deref().unwrap_or_default());
                out.stats.skipped_lines += 1;
                continue;
            }
        }
        if !need_columns {
            out.text(line.bytes, line.cut, &NoFields)?;
            continue;
        }
        let names = names.as_deref().unwrap_or(&default_names);
        split_spans(line.bytes, b' ', &mut spans);
        let cols = Columns {
            names,
            line: line.bytes,
            spans: &spans,
        };
        if spec.vpc_flow_json && !line.cut {
            columns_json(&cols, &keys, &mut json);
            out.json(&json, false, &cols)?;
        } else {
            out.text(line.bytes, line.cut, &cols)?;
        }
    }
    out.stats.bytes_in = reader.offset;
    Ok(())
}

/// `w3c`: `#` lines are dropped (counted); `#Fields:` names the columns for `w3c_json` and tag
/// fields. Values are tab-separated when the line holds a tab (CloudFront), else
/// space-separated.
pub(crate) fn w3c(
    input: &mut dyn BufRead,
    spec: &ProcessorSpec,
    out: &mut Emitter<'_>,
) -> Result<(), ProcessError> {
    let mut reader = LineReader::new(spec.max_event_bytes);
    skip_headers(input, &mut reader, spec, out)?;
    let mut names: Vec<String> = Vec::new();
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut spans = Vec::new();
    let mut json = Vec::new();
    let need_columns = spec.w3c_json || out.wants_fields();
    while let Some(line) = reader.next(input)? {
        out.stats.bytes_in = line.end;
        let bytes = line.bytes;
        if bytes.is_empty() {
            continue;
        }
        if bytes[0] == b'#' {
            if let Some(rest) = bytes.strip_prefix(b"#Fields:") {
                names = rest
                    .split(|&b| b == b' ' || b == b'\t')
                    .filter(|t| !t.is_empty())
                    .map(|t| String::from_utf8_lossy(t).into_owned())
                    .collect();
                keys = json_keys(&names);
            }
            out.stats.skipped_lines += 1;
            continue;
        }
        if !need_columns {
            out.text(bytes, line.cut, &NoFields)?;
            continue;
        }
        let sep = if memchr::memchr(b'\t', bytes).is_some() {
            b'\t'
        } else {
            b' '
        };
        split_spans(bytes, sep, &mut spans);
        let cols = Columns {
            names: &names,
            line: bytes,
            spans: &spans,
        };
        if spec.w3c_json && !line.cut {
            columns_json(&cols, &keys, &mut json);
            out.json(&json, false, &cols)?;
        } else {
            out.text(bytes, line.cut, &cols)?;
        }
    }
    out.stats.bytes_in = reader.offset;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Oversize, ProcessorKind, ProcessorSpec};

    #[test]
    fn lines_split_and_skip_empty() {
        let (stats, msgs) = run(b"a\r\n\nb\nc", &ProcessorSpec::new(ProcessorKind::Lines));
        assert_eq!(msgs, vec!["a", "b", "c"]);
        assert_eq!((stats.events, stats.bytes_in), (3, 7));
    }

    #[test]
    fn crlf_line_at_the_cap_is_not_truncated() {
        let mut spec = ProcessorSpec::new(ProcessorKind::Lines);
        spec.max_event_bytes = 3;
        let (stats, msgs) = run(b"abc\r\nde\r\n", &spec);
        assert_eq!(msgs, vec!["abc", "de"]);
        assert_eq!(stats.truncated, 0);
    }

    #[test]
    fn lines_skip_headers() {
        let mut spec = ProcessorSpec::new(ProcessorKind::Lines);
        spec.skip_header_lines = 2;
        let (stats, msgs) = run(b"h1\nh2\nx\n", &spec);
        assert_eq!(msgs, vec!["x"]);
        assert_eq!(stats.skipped_lines, 2);
    }

    #[test]
    fn long_lines_are_truncated_or_dropped() {
        let mut spec = ProcessorSpec::new(ProcessorKind::Lines);
        spec.max_event_bytes = 3;
        let (stats, msgs) = run(b"abcdef\nxy\nlonger", &spec);
        assert_eq!(msgs, vec!["abc", "xy", "lon"]);
        assert_eq!(stats.truncated, 2);
        spec.oversize = Oversize::Drop;
        let (stats, msgs) = run(b"abcdef\nxy\nlonger", &spec);
        assert_eq!(msgs, vec!["xy"]);
        assert_eq!(stats.dropped, 2);
    }

    #[test]
    fn a_5_mib_line_is_capped_and_counted() {
        let mut data = vec![b'x'; 5 * 1024 * 1024];
        data.extend_from_slice(b"\nnext\n");
        let spec = ProcessorSpec::new(ProcessorKind::Lines);
        let mut sink = Collect::default();
        let mut input = std::io::BufReader::with_capacity(64 * 1024, &data[..]);
        let stats = super::super::process(
            &mut input,
            &spec,
            &super::super::ObjectContext::new("b", "k"),
            &mut sink,
        )
        .unwrap();
        assert_eq!(sink.0.len(), 2);
        assert_eq!(sink.0[0].1.len(), 1024 * 1024);
        assert_eq!(sink.0[1].1, b"next");
        assert_eq!((stats.truncated, stats.bytes_in), (1, data.len() as u64));
        let mut spec = spec;
        spec.oversize = Oversize::Drop;
        let mut sink = Collect::default();
        let mut input = std::io::BufReader::with_capacity(64 * 1024, &data[..]);
        let stats = super::super::process(
            &mut input,
            &spec,
            &super::super::ObjectContext::new("b", "k"),
            &mut sink,
        )
        .unwrap();
        assert_eq!(sink.0.len(), 1);
        assert_eq!(stats.dropped, 1);
    }

    const VPC: &[u8] = b"version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status\n\n2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK\n2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA\n";

    #[test]
    fn vpc_flow_drops_the_header() {
        let (stats, msgs) = run(VPC, &ProcessorSpec::new(ProcessorKind::VpcFlow));
        assert_eq!(msgs.len(), 2);
        assert!(msgs[0].starts_with("2 123456789010 eni-"));
        assert_eq!(stats.skipped_lines, 1);
    }

    #[test]
    fn vpc_flow_json_keys_by_header_and_tags_by_column() {
        let mut spec = ProcessorSpec::new(ProcessorKind::VpcFlow)
            .with_tag("cloud.aws.vpc.flow.{account-id}.{action|none}");
        spec.vpc_flow_json = true;
        let (r, sink) = run_key(VPC, &spec, "k");
        r.unwrap();
        let msgs = sink.messages();
        assert_eq!(
            msgs[0],
            r#"{"version":"2","account-id":"123456789010","interface-id":"eni-1235b8ca123456789","srcaddr":"172.31.16.139","dstaddr":"172.31.16.21","srcport":"20641","dstport":"22","protocol":"6","packets":"20","bytes":"4249","start":"1418530010","end":"1418530070","action":"ACCEPT","log-status":"OK"}"#
        );
        assert_eq!(
            sink.tags(),
            vec![
                "cloud.aws.vpc.flow.123456789010.ACCEPT",
                "cloud.aws.vpc.flow.123456789010.none"
            ]
        );
    }

    #[test]
    fn vpc_flow_custom_header_and_headerless() {
        let mut spec = ProcessorSpec::new(ProcessorKind::VpcFlow);
        spec.vpc_flow_json = true;
        let (_, msgs) = run(
            b"srcaddr dstaddr reject-reason\n1.1.1.1 2.2.2.2 BPA extra\n",
            &spec,
        );
        assert_eq!(
            msgs,
            vec![
                r#"{"srcaddr":"1.1.1.1","dstaddr":"2.2.2.2","reject-reason":"BPA","field_4":"extra"}"#
            ]
        );
        let (stats, msgs) = run(b"2 1 eni-1 - - - - - - - 1 2 - NODATA", &spec);
        assert!(
            msgs[0].starts_with(r#"{"version":"2","account-id":"1","#),
            "{msgs:?}"
        );
        assert_eq!(stats.skipped_lines, 0);
    }

    const CLOUDFRONT: &[u8] = b"#Version: 1.0\n#Fields: date time x-edge-location sc-bytes cs-uri-stem\n2019-12-04\t21:02:31\tLAX1\t392\t/index.html\n2019-12-04\t21:02:31\tLAX1\t392\t/a%20b\n";

    #[test]
    fn w3c_drops_comments() {
        let (stats, msgs) = run(CLOUDFRONT, &ProcessorSpec::new(ProcessorKind::W3c));
        assert_eq!(msgs.len(), 2);
        assert!(msgs[0].starts_with("2019-12-04\t21:02:31"));
        assert_eq!(stats.skipped_lines, 2);
    }

    #[test]
    fn w3c_json_keys_by_fields() {
        let mut spec = ProcessorSpec::new(ProcessorKind::W3c);
        spec.w3c_json = true;
        let (_, msgs) = run(CLOUDFRONT, &spec);
        assert_eq!(
            msgs[1],
            r#"{"date":"2019-12-04","time":"21:02:31","x-edge-location":"LAX1","sc-bytes":"392","cs-uri-stem":"/a%20b"}"#
        );
    }

    #[test]
    fn elb_lines_pass_through_with_key_tag() {
        let alb = b"https 2018-07-02T22:23:00.186641Z app/my-loadbalancer/50dc6c495c0c9188 192.168.131.39:2817 10.0.0.1:80 0.086 0.048 0.037 200 200 0 57 \"GET https://www.example.com:443/ HTTP/1.1\" \"curl/7.46.0\" ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 \"Root=1-58337281-1d84f3d73c47ec4e58577259\" \"www.example.com\" \"arn:aws:acm:us-east-2:123456789012:certificate/12345678-1234-1234-1234-123456789012\" 1 2018-07-02T22:22:48.364000Z \"authenticate,forward\" \"-\" \"-\" \"10.0.0.1:80\" \"200\" \"-\" \"-\"\n";
        let key = "AWSLogs/123456789012/elasticloadbalancing/us-east-2/2018/07/02/123456789012_elasticloadbalancing_us-east-2_app.my-loadbalancer.50dc6c495c0c9188_20180702T2225Z_192.168.131.39_2lnk0gt0.log.gz";
        let (r, sink) = run_key(alb, &ProcessorSpec::new(ProcessorKind::Elb), key);
        assert_eq!(r.unwrap().events, 1);
        assert_eq!(sink.tags(), vec!["web.aws.alb.access"]);
        assert_eq!(sink.0[0].1, &alb[..alb.len() - 1]);
    }
}
