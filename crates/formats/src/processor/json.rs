//! A byte-level JSON scanner: finds where a value ends and copies it compact (whitespace outside
//! strings removed), without parsing it into a tree. Strings are skipped with `memchr`, so the
//! bytes of a record are looked at about once.
//!
//! [`Scan`] is the state machine; it is fed chunks, so [`JsonReader`] can stream a
//! `{"Records":[...]}` document of any size out of a `BufRead` holding one record at a time,
//! and [`compact`] can work on a slice. The rest are slice helpers for records already cut out:
//! field lookup ([`JsonFields`], [`find_member`]), string unescaping and escaping.
//!
//! It checks the whole RFC 8259 grammar as it goes (brackets match, members are `"name":value`
//! separated by commas with none trailing, numbers and literals are well formed, strings end,
//! hold no raw control characters and only valid escapes, surrogate escapes pair up; nesting
//! ≤ 128), in the same single pass: whatever it copies out is valid JSON. It does not check
//! UTF-8 (the emitter repairs it per `encoding`) nor duplicate member names (RFC 8259 allows
//! them).

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

/// Grammar states: what the next significant byte may be.
/// A value (after `:`, after `,` in an array, or at the start).
const E_VALUE: u8 = 0;
/// A value or `]` (after `[`).
const E_FIRST_VALUE: u8 = 1;
/// A member name or `}` (after `{`).
const E_FIRST_KEY: u8 = 2;
/// A member name (after `,` in an object).
const E_KEY: u8 = 3;
/// `:` (after a member name).
const E_COLON: u8 = 4;
/// `,` or the closing bracket (after a value inside a container).
const E_AFTER: u8 = 5;

/// Token states of a number or literal in progress (0: none). Numbers follow RFC 8259:
/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
const N_MINUS: u8 = 1;
const N_ZERO: u8 = 2;
const N_INT: u8 = 3;
const N_DOT: u8 = 4;
const N_FRAC: u8 = 5;
const N_E: u8 = 6;
const N_ESIGN: u8 = 7;
const N_EXP: u8 = 8;
/// Literals: `LIT + word * 8 + bytes matched`, word 0 `true`, 1 `false`, 2 `null`.
const LIT: u8 = 16;
const WORDS: [&[u8]; 3] = [b"true", b"false", b"null"];

/// The token state after the first byte of a number or literal, 0 if `c` starts neither.
#[inline]
fn token_start(c: u8) -> u8 {
    match c {
        b'-' => N_MINUS,
        b'0' => N_ZERO,
        b'1'..=b'9' => N_INT,
        b't' => LIT + 1,
        b'f' => LIT + 8 + 1,
        b'n' => LIT + 16 + 1,
        _ => 0,
    }
}

/// The token state after byte `c`, 0 if `c` cannot come next.
#[inline(always)]
fn token_step(tok: u8, c: u8) -> u8 {
    if tok >= LIT {
        let word = WORDS[usize::from((tok - LIT) / 8)];
        let pos = usize::from((tok - LIT) % 8);
        return if word.get(pos) == Some(&c) {
            tok + 1
        } else {
            0
        };
    }
    match (tok, c) {
        (N_MINUS, b'0') => N_ZERO,
        (N_MINUS, b'1'..=b'9') => N_INT,
        (N_INT, b'0'..=b'9') => N_INT,
        (N_ZERO | N_INT, b'.') => N_DOT,
        (N_DOT | N_FRAC, b'0'..=b'9') => N_FRAC,
        (N_ZERO | N_INT | N_FRAC, b'e' | b'E') => N_E,
        (N_E, b'+' | b'-') => N_ESIGN,
        (N_E | N_ESIGN | N_EXP, b'0'..=b'9') => N_EXP,
        _ => 0,
    }
}

/// Runs a number or literal on from `buf[i]` through its ordinary bytes: returns where they
/// end (a delimiter or the chunk's end), or the position of a byte that cannot come next.
#[inline(always)]
fn token_run(buf: &[u8], mut i: usize, tok: &mut u8) -> Result<usize, usize> {
    while let Some(&c) = buf.get(i) {
        if CLASS[usize::from(c)] != ORDINARY {
            break;
        }
        *tok = token_step(*tok, c);
        if *tok == 0 {
            return Err(i);
        }
        i += 1;
    }
    Ok(i)
}

/// True when a token in state `tok` is a whole number or literal.
#[inline]
fn token_complete(tok: u8) -> bool {
    if tok >= LIT {
        let word = WORDS[usize::from((tok - LIT) / 8)];
        return usize::from((tok - LIT) % 8) == word.len();
    }
    matches!(tok, N_ZERO | N_INT | N_FRAC | N_EXP)
}

/// The error for a byte that breaks the grammar in state `expect`.
fn unexpected(expect: u8) -> &'static str {
    match expect {
        E_VALUE => "expected a JSON value",
        E_FIRST_VALUE => "expected a JSON value or ']'",
        E_FIRST_KEY => "expected a member name or '}'",
        E_KEY => "expected a member name",
        E_COLON => "expected ':' after a member name",
        _ => "expected ',' or a closing bracket",
    }
}

const BAD_TOKEN: &str = "invalid number or literal";
const BAD_ESCAPE: &str = "invalid escape in a string";
const CONTROL_IN_STRING: &str = "control character in a string";
const TRAILING_COMMA: &str = "trailing comma";

/// Scanner state for one value.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Grammar state (`E_*`).
    expect: u8,
    /// Number or literal in progress (`N_*`, `LIT..`), 0 when none.
    tok: u8,
    in_str: bool,
    /// Escape in progress inside a string (`ESC_*`), 0 when none.
    esc: u8,
    depth: u32,
    /// Bit d set: the container at depth d+1 is an object.
    objects: u128,
    /// Bytes were left out because of the cap.
    pub cut: bool,
}

impl Scan {
    /// True when the value may end at the end of the data (a whole top-level number or
    /// literal).
    pub fn complete_at_eof(&self) -> bool {
        self.depth == 0 && !self.in_str && self.tok != 0 && token_complete(self.tok)
    }

    /// Nesting depth and whether the scanner is inside a string: after an error, where the
    /// broken value can be skipped from (see [`JsonReader::record`]).
    pub fn position(&self) -> (u32, bool) {
        (self.depth, self.in_str)
    }

    /// Scans `buf` (the value's next bytes; the first call starts at the value's first byte,
    /// whitespace already skipped), checking the RFC 8259 grammar as it goes. With `copy`,
    /// appends the compact bytes to `out` while it is shorter than `cap`. Errors give the
    /// position in `buf` of the first byte that breaks the grammar.
    ///
    /// The hot loop keeps its state in locals and skips whole strings inline; the state is
    /// stored back when the chunk ends inside the value (or on an error, for the resync).
    pub fn feed(
        &mut self,
        buf: &[u8],
        out: &mut Vec<u8>,
        copy: bool,
        cap: usize,
    ) -> Result<Step, (usize, &'static str)> {
        let len = buf.len();
        let mut i = 0;
        let mut seg = 0;
        let mut depth = self.depth;
        let mut objects = self.objects;
        let mut expect = self.expect;
        let mut tok = self.tok;
        let mut esc = self.esc;
        let mut in_str = self.in_str;
        let mut done = false;
        let mut error: Option<&'static str> = None;
        // Whether the innermost open container is an object (`objects` bit depth-1), kept in a
        // local so that commas do not shift a u128.
        let mut in_object = depth > 0 && objects & (1u128 << (depth - 1)) != 0;
        if in_str {
            match skip_string(buf, 0, &mut esc) {
                Ok(Some(end)) => {
                    i = end;
                    in_str = false;
                    done = depth == 0;
                }
                Ok(None) => i = len,
                Err((at, why)) => {
                    i = at;
                    error = Some(why);
                }
            }
        }
        if tok != 0 && !done && error.is_none() {
            // A number or literal that went on from the last chunk.
            match token_run(buf, i, &mut tok) {
                Ok(end) => i = end,
                Err(at) => {
                    i = at;
                    error = Some(BAD_TOKEN);
                }
            }
            if error.is_none() && i < len {
                if token_complete(tok) {
                    tok = 0;
                    expect = E_AFTER;
                    done = depth == 0;
                } else {
                    error = Some(BAD_TOKEN);
                }
            }
        }
        while !done && error.is_none() && i < len {
            let c = buf[i];
            match CLASS[usize::from(c)] {
                ORDINARY => {
                    if expect > E_FIRST_VALUE {
                        error = Some(unexpected(expect));
                        break;
                    }
                    tok = token_start(c);
                    if tok == 0 {
                        error = Some(unexpected(expect));
                        break;
                    }
                    match token_run(buf, i + 1, &mut tok) {
                        Ok(end) => i = end,
                        Err(at) => {
                            i = at;
                            error = Some(BAD_TOKEN);
                            break;
                        }
                    }
                    if i == len {
                        break;
                    }
                    if !token_complete(tok) {
                        error = Some(BAD_TOKEN);
                        break;
                    }
                    tok = 0;
                    expect = E_AFTER;
                    if depth == 0 {
                        done = true;
                        break;
                    }
                }
                QUOTE => {
                    expect = match expect {
                        E_VALUE | E_FIRST_VALUE => E_AFTER,
                        E_FIRST_KEY | E_KEY => E_COLON,
                        _ => {
                            error = Some(unexpected(expect));
                            break;
                        }
                    };
                    match skip_string_body(buf, i + 1, &mut esc) {
                        Ok(Some(end)) => {
                            i = end;
                            if depth == 0 {
                                done = true;
                                break;
                            }
                        }
                        Ok(None) => {
                            in_str = true;
                            i = len;
                        }
                        Err((at, why)) => {
                            in_str = true;
                            i = at;
                            error = Some(why);
                            break;
                        }
                    }
                }
                OPEN => {
                    if expect > E_FIRST_VALUE {
                        error = Some(unexpected(expect));
                        break;
                    }
                    if depth >= MAX_DEPTH {
                        error = Some(TOO_DEEP);
                        break;
                    }
                    let bit = 1u128 << depth;
                    in_object = c == b'{';
                    if in_object {
                        objects |= bit;
                        expect = E_FIRST_KEY;
                    } else {
                        objects &= !bit;
                        expect = E_FIRST_VALUE;
                    }
                    depth += 1;
                    i += 1;
                }
                CLOSE => {
                    if depth == 0 {
                        error = Some(unexpected(expect));
                        break;
                    }
                    if in_object != (c == b'}') {
                        error = Some("mismatched bracket");
                        break;
                    }
                    let first = if in_object {
                        E_FIRST_KEY
                    } else {
                        E_FIRST_VALUE
                    };
                    if expect != E_AFTER && expect != first {
                        error = Some(match expect {
                            E_VALUE | E_KEY => TRAILING_COMMA,
                            _ => unexpected(expect),
                        });
                        break;
                    }
                    depth -= 1;
                    expect = E_AFTER;
                    i += 1;
                    if depth == 0 {
                        done = true;
                        break;
                    }
                    in_object = objects & (1u128 << (depth - 1)) != 0;
                }
                SPACE => {
                    flush(buf, seg, i, out, copy, cap, &mut self.cut);
                    i += 1;
                    while i < len && is_ws(buf[i]) {
                        i += 1;
                    }
                    seg = i;
                }
                COMMA => {
                    if expect != E_AFTER {
                        error = Some(unexpected(expect));
                        break;
                    }
                    expect = if in_object { E_KEY } else { E_VALUE };
                    i += 1;
                }
                _ => {
                    // A colon.
                    if expect != E_COLON {
                        error = Some(unexpected(expect));
                        break;
                    }
                    expect = E_VALUE;
                    i += 1;
                }
            }
        }
        flush(buf, seg, i, out, copy, cap, &mut self.cut);
        self.depth = depth;
        self.objects = objects;
        self.expect = expect;
        self.tok = tok;
        self.esc = esc;
        self.in_str = in_str;
        if let Some(why) = error {
            return Err((i, why));
        }
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
const COLON: u8 = 6;

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
    t[b':' as usize] = COLON;
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

/// Skips and checks string content from `buf[i]` (after the opening quote, or where the last
/// chunk stopped, `esc` holding an escape in progress). Returns the index after the closing
/// quote, `None` at the end of the chunk (`esc` set when it ended inside an escape), or the
/// position and reason of an invalid escape or a raw control character.
#[inline(always)]
fn skip_string(
    buf: &[u8],
    mut i: usize,
    esc: &mut u8,
) -> Result<Option<usize>, (usize, &'static str)> {
    if *esc != 0 {
        i = finish_escape(buf, i, esc)?;
        if *esc != 0 {
            return Ok(None);
        }
    }
    skip_string_body(buf, i, esc)
}

/// [`skip_string`] with no escape in progress (`esc` is 0): right after an opening quote.
#[inline(always)]
fn skip_string_body(
    buf: &[u8],
    mut i: usize,
    esc: &mut u8,
) -> Result<Option<usize>, (usize, &'static str)> {
    loop {
        let Some(j) = find_string_special(buf.get(i..).unwrap_or_default()) else {
            return Ok(None);
        };
        i += j;
        match buf[i] {
            b'"' => return Ok(Some(i + 1)),
            b'\\' => match buf.get(i + 1) {
                // The common escapes, whole in this chunk: no state machine needed.
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                _ => {
                    *esc = ESC_START;
                    i = finish_escape(buf, i + 1, esc)?;
                    if *esc != 0 {
                        return Ok(None);
                    }
                }
            },
            _ => return Err((i, CONTROL_IN_STRING)),
        }
    }
}

/// Checks the rest of an escape from `buf[i]` (`esc` as in [`Scan`]); returns where it ends,
/// or the chunk's end with `esc` still set. A `\u` escape of a high surrogate must be followed
/// by one of a low surrogate, and a low surrogate must not stand alone: JSON parsers (serde_json
/// among them) reject lone surrogates, although RFC 8259's grammar lets them through.
#[inline]
fn finish_escape(buf: &[u8], mut i: usize, esc: &mut u8) -> Result<usize, (usize, &'static str)> {
    while *esc != 0 {
        let Some(&c) = buf.get(i) else {
            return Ok(i);
        };
        let hex = c.is_ascii_hexdigit();
        let next = match (*esc, c) {
            (ESC_START, b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 0,
            (ESC_START, b'u') => ESC_HEX1,
            (ESC_HEX1, b'd' | b'D') => ESC_HEX2_D,
            (ESC_HEX1, _) if hex => ESC_HEX2,
            (ESC_HEX2_D, b'8'..=b'9' | b'a'..=b'b' | b'A'..=b'B') => ESC_HIGH3,
            (ESC_HEX2_D, b'0'..=b'7') | (ESC_HEX2, _) if hex => ESC_HEX3,
            (ESC_HEX3, _) if hex => ESC_HEX4,
            (ESC_HEX4, _) if hex => 0,
            (ESC_HIGH3, _) if hex => ESC_HIGH4,
            (ESC_HIGH4, _) if hex => ESC_LOW_BACKSLASH,
            (ESC_LOW_BACKSLASH, b'\\') => ESC_LOW_U,
            (ESC_LOW_U, b'u') => ESC_LOW1,
            (ESC_LOW1, b'd' | b'D') => ESC_LOW2,
            (ESC_LOW2, b'c'..=b'f' | b'C'..=b'F') => ESC_HEX3,
            (ESC_HEX2_D, _) if hex => return Err((i, LONE_SURROGATE)),
            (ESC_LOW_BACKSLASH..=ESC_LOW2, _) => return Err((i, LONE_SURROGATE)),
            _ => return Err((i, BAD_ESCAPE)),
        };
        *esc = next;
        i += 1;
    }
    Ok(i)
}

/// Escape states inside a string (0: none).
const ESC_START: u8 = 1;
const ESC_HEX1: u8 = 2;
/// The first hex digit was `d`: a surrogate may follow.
const ESC_HEX2_D: u8 = 3;
const ESC_HEX2: u8 = 4;
const ESC_HEX3: u8 = 5;
const ESC_HEX4: u8 = 6;
const ESC_HIGH3: u8 = 7;
const ESC_HIGH4: u8 = 8;
/// After a high surrogate: `\udc00`..`\udfff` must follow.
const ESC_LOW_BACKSLASH: u8 = 9;
const ESC_LOW_U: u8 = 10;
const ESC_LOW1: u8 = 11;
const ESC_LOW2: u8 = 12;
const LONE_SURROGATE: &str = "lone surrogate in a \\u escape";

/// Skips string content without checking it (for resyncing after an error and for slices
/// already checked): returns the index after the closing quote, or `None` at the end of the
/// chunk with `esc` set when the chunk ended right after a backslash.
#[inline(always)]
fn skip_string_unchecked(buf: &[u8], mut i: usize, esc: &mut bool) -> Option<usize> {
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

/// Position of the first `"`, `\` or control character (below 0x20) in `s`. Strings in
/// records are mostly short, where a call into `memchr2` costs more than it saves: the first
/// 32 bytes are searched 8 at a time in a register (SWAR); longer strings with `memchr2` for
/// the quote or backslash, then a check of the bytes before it for control characters.
#[inline(always)]
fn find_string_special(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const QUOTE: u64 = LO * b'"' as u64;
    const BACKSLASH: u64 = LO * b'\\' as u64;
    const SPACE: u64 = LO * 0x20;
    let mut i = 0;
    while i + 8 <= s.len() && i < SWAR_BYTES {
        let mut word = [0u8; 8];
        word.copy_from_slice(&s[i..i + 8]);
        let w = u64::from_le_bytes(word);
        let q = w ^ QUOTE;
        let b = w ^ BACKSLASH;
        // A byte of q or b is zero where w holds the byte searched for, and `w - 0x20` borrows
        // where w is below 0x20; the lowest flagged byte is always exact (borrows only flag
        // bytes above a real match).
        let m =
            (q.wrapping_sub(LO) & !q | b.wrapping_sub(LO) & !b | w.wrapping_sub(SPACE) & !w) & HI;
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    if i >= SWAR_BYTES {
        let rest = &s[i..];
        let end = memchr::memchr2(b'"', b'\\', rest);
        let span = &rest[..end.unwrap_or(rest.len())];
        if let Some(k) = first_control(span) {
            return Some(i + k);
        }
        return end.map(|j| i + j);
    }
    s[i..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|j| i + j)
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
    while i + 8 <= s.len() && i < SWAR_BYTES {
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
    if i >= SWAR_BYTES {
        return memchr::memchr2(b'"', b'\\', &s[i..]).map(|j| i + j);
    }
    s[i..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\')
        .map(|j| i + j)
}

/// How far [`find_string_special`] searches in a register before calling out: with three
/// tests per word the register search still beats a `memchr2` call plus a control check on
/// the strings of CloudTrail-like records (ARNs, user agents), most under 64 bytes.
const SWAR_BYTES: usize = 64;

/// Position of the first byte below 0x20: whole 32-byte blocks are tested branch-free (the
/// compiler vectorises the fold), then searched only when one holds such a byte.
#[inline]
fn first_control(s: &[u8]) -> Option<usize> {
    let mut blocks = s.chunks_exact(32);
    let mut at = 0;
    for block in blocks.by_ref() {
        if block.iter().fold(false, |any, &c| any | (c < 0x20)) {
            return block.iter().position(|&c| c < 0x20).map(|k| at + k);
        }
        at += 32;
    }
    blocks
        .remainder()
        .iter()
        .position(|&c| c < 0x20)
        .map(|k| at + k)
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
    /// Depth and in-string state of the scanner at the last grammar error.
    failed_at: (u32, bool),
}

impl<'r> JsonReader<'r> {
    pub fn new(input: &'r mut dyn BufRead) -> Self {
        JsonReader {
            input,
            offset: 0,
            failed_at: (0, false),
        }
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
    /// `cap` bytes in all and returns whether it was cut; without, only skips it. Either way
    /// it is checked against the grammar; an invalid value is an error at the offset of its
    /// first bad byte, which is not consumed.
    pub fn value(
        &mut self,
        out: &mut Vec<u8>,
        copy: bool,
        cap: usize,
    ) -> Result<bool, ProcessError> {
        if self.peek()?.is_none() {
            return Err(self.error(END_BEFORE_VALUE));
        }
        let mut scan = Scan::default();
        loop {
            let offset = self.offset;
            let buf = self.fill()?;
            if buf.is_empty() {
                if scan.complete_at_eof() {
                    return Ok(scan.cut);
                }
                return Err(self.error(END_INSIDE_VALUE));
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
                    self.failed_at = scan.position();
                    return Err(ProcessError::Json {
                        offset: offset + i as u64,
                        reason,
                    });
                }
            }
        }
    }
}

/// What [`JsonReader::record`] read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// A valid value, copied compact; true when the cap cut it.
    Valid(bool),
    /// Valid JSON nested deeper than the scanner's limit, skipped to its end.
    TooDeep,
    /// Not valid JSON: skipped to where it seems to end (brackets counted, strings skipped).
    /// The output holds what was read of it (compact up to the error, then as written),
    /// within the cap.
    Invalid { offset: u64, reason: &'static str },
}

impl JsonReader<'_> {
    /// Reads the next value as [`JsonReader::value`] does (copied compact into `out`, up to
    /// `cap` bytes in all), except that a value which is not valid JSON, or nested deeper than
    /// the scanner's limit, is skipped to its end and reported instead of failing: one bad
    /// record of an array need not cost the records after it. The end of an invalid value is
    /// found by counting brackets from the error on and skipping strings, so the framing
    /// around it holds as long as its brackets and quotes balance (a broken literal, number,
    /// escape, or missing `:`/`,`); when they do not, the caller meets the damage next and
    /// fails there. An error at the top of the value (no container open: a bad literal, or
    /// garbage) skips the rest of that token only. The end of the data inside a value, and
    /// read errors, are the stream's errors.
    pub fn record(&mut self, out: &mut Vec<u8>, cap: usize) -> Result<Record, ProcessError> {
        let (offset, reason) = match self.value(out, true, cap) {
            Ok(cut) => return Ok(Record::Valid(cut)),
            Err(ProcessError::Json { offset, reason })
                if reason != END_BEFORE_VALUE && reason != END_INSIDE_VALUE =>
            {
                (offset, reason)
            }
            Err(e) => return Err(e),
        };
        // `value` stopped on the bad byte, with the bytes before it in the current chunk not
        // consumed yet.
        let before = offset.saturating_sub(self.offset) as usize;
        let (depth, in_str) = self.failed_at;
        if reason == TOO_DEEP {
            self.consume(before);
            self.skip_nested(u64::from(MAX_DEPTH), false, None)?;
            return Ok(Record::TooDeep);
        }
        // `out` holds the record compact up to the bad byte; the rest is copied as written.
        self.consume(before);
        let raw = Some((out, cap));
        if depth == 0 && !in_str {
            self.skip_token(raw)?;
        } else {
            self.skip_nested(u64::from(depth), in_str, raw)?;
        }
        Ok(Record::Invalid { offset, reason })
    }

    /// Consumes (and copies into `raw`, within its cap) the bytes up to the next delimiter
    /// (whitespace, quote, bracket, comma), at least one byte unless at a comma or closing
    /// bracket, so that a caller looping on values always moves on.
    fn skip_token(&mut self, mut raw: Option<(&mut Vec<u8>, usize)>) -> Result<(), ProcessError> {
        let mut first = true;
        loop {
            let buf = self.fill()?;
            if buf.is_empty() {
                return Ok(());
            }
            let mut n = 0;
            while n < buf.len() {
                let class = CLASS[usize::from(buf[n])];
                if class == COMMA || class == CLOSE {
                    break;
                }
                if class != ORDINARY && class != COLON && !(first && n == 0) {
                    break;
                }
                n += 1;
            }
            first = false;
            if let Some((out, cap)) = raw.as_mut() {
                push_within(out, &buf[..n], *cap);
            }
            let whole = n == buf.len();
            self.consume(n);
            if !whole {
                return Ok(());
            }
        }
    }

    /// Consumes (and copies into `raw`) the bytes up to the next `{` or `[`: after an invalid
    /// top-level value of a document stream, where the next document is taken to start.
    pub fn skip_to_document(&mut self, raw: &mut Vec<u8>, cap: usize) -> Result<(), ProcessError> {
        loop {
            let buf = self.fill()?;
            if buf.is_empty() {
                return Ok(());
            }
            let n = memchr::memchr2(b'{', b'[', buf).unwrap_or(buf.len());
            push_within(raw, &buf[..n], cap);
            let whole = n == buf.len();
            self.consume(n);
            if !whole {
                return Ok(());
            }
        }
    }

    /// Consumes through the end of a value `depth` levels deep (`in_str`: from inside a
    /// string), counting brackets (not matching them: that would need memory per level) and
    /// skipping strings. With `raw`, copies what it consumes (within the cap).
    fn skip_nested(
        &mut self,
        mut depth: u64,
        mut in_str: bool,
        mut raw: Option<(&mut Vec<u8>, usize)>,
    ) -> Result<(), ProcessError> {
        let mut esc = false;
        loop {
            let buf = self.fill()?;
            let len = buf.len();
            if len == 0 {
                return Err(self.error(END_INSIDE_VALUE));
            }
            let mut i = 0;
            let mut end = None;
            if in_str {
                match skip_string_unchecked(buf, 0, &mut esc) {
                    Some(e) => {
                        i = e;
                        in_str = false;
                        if depth == 0 {
                            end = Some(i);
                        }
                    }
                    None => i = len,
                }
            }
            while end.is_none() && i < len {
                match CLASS[usize::from(buf[i])] {
                    QUOTE => match skip_string_unchecked(buf, i + 1, &mut esc) {
                        Some(e) => i = e,
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
                            end = Some(i);
                        }
                    }
                    _ => i += 1,
                }
            }
            let n = end.unwrap_or(len);
            if let Some((out, cap)) = raw.as_mut() {
                push_within(out, &buf[..n], *cap);
            }
            self.consume(n);
            if end.is_some() {
                return Ok(());
            }
        }
    }
}

/// Appends what fits of `add` under `cap`.
fn push_within(out: &mut Vec<u8>, add: &[u8], cap: usize) {
    let n = cap.saturating_sub(out.len()).min(add.len());
    out.extend_from_slice(&add[..n]);
}

/// The end of the data before a value started, and inside one: the stream's errors (a
/// truncated object), never a record's.
const END_BEFORE_VALUE: &str = "expected a JSON value, found the end of the data";
const END_INSIDE_VALUE: &str = "unexpected end of data inside a value";

/// Index just past the value starting at `s[i]` (no leading whitespace), for slices the
/// scanner already checked (records): brackets are counted, not matched.
fn value_end(s: &[u8], i: usize) -> Option<usize> {
    let mut esc = false;
    match *s.get(i)? {
        b'"' => skip_string_unchecked(s, i + 1, &mut esc),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                let c = *s.get(j)?;
                match CLASS[usize::from(c)] {
                    QUOTE => j = skip_string_unchecked(s, j + 1, &mut esc)?,
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
            assert_eq!(r.record(&mut out, 100).unwrap(), Record::Valid(false));
            assert_eq!(out, br#"{"ok":1}"#);
            assert_eq!(r.peek().unwrap(), Some(b','));
            r.bump();
            out.clear();
            assert_eq!(
                r.record(&mut out, 100).unwrap(),
                Record::TooDeep,
                "capacity {capacity}"
            );
            assert_eq!(r.peek().unwrap(), Some(b','), "capacity {capacity}");
            r.bump();
            out.clear();
            assert_eq!(r.record(&mut out, 100).unwrap(), Record::Valid(false));
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
    fn string_search_finds_quotes_backslashes_and_control_bytes() {
        // Lengths on both sides of the register search's 64 bytes and the 32-byte blocks.
        let naive = |t: &[u8]| t.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        for len in 0..200 {
            for pos in (0..=len).step_by(3) {
                for c in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                    let mut t = vec![b'a'; len];
                    if pos < len {
                        t[pos] = c;
                    }
                    assert_eq!(find_string_special(&t), naive(&t), "{len} {pos} {c}");
                }
            }
        }
        // Bytes next to the searched ones are not matches.
        let t = [0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0xa2, 0xdc].repeat(20);
        assert_eq!(find_string_special(&t), None);
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
