//! A byte-level JSON scanner: finds where a value ends and copies it compact (whitespace outside
//! strings removed), without parsing it into a tree. Strings are skipped with `memchr`, so the
//! bytes of a record are looked at about once.
//!
//! [`Scan`] is the state machine; it is fed chunks, so [`JsonReader`] can stream a
//! `{"Records":[...]}` document of any size out of a `BufRead` holding one record at a time,
//! and [`compact`] can work on a slice. The rest are slice helpers for records already cut out:
//! field lookup ([`JsonFields`], [`find_member`]), string unescaping and escaping.
//!
//! It checks structure (brackets match, strings end, nesting ≤ 128) but not the grammar of
//! numbers and literals: records are passed through byte-faithful, not validated.

use std::borrow::Cow;
use std::io::BufRead;

use super::tag::{FieldSource, MAX_TAG_FIELDS};
use super::ProcessError;

/// Deepest nesting accepted (serde_json's default too).
const MAX_DEPTH: u32 = 128;

/// The scanner's error for a value nested deeper than [`MAX_DEPTH`]: the only structural
/// error after which the framing is still known (brackets can be counted without limit), so
/// [`JsonReader::record`] can skip the value instead of failing.
pub(crate) const TOO_DEEP: &str = "nested deeper than 128";

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

/// Outcome of feeding a chunk.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The chunk was used up; the value goes on.
    More,
    /// The value ended after this many bytes of the chunk.
    Done(usize),
}

/// Scanner state for one value.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    started: bool,
    scalar: bool,
    in_str: bool,
    esc: bool,
    depth: u32,
    /// Bit d set: the container at depth d+1 is an object.
    objects: u128,
    /// Bytes were left out because of the cap.
    pub cut: bool,
}

impl Scan {
    /// True when the value may end at the end of the data (a top-level scalar).
    pub fn complete_at_eof(&self) -> bool {
        self.started && self.scalar && !self.in_str && self.depth == 0
    }

    /// Scans `buf` (the value's next bytes; the first call starts at the value's first byte,
    /// whitespace already skipped). With `copy`, appends the compact bytes to `out` while it
    /// is shorter than `cap`. Errors give the position in `buf`.
    ///
    /// The hot loop keeps its state in locals and skips whole strings inline; the state is
    /// stored back only when the chunk ends inside the value.
    pub fn feed(
        &mut self,
        buf: &[u8],
        out: &mut Vec<u8>,
        copy: bool,
        cap: usize,
    ) -> Result<Step, (usize, &'static str)> {
        let len = buf.len();
        if !self.started {
            if len == 0 {
                return Ok(Step::More);
            }
            self.started = true;
            match buf[0] {
                b'{' | b'[' | b'"' => {}
                b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => self.scalar = true,
                _ => return Err((0, "expected a JSON value")),
            }
        }
        let mut i = 0;
        let mut seg = 0;
        let mut depth = self.depth;
        let mut objects = self.objects;
        let scalar = self.scalar;
        let mut esc = self.esc;
        let mut in_str = self.in_str;
        let mut done = false;
        if in_str {
            match skip_string(buf, 0, &mut esc) {
                Some(end) => {
                    i = end;
                    in_str = false;
                    done = depth == 0;
                }
                None => i = len,
            }
        }
        while !done && i < len {
            let c = buf[i];
            match CLASS[usize::from(c)] {
                ORDINARY => i += 1,
                QUOTE => {
                    if scalar && depth == 0 {
                        done = true;
                        break;
                    }
                    match skip_string(buf, i + 1, &mut esc) {
                        Some(end) => {
                            i = end;
                            done = depth == 0;
                        }
                        None => {
                            in_str = true;
                            i = len;
                        }
                    }
                }
                OPEN => {
                    if scalar && depth == 0 {
                        done = true;
                        break;
                    }
                    if depth >= MAX_DEPTH {
                        return Err((i, TOO_DEEP));
                    }
                    let bit = 1u128 << depth;
                    if c == b'{' {
                        objects |= bit;
                    } else {
                        objects &= !bit;
                    }
                    depth += 1;
                    i += 1;
                }
                CLOSE => {
                    if depth == 0 {
                        // Ends a top-level scalar.
                        done = true;
                        break;
                    }
                    depth -= 1;
                    if (objects & (1u128 << depth) != 0) != (c == b'}') {
                        return Err((i, "mismatched bracket"));
                    }
                    i += 1;
                    done = depth == 0;
                }
                SPACE => {
                    flush(buf, seg, i, out, copy, cap, &mut self.cut);
                    seg = i;
                    if scalar && depth == 0 {
                        done = true;
                        break;
                    }
                    i += 1;
                    while i < len && is_ws(buf[i]) {
                        i += 1;
                    }
                    seg = i;
                }
                _ => {
                    // A comma: ends a top-level scalar, else ordinary.
                    if depth == 0 {
                        done = true;
                        break;
                    }
                    i += 1;
                }
            }
        }
        flush(buf, seg, i, out, copy, cap, &mut self.cut);
        self.depth = depth;
        self.objects = objects;
        self.esc = esc;
        self.in_str = in_str;
        Ok(if done { Step::Done(i) } else { Step::More })
    }
}

/// Byte classes of the scanner, outside strings.
const ORDINARY: u8 = 0;
const QUOTE: u8 = 1;
const OPEN: u8 = 2;
const CLOSE: u8 = 3;
const SPACE: u8 = 4;
const COMMA: u8 = 5;

static CLASS: [u8; 256] = {
    let mut t = [ORDINARY; 256];
    t[b'"' as usize] = QUOTE;
    t[b'{' as usize] = OPEN;
    t[b'[' as usize] = OPEN;
    t[b'}' as usize] = CLOSE;
    t[b']' as usize] = CLOSE;
    t[b' ' as usize] = SPACE;
    t[b'\n' as usize] = SPACE;
    t[b'\r' as usize] = SPACE;
    t[b'\t' as usize] = SPACE;
    t[b',' as usize] = COMMA;
    t
};

/// Appends `buf[seg..end]` to `out` within `cap`; flags `cut` when bytes were left out.
#[inline]
fn flush(
    buf: &[u8],
    seg: usize,
    end: usize,
    out: &mut Vec<u8>,
    copy: bool,
    cap: usize,
    cut: &mut bool,
) {
    if copy && end > seg {
        let room = cap.saturating_sub(out.len());
        let n = room.min(end - seg);
        out.extend_from_slice(&buf[seg..seg + n]);
        if n < end - seg {
            *cut = true;
        }
    }
}

/// Skips string content from `buf[i]` (after the opening quote, or where the last chunk
/// stopped). Returns the index after the closing quote, or `None` at the end of the chunk with
/// `esc` set when the chunk ended right after a backslash.
#[inline(always)]
fn skip_string(buf: &[u8], mut i: usize, esc: &mut bool) -> Option<usize> {
    if *esc {
        if i >= buf.len() {
            return None;
        }
        i += 1;
        *esc = false;
    }
    loop {
        let j = find_quote_or_backslash(buf.get(i..)?)?;
        i += j;
        if buf[i] == b'"' {
            return Some(i + 1);
        }
        if i + 1 >= buf.len() {
            *esc = true;
            return None;
        }
        i += 2;
    }
}

/// Position of the first `"` or `\` in `s`. Strings in records are mostly short, where a call
/// into `memchr2` costs more than it saves: the first 32 bytes are searched 8 at a time in a
/// register (SWAR), longer strings with `memchr2`.
#[inline(always)]
fn find_quote_or_backslash(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const QUOTE: u64 = LO * b'"' as u64;
    const BACKSLASH: u64 = LO * b'\\' as u64;
    let mut i = 0;
    while i + 8 <= s.len() && i < 32 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&s[i..i + 8]);
        let w = u64::from_le_bytes(word);
        let q = w ^ QUOTE;
        let b = w ^ BACKSLASH;
        // A byte of q or b is zero where w holds the byte searched for; the lowest flagged
        // byte is always exact (borrows only flag bytes above a real match).
        let m = (q.wrapping_sub(LO) & !q | b.wrapping_sub(LO) & !b) & HI;
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    if i >= 32 {
        return memchr::memchr2(b'"', b'\\', &s[i..]).map(|j| i + j);
    }
    s[i..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\')
        .map(|j| i + j)
}

/// Compacts the one JSON value at the start of `src` (after whitespace) into `out` (appended,
/// at most `cap` bytes in all). Returns the bytes of `src` used and whether the cap cut it.
pub(crate) fn compact(
    src: &[u8],
    out: &mut Vec<u8>,
    cap: usize,
) -> Result<(usize, bool), (usize, &'static str)> {
    let start = src.iter().position(|&b| !is_ws(b)).unwrap_or(src.len());
    if start == src.len() {
        return Err((start, "no JSON value"));
    }
    let mut scan = Scan::default();
    match scan.feed(&src[start..], out, true, cap) {
        Ok(Step::Done(n)) => Ok((start + n, scan.cut)),
        Ok(Step::More) if scan.complete_at_eof() => Ok((src.len(), scan.cut)),
        Ok(Step::More) => Err((src.len(), "unexpected end inside a value")),
        Err((i, why)) => Err((start + i, why)),
    }
}

/// Streams JSON values out of a `BufRead`, counting the bytes it consumed.
pub(crate) struct JsonReader<'r> {
    input: &'r mut dyn BufRead,
    /// Bytes consumed so far (the offset of errors).
    pub offset: u64,
}

impl<'r> JsonReader<'r> {
    pub fn new(input: &'r mut dyn BufRead) -> Self {
        JsonReader { input, offset: 0 }
    }

    fn fill(&mut self) -> Result<&[u8], ProcessError> {
        loop {
            match self.input.fill_buf() {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ProcessError::Read {
                        offset: self.offset,
                        source,
                    })
                }
            }
        }
        self.input.fill_buf().map_err(|source| ProcessError::Read {
            offset: self.offset,
            source,
        })
    }

    fn consume(&mut self, n: usize) {
        self.input.consume(n);
        self.offset += n as u64;
    }

    /// An error at the current offset.
    pub fn error(&self, reason: &'static str) -> ProcessError {
        ProcessError::Json {
            offset: self.offset,
            reason,
        }
    }

    /// Skips whitespace and returns the next byte without consuming it (`None` at the end).
    pub fn peek(&mut self) -> Result<Option<u8>, ProcessError> {
        loop {
            let buf = self.fill()?;
            if buf.is_empty() {
                return Ok(None);
            }
            match buf.iter().position(|&b| !is_ws(b)) {
                Some(i) => {
                    let b = buf[i];
                    self.consume(i);
                    return Ok(Some(b));
                }
                None => {
                    let n = buf.len();
                    self.consume(n);
                }
            }
        }
    }

    /// Consumes one byte (the one `peek` returned).
    pub fn bump(&mut self) {
        self.consume(1);
    }

    /// Consumes `b` after optional whitespace, or fails with `reason`.
    pub fn expect(&mut self, b: u8, reason: &'static str) -> Result<(), ProcessError> {
        match self.peek()? {
            Some(c) if c == b => {
                self.bump();
                Ok(())
            }
            _ => Err(self.error(reason)),
        }
    }

    /// Reads the next value (after whitespace). With `copy`, appends it compact to `out` up to
    /// `cap` bytes in all and returns whether it was cut; without, only skips it.
    pub fn value(
        &mut self,
        out: &mut Vec<u8>,
        copy: bool,
        cap: usize,
    ) -> Result<bool, ProcessError> {
        if self.peek()?.is_none() {
            return Err(self.error("expected a JSON value, found the end of the data"));
        }
        let mut scan = Scan::default();
        loop {
            let offset = self.offset;
            let buf = self.fill()?;
            if buf.is_empty() {
                if scan.complete_at_eof() {
                    return Ok(scan.cut);
                }
                return Err(self.error("unexpected end of data inside a value"));
            }
            match scan.feed(buf, out, copy, cap) {
                Ok(Step::More) => {
                    let n = buf.len();
                    self.consume(n);
                }
                Ok(Step::Done(n)) => {
                    self.consume(n);
                    return Ok(scan.cut);
                }
                Err((i, reason)) => {
                    return Err(ProcessError::Json {
                        offset: offset + i as u64,
                        reason,
                    })
                }
            }
        }
    }
}

impl JsonReader<'_> {
    /// Reads the next value as [`JsonReader::value`] does (copied compact into `out`, up to
    /// `cap` bytes in all), except that a value nested deeper than the scanner's limit is
    /// skipped to its end and gives `None`: one bad record of an array need not cost the
    /// records after it. Its other errors are the stream's.
    pub fn record(&mut self, out: &mut Vec<u8>, cap: usize) -> Result<Option<bool>, ProcessError> {
        match self.value(out, true, cap) {
            Ok(cut) => Ok(Some(cut)),
            Err(ProcessError::Json { offset, reason }) if reason == TOO_DEEP => {
                // `value` stopped on the bracket that opens level MAX_DEPTH + 1, with the
                // bytes before it in the current chunk not consumed yet.
                let before = offset.saturating_sub(self.offset) as usize;
                self.consume(before);
                self.skip_nested(u64::from(MAX_DEPTH))?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Consumes through the end of a value `depth` levels deep, counting brackets (not
    /// matching them: that would need memory per level) and skipping strings.
    fn skip_nested(&mut self, mut depth: u64) -> Result<(), ProcessError> {
        let mut in_str = false;
        let mut esc = false;
        loop {
            let buf = self.fill()?;
            let len = buf.len();
            if len == 0 {
                return Err(self.error("unexpected end of data inside a value"));
            }
            let mut i = 0;
            if in_str {
                match skip_string(buf, 0, &mut esc) {
                    Some(end) => {
                        i = end;
                        in_str = false;
                    }
                    None => i = len,
                }
            }
            while i < len {
                match CLASS[usize::from(buf[i])] {
                    QUOTE => match skip_string(buf, i + 1, &mut esc) {
                        Some(end) => i = end,
                        None => {
                            in_str = true;
                            i = len;
                        }
                    },
                    OPEN => {
                        depth += 1;
                        i += 1;
                    }
                    CLOSE => {
                        depth = depth.saturating_sub(1);
                        i += 1;
                        if depth == 0 {
                            self.consume(i);
                            return Ok(());
                        }
                    }
                    _ => i += 1,
                }
            }
            self.consume(len);
        }
    }
}

/// Index just past the value starting at `s[i]` (no leading whitespace), for slices the
/// scanner already checked (records): brackets are counted, not matched.
fn value_end(s: &[u8], i: usize) -> Option<usize> {
    let mut esc = false;
    match *s.get(i)? {
        b'"' => skip_string(s, i + 1, &mut esc),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                let c = *s.get(j)?;
                match CLASS[usize::from(c)] {
                    QUOTE => j = skip_string(s, j + 1, &mut esc)?,
                    OPEN => {
                        depth += 1;
                        j += 1;
                    }
                    CLOSE => {
                        depth -= 1;
                        j += 1;
                        if depth == 0 {
                            return Some(j);
                        }
                    }
                    _ => j += 1,
                }
            }
        }
        _ => {
            let mut j = i;
            while j < s.len() && !matches!(CLASS[usize::from(s[j])], CLOSE | SPACE | COMMA) {
                j += 1;
            }
            Some(j)
        }
    }
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_ws(s[i]) {
        i += 1;
    }
    i
}

/// Fills `out[k]` with the raw value of member `keys[k]` of the JSON object `obj` (top level,
/// first occurrence), in one pass that stops once every key is found. Keys are compared with
/// the raw (still escaped) member names.
pub(crate) fn find_members<'a>(obj: &'a [u8], keys: &[&[u8]], out: &mut [Option<&'a [u8]>]) {
    let mut missing = keys.len().min(out.len());
    let mut i = skip_ws(obj, 0);
    if missing == 0 || obj.get(i) != Some(&b'{') {
        return;
    }
    i += 1;
    loop {
        i = skip_ws(obj, i);
        if obj.get(i) != Some(&b'"') {
            return;
        }
        let Some(name_end) = value_end(obj, i) else {
            return;
        };
        let name = &obj[i + 1..name_end - 1];
        i = skip_ws(obj, name_end);
        if obj.get(i) != Some(&b':') {
            return;
        }
        i = skip_ws(obj, i + 1);
        let Some(end) = value_end(obj, i) else {
            return;
        };
        for (k, slot) in keys.iter().zip(out.iter_mut()) {
            if slot.is_none() && *k == name {
                *slot = Some(&obj[i..end]);
                missing -= 1;
            }
        }
        if missing == 0 {
            return;
        }
        i = skip_ws(obj, end);
        match obj.get(i) {
            Some(b',') => i += 1,
            _ => return,
        }
    }
}

/// The raw value of member `key` of the JSON object `obj` (top level, first occurrence).
pub(crate) fn find_member<'a>(obj: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut out = [None];
    find_members(obj, &[key], &mut out);
    out[0]
}

/// The raw value at a dotted path (`userIdentity.accountId`).
pub(crate) fn find_path<'a>(obj: &'a [u8], path: &str) -> Option<&'a [u8]> {
    let mut cur = obj;
    for part in path.split('.') {
        cur = find_member(cur, part.as_bytes())?;
    }
    Some(cur)
}

/// A raw JSON value as tag or event text: strings unescaped, other values as they are.
pub(crate) fn value_text(raw: &[u8]) -> Cow<'_, str> {
    if raw.first() == Some(&b'"') && raw.len() >= 2 {
        let inner = &raw[1..raw.len() - 1];
        if memchr::memchr(b'\\', inner).is_none() {
            return String::from_utf8_lossy(inner);
        }
        let mut out = Vec::with_capacity(inner.len());
        unescape(inner, &mut out);
        return Cow::Owned(String::from_utf8_lossy(&out).into_owned());
    }
    String::from_utf8_lossy(raw)
}

/// Record fields of a compact JSON object, for tag templates.
pub(crate) struct JsonFields<'a>(pub &'a [u8]);

impl FieldSource for JsonFields<'_> {
    fn field(&self, path: &str) -> Option<Cow<'_, str>> {
        json_field(self.0, path)
    }

    /// One pass over the record's top level for every placeholder of a template.
    fn fields<'s>(&'s self, paths: &[&str], out: &mut [Option<Cow<'s, str>>]) {
        let n = paths.len().min(out.len()).min(MAX_TAG_FIELDS);
        let mut heads: [&[u8]; MAX_TAG_FIELDS] = [&[]; MAX_TAG_FIELDS];
        for (h, p) in heads.iter_mut().zip(&paths[..n]) {
            *h = p.split('.').next().unwrap_or(p).as_bytes();
        }
        let mut raws: [Option<&[u8]>; MAX_TAG_FIELDS] = [None; MAX_TAG_FIELDS];
        find_members(self.0, &heads[..n], &mut raws[..n]);
        for k in 0..n {
            out[k] = raws[k].and_then(|raw| {
                let raw = match paths[k].split_once('.') {
                    Some((_, rest)) => find_path(raw, rest)?,
                    None => raw,
                };
                scalar_text(raw)
            });
        }
    }
}

/// The scalar at `path` in the JSON object `rec`, as text (objects, arrays and null: `None`).
pub(crate) fn json_field<'a>(rec: &'a [u8], path: &str) -> Option<Cow<'a, str>> {
    scalar_text(find_path(rec, path)?)
}

/// A raw scalar as text; objects, arrays and null give `None`.
fn scalar_text(raw: &[u8]) -> Option<Cow<'_, str>> {
    match raw.first() {
        Some(b'{') | Some(b'[') | None => None,
        Some(b'n') if raw == b"null" => None,
        _ => Some(value_text(raw)),
    }
}

fn hex(b: u8) -> Option<u32> {
    (b as char).to_digit(16)
}

fn hex4(s: &[u8]) -> Option<u32> {
    if s.len() < 4 {
        return None;
    }
    let mut v = 0;
    for &b in &s[..4] {
        v = v * 16 + hex(b)?;
    }
    Some(v)
}

/// Appends the unescaped content of a JSON string body (without quotes) to `out`. Bad escapes
/// are kept as written; lone surrogates become U+FFFD.
pub(crate) fn unescape(s: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while let Some(j) = memchr::memchr(b'\\', &s[i..]) {
        out.extend_from_slice(&s[i..i + j]);
        i += j;
        let Some(&c) = s.get(i + 1) else {
            out.push(b'\\');
            return;
        };
        i += 2;
        let simple = match c {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'/' => Some(b'/'),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            continue;
        }
        if c != b'u' {
            out.extend_from_slice(&[b'\\', c]);
            continue;
        }
        let Some(hi) = hex4(&s[i..]) else {
            out.extend_from_slice(b"\\u");
            continue;
        };
        i += 4;
        let ch = if (0xd800..0xdc00).contains(&hi) {
            let lo = if s.get(i) == Some(&b'\\') && s.get(i + 1) == Some(&b'u') {
                hex4(&s[i + 2..]).filter(|lo| (0xdc00..0xe000).contains(lo))
            } else {
                None
            };
            match lo {
                Some(lo) => {
                    i += 6;
                    char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))
                }
                None => None,
            }
        } else {
            char::from_u32(hi)
        };
        let ch = ch.unwrap_or('\u{FFFD}');
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    }
    out.extend_from_slice(&s[i..]);
}

/// Appends `s` as a JSON string literal (quotes included). Bytes ≥ 0x80 are copied as they are
/// (the emitter fixes invalid UTF-8 afterwards).
pub(crate) fn write_json_string(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    let mut start = 0;
    // Most values need no escaping: copy runs between the bytes that do.
    while let Some(j) = s[start..]
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
    {
        let i = start + j;
        out.extend_from_slice(&s[start..i]);
        match s[i] {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 0xf)]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compact_str(s: &str) -> Result<(String, usize), &'static str> {
        let mut out = Vec::new();
        compact(s.as_bytes(), &mut out, usize::MAX)
            .map(|(n, _)| (String::from_utf8(out).unwrap(), n))
            .map_err(|(_, why)| why)
    }

    #[test]
    fn compacts_outside_strings_only() {
        let (c, n) =
            compact_str(" {\n  \"a b\" : [ 1 , true,\t\"x\\\" y\" ] ,\"c\":{}}  tail").unwrap();
        assert_eq!(c, r#"{"a b":[1,true,"x\" y"],"c":{}}"#);
        assert_eq!(n, 43);
        assert_eq!(compact_str("12.5e3 ").unwrap().0, "12.5e3");
        assert_eq!(compact_str("null").unwrap().0, "null");
        assert_eq!(compact_str("\"s\\\\\"x").unwrap().0, "\"s\\\\\"");
    }

    #[test]
    fn structural_errors() {
        assert_eq!(
            compact_str("{\"a\":1"),
            Err("unexpected end inside a value")
        );
        assert_eq!(compact_str("{\"a\":1]"), Err("mismatched bracket"));
        assert_eq!(compact_str("}"), Err("expected a JSON value"));
        assert_eq!(compact_str("\"abc"), Err("unexpected end inside a value"));
        let deep = "[".repeat(129);
        assert_eq!(compact_str(&deep), Err(TOO_DEEP));
    }

    #[test]
    fn record_skips_a_too_deep_value_to_its_end() {
        // Strings holding brackets and escaped quotes inside the deep part, tiny buffers so
        // every state crosses a chunk boundary.
        let deep = format!("{}\"x]\\\"[\"{}", "{\"a\":[".repeat(100), "]}".repeat(100));
        let data = format!(" {{\"ok\":1}} , {deep} ,[2] {}", "[".repeat(129));
        for capacity in [1, 2, 3, 7, 64, 4096] {
            let mut input = std::io::BufReader::with_capacity(capacity, data.as_bytes());
            let mut r = JsonReader::new(&mut input);
            let mut out = Vec::new();
            assert_eq!(r.record(&mut out, 100).unwrap(), Some(false));
            assert_eq!(out, br#"{"ok":1}"#);
            assert_eq!(r.peek().unwrap(), Some(b','));
            r.bump();
            out.clear();
            assert_eq!(
                r.record(&mut out, 100).unwrap(),
                None,
                "capacity {capacity}"
            );
            assert_eq!(r.peek().unwrap(), Some(b','), "capacity {capacity}");
            r.bump();
            out.clear();
            assert_eq!(r.record(&mut out, 100).unwrap(), Some(false));
            assert_eq!(out, b"[2]");
            // Too deep and never closed: a stream error.
            out.clear();
            assert!(matches!(
                r.record(&mut out, 100),
                Err(ProcessError::Json { .. })
            ));
        }
    }

    #[test]
    fn cap_cuts_and_flags() {
        let mut out = Vec::new();
        let (n, cut) = compact(b"{ \"abc\": 1 }", &mut out, 5).unwrap();
        assert_eq!((out.as_slice(), n, cut), (&b"{\"abc"[..], 12, true));
    }

    #[test]
    fn reader_streams_values_across_tiny_buffers() {
        let data = b" {\"a\" : [1, 2]}\n\"s\" 42 ";
        let mut input = std::io::BufReader::with_capacity(2, &data[..]);
        let mut r = JsonReader::new(&mut input);
        let mut out = Vec::new();
        let mut got = Vec::new();
        while r.peek().unwrap().is_some() {
            out.clear();
            r.value(&mut out, true, 100).unwrap();
            got.push(String::from_utf8(out.clone()).unwrap());
        }
        assert_eq!(got, vec![r#"{"a":[1,2]}"#, "\"s\"", "42"]);
        assert_eq!(r.offset, data.len() as u64);
    }

    #[test]
    fn reader_reports_the_offset_of_errors() {
        let data = b"{\"a\":1}{\"b\":[}";
        let mut input = &data[..];
        let mut r = JsonReader::new(&mut input);
        let mut out = Vec::new();
        r.value(&mut out, true, 100).unwrap();
        match r.value(&mut out, true, 100) {
            Err(ProcessError::Json { offset, reason }) => {
                assert_eq!((offset, reason), (13, "mismatched bracket"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn field_lookup() {
        let rec = br#"{"a":"x\"y","n":12,"o":{"p":"q","r":null},"l":[1],"u":"\u00e9\ud83d\ude00"}"#;
        let f = JsonFields(rec);
        assert_eq!(f.field("a").unwrap(), "x\"y");
        assert_eq!(f.field("n").unwrap(), "12");
        assert_eq!(f.field("o.p").unwrap(), "q");
        assert_eq!(f.field("o.r"), None);
        assert_eq!(f.field("l"), None);
        assert_eq!(f.field("zz"), None);
        assert_eq!(f.field("u").unwrap(), "é😀");
        assert_eq!(find_member(rec, b"l"), Some(&b"[1]"[..]));
    }

    #[test]
    fn quote_search_agrees_with_memchr() {
        let mut s = vec![b'a'; 100];
        for len in 0..100 {
            for pos in 0..=len {
                for c in [b'"', b'\\'] {
                    let mut t = s[..len].to_vec();
                    if pos < len {
                        t[pos] = c;
                    }
                    assert_eq!(
                        find_quote_or_backslash(&t),
                        memchr::memchr2(b'"', b'\\', &t),
                        "{len} {pos}"
                    );
                }
            }
        }
        s[5] = 0x22 + 0x80;
        assert_eq!(find_quote_or_backslash(&s), None);
    }

    #[test]
    fn string_round_trip() {
        let mut out = Vec::new();
        write_json_string(b"a\"b\\c\nd\x01", &mut out);
        assert_eq!(out, b"\"a\\\"b\\\\c\\nd\\u0001\"");
        let mut back = Vec::new();
        unescape(&out[1..out.len() - 1], &mut back);
        assert_eq!(back, b"a\"b\\c\nd\x01");
    }
}
