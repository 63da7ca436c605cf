//! Character sets: every event leaves as UTF-8. Valid UTF-8 passes untouched (no copy); each
//! invalid byte sequence becomes U+FFFD (`utf8`, the default) or each invalid byte is read as a
//! latin-1 character (`latin1`). The caller counts the events this changed; nothing is dropped.
//!
//! It does not guess encodings (no UTF-16, no BOM sniffing).

/// What invalid UTF-8 becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// UTF-8; invalid sequences become U+FFFD.
    #[default]
    #[serde(alias = "utf-8")]
    Utf8,
    /// UTF-8 where valid; every other byte is a latin-1 (ISO-8859-1) character.
    #[serde(alias = "latin-1", alias = "iso-8859-1")]
    Latin1,
}

/// UTF-8 of U+FFFD.
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// Returns `None` when `input` is valid UTF-8 (use it as is), or writes the fixed text to `out`
/// (cleared first) and returns `Some(invalid)`, `invalid` telling whether bad bytes were found
/// (as opposed to only a cut character removed).
///
/// With `cut` set the input was truncated by a byte cap, so an incomplete sequence at its very
/// end is a cut character, not bad data: it is removed rather than replaced.
pub fn fix(input: &[u8], encoding: Encoding, cut: bool, out: &mut Vec<u8>) -> Option<bool> {
    let first = match std::str::from_utf8(input) {
        Ok(_) => return None,
        Err(e) => e,
    };
    if cut && first.error_len().is_none() {
        out.clear();
        out.extend_from_slice(&input[..first.valid_up_to()]);
        return Some(false);
    }
    out.clear();
    out.reserve(input.len() + 8);
    let mut rest = input;
    loop {
        match std::str::from_utf8(rest) {
            Ok(_) => {
                out.extend_from_slice(rest);
                return Some(true);
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                out.extend_from_slice(valid);
                let bad_len = match e.error_len() {
                    Some(n) => n,
                    None if cut => return Some(true),
                    None => after.len(),
                };
                match encoding {
                    Encoding::Utf8 => out.extend_from_slice(REPLACEMENT),
                    Encoding::Latin1 => {
                        for &b in &after[..bad_len] {
                            push_latin1(b, out);
                        }
                    }
                }
                rest = &after[bad_len..];
            }
        }
    }
}

/// Appends the UTF-8 encoding of the latin-1 character `b`.
fn push_latin1(b: u8, out: &mut Vec<u8>) {
    if b < 0x80 {
        out.push(b);
    } else {
        out.push(0xc0 | (b >> 6));
        out.push(0x80 | (b & 0x3f));
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a UTF-8 character boundary.
/// `s` may hold invalid UTF-8: only a cut multi-byte sequence at the end is removed.
pub fn floor_boundary(s: &[u8], max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut end = max;
    // Back off over at most 3 continuation bytes to the start of the cut character.
    while end > 0 && max - end < 4 && (s[end] & 0xc0) == 0x80 {
        end -= 1;
    }
    if max - end >= 4 {
        max
    } else {
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(input: &[u8], enc: Encoding, cut: bool) -> Option<String> {
        let mut out = Vec::new();
        fix(input, enc, cut, &mut out).map(|_| String::from_utf8(out).unwrap())
    }

    #[test]
    fn valid_utf8_is_untouched() {
        assert_eq!(fixed("héllo €".as_bytes(), Encoding::Utf8, false), None);
    }

    #[test]
    fn invalid_bytes_are_replaced() {
        assert_eq!(
            fixed(b"caf\xe9 ok\xff", Encoding::Utf8, false).unwrap(),
            "caf\u{FFFD} ok\u{FFFD}"
        );
    }

    #[test]
    fn invalid_bytes_as_latin1_keep_valid_utf8() {
        assert_eq!(
            fixed("caf\u{e9} \u{20ac}".as_bytes(), Encoding::Latin1, false),
            None
        );
        assert_eq!(
            fixed(b"caf\xe9 \xe2\x82\xac \xff", Encoding::Latin1, false).unwrap(),
            "café € ÿ"
        );
    }

    #[test]
    fn a_cut_character_at_the_end_is_removed_not_replaced() {
        let s = "ab€".as_bytes();
        assert_eq!(fixed(&s[..3], Encoding::Utf8, true).unwrap(), "ab");
        // Without the cut flag it is bad data.
        assert_eq!(fixed(&s[..3], Encoding::Utf8, false).unwrap(), "ab\u{FFFD}");
    }

    #[test]
    fn floor_boundary_backs_off_to_a_char_start() {
        let s = "a€b".as_bytes(); // a, e2 82 ac, b
        assert_eq!(floor_boundary(s, 10), 5);
        assert_eq!(floor_boundary(s, 4), 4);
        assert_eq!(floor_boundary(s, 3), 1);
        assert_eq!(floor_boundary(s, 2), 1);
        assert_eq!(floor_boundary(s, 1), 1);
        assert_eq!(floor_boundary(b"\x80\x80\x80\x80\x80\x80", 5), 5);
    }
}
