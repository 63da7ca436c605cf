//! Devo lines as the relay writes them (`<PRI>Mmm dd HH:MM:SS HOST TAG: MESSAGE\n`): parsing,
//! byte-for-byte checks, the tests' event ids, counting messages.

use std::collections::{BTreeMap, HashSet};

use crate::process::Proc;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// True for a date `Mmm dd HH:MM:SS` (day padded with a space, not a zero).
pub fn is_devo_date(date: &[u8]) -> bool {
    let Ok(d) = std::str::from_utf8(date) else {
        return false;
    };
    if d.len() != 15 || !MONTHS.contains(&&d[..3]) || &d[3..4] != " " || &d[6..7] != " " {
        return false;
    }
    let day = &date[4..6];
    let day_ok = matches!(
        day,
        [b' ', b'1'..=b'9'] | [b'1'..=b'2', b'0'..=b'9'] | [b'3', b'0'..=b'1']
    );
    let time_ok = d[7..].char_indices().all(|(i, c)| {
        if i == 2 || i == 5 {
            c == ':'
        } else {
            c.is_ascii_digit()
        }
    });
    day_ok && time_ok
}

/// Splits a Devo line `<14>Mmm dd HH:MM:SS HOST TAG: MESSAGE` into (host, tag, message),
/// checking the fixed parts.
pub fn parse_devo_line(line: &str) -> Option<(&str, &str, &str)> {
    let rest = line.strip_prefix("<14>")?;
    let (date, rest) = rest.split_at_checked(15)?;
    if !is_devo_date(date.as_bytes()) {
        return None;
    }
    let rest = rest.strip_prefix(' ')?;
    let (host, rest) = rest.split_once(' ')?;
    let (tag, message) = rest.split_once(": ")?;
    Some((host, tag, message))
}

/// Checks a Devo line `<PRI>Mmm dd HH:MM:SS HOST TAG: MESSAGE\n` byte for byte, date aside.
pub fn assert_devo_line(line: &[u8], pri: &str, host: &str, tag: &str, message: &str) {
    let text = String::from_utf8_lossy(line);
    let prefix = format!("<{pri}>");
    assert!(text.starts_with(&prefix), "{text:?}");
    let date = &line[prefix.len()..prefix.len() + 15];
    assert_date(date);
    let rest = &line[prefix.len() + 15..];
    assert_eq!(
        String::from_utf8_lossy(rest),
        format!(" {host} {tag}: {message}\n"),
        "in {text:?}"
    );
}

/// Asserts `Mmm dd HH:MM:SS`, day padded with a space.
pub fn assert_date(date: &[u8]) {
    assert!(
        is_devo_date(date),
        "not a Devo date (`Mmm dd HH:MM:SS`, day padded with a space): {:?}",
        String::from_utf8_lossy(date)
    );
}

/// The first word of each received line's message (the tests' event ids).
pub fn ids(lines: &[Vec<u8>]) -> HashSet<String> {
    lines
        .iter()
        .filter_map(|l| {
            let text = String::from_utf8_lossy(l);
            let msg = text.split_once(": ")?.1;
            Some(msg.split(' ').next()?.to_string())
        })
        .collect()
}

/// Devo messages the relay printed on stdout, counted; every line must be a Devo line with
/// `tag` (and `host`, when given).
pub fn relay_messages(relay: &Proc, host: Option<&str>, tag: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for line in relay.stdout.snapshot() {
        let (h, t, message) =
            parse_devo_line(&line).unwrap_or_else(|| panic!("not a Devo line: {line:.200}"));
        if let Some(host) = host {
            assert_eq!(h, host);
        }
        assert_eq!(t, tag);
        *seen.entry(message.to_string()).or_insert(0) += 1;
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_lines() {
        assert!(is_devo_date(b"Jan  1 00:00:00"));
        assert!(is_devo_date(b"Dec 31 23:59:59"));
        assert!(!is_devo_date(b"Jan 01 00:00:00"));
        assert!(!is_devo_date(b"Foo  1 00:00:00"));
        assert!(!is_devo_date(b"Jan  1 00-00:00"));
        assert_eq!(
            parse_devo_line("<14>Feb  3 04:05:06 host my.tag: hello: world"),
            Some(("host", "my.tag", "hello: world"))
        );
        assert_devo_line(b"<14>Feb 13 04:05:06 h t: m\n", "14", "h", "t", "m");
        let ids = ids(&[b"<14>Feb 13 04:05:06 h t: 17 rest\n".to_vec()]);
        assert!(ids.contains("17"));
    }
}
