//! Imperva Cloud WAF (Incapsula) SIEM log files: a `key:value` header (`accountId:`, `configId:`,
//! `checksum:`, `format:`, …) ended by a `|==|` line, then the payload — zlib-compressed unless
//! compression was turned off. Recognised by its first bytes under any processor; the header is
//! skipped (counted in `skipped_lines`) and the payload is inflated when it is zlib, so `lines`
//! then sees one CEF/LEEF/W3C line per event.
//!
//! It does not decrypt: a header with `key:` (encrypted payload) is an error. It does not verify
//! the checksum.

use std::io::BufRead;

use super::ProcessError;

/// The first bytes of an Imperva log file.
pub(crate) const MAGIC: &[u8] = b"accountId:";

/// Longest header accepted, in lines.
const MAX_HEADER_LINES: usize = 64;

/// What the header said about the payload.
pub(crate) struct Header {
    /// Header lines skipped, the `|==|` line included.
    pub lines: u64,
    /// Bytes consumed.
    pub bytes: u64,
    /// The payload starts with a zlib header.
    pub zlib: bool,
}

/// Consumes the header through its `|==|` line.
pub(crate) fn skip_header(input: &mut dyn BufRead) -> Result<Header, ProcessError> {
    let mut line = Vec::new();
    let mut header = Header {
        lines: 0,
        bytes: 0,
        zlib: false,
    };
    loop {
        line.clear();
        let n = std::io::Read::take(&mut *input, 4096)
            .read_until(b'\n', &mut line)
            .map_err(|source| ProcessError::Read {
                offset: header.bytes,
                source,
            })?;
        if n == 0 || header.lines as usize >= MAX_HEADER_LINES || line.last() != Some(&b'\n') {
            return Err(ProcessError::Envelope {
                offset: header.bytes,
                reason: "Imperva header without its |==| line",
            });
        }
        header.bytes += n as u64;
        header.lines += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text == b"|==|" {
            break;
        }
        if text.starts_with(b"key:") {
            return Err(ProcessError::Envelope {
                offset: header.bytes,
                reason: "encrypted Imperva payload (key: header) is not supported",
            });
        }
    }
    let head = input.fill_buf().map_err(|source| ProcessError::Read {
        offset: header.bytes,
        source,
    })?;
    header.zlib = head.len() >= 2 && head[0] == 0x78 && [0x01, 0x5e, 0x9c, 0xda].contains(&head[1]);
    Ok(header)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::testutil::*;
    use super::super::{ProcessError, ProcessorKind, ProcessorSpec};

    const HEADER: &[u8] = b"accountId:1\nconfigId:2\nchecksum:x\nformat:CEF\n|==|\n";
    const CEF: &[u8] = b"CEF:0|Incapsula|SIEMintegration|1|1|a|3| x=1\nCEF:0|Incapsula|SIEMintegration|1|1|b|3| x=2\n";

    #[test]
    fn uncompressed_payload() {
        let mut data = HEADER.to_vec();
        data.extend_from_slice(CEF);
        let (stats, msgs) = run(&data, &ProcessorSpec::new(ProcessorKind::Lines));
        assert_eq!(msgs.len(), 2);
        assert!(msgs[1].ends_with("x=2"));
        assert_eq!(stats.skipped_lines, 5);
        assert_eq!(stats.bytes_in, data.len() as u64);
    }

    #[test]
    fn zlib_payload() {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(CEF).unwrap();
        let mut data = HEADER.to_vec();
        data.extend(z.finish().unwrap());
        let (stats, msgs) = run(&data, &ProcessorSpec::new(ProcessorKind::Lines));
        assert_eq!(msgs.len(), 2);
        assert!(msgs[0].ends_with("x=1"));
        assert_eq!(stats.skipped_lines, 5);
    }

    #[test]
    fn encrypted_or_unterminated_headers_fail() {
        let (r, _) = run_key(
            b"accountId:1\nkey:abc\n|==|\nxx",
            &ProcessorSpec::new(ProcessorKind::Lines),
            "k",
        );
        assert!(matches!(r, Err(ProcessError::Envelope { .. })), "{r:?}");
        let (r, _) = run_key(
            b"accountId:1\nno end",
            &ProcessorSpec::new(ProcessorKind::Lines),
            "k",
        );
        assert!(matches!(r, Err(ProcessError::Envelope { .. })), "{r:?}");
    }
}
