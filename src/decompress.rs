//! Decompress stage: picks the codec of an object by its magic bytes (not its name) and wraps
//! the byte stream in the matching streaming decoder.
//!
//! Works on blocking readers; never buffers a whole object. It does not split or decode text.

use std::io::{BufRead, BufReader};

use flate2::bufread::MultiGzDecoder;

/// Read buffer of the decoders, in bytes.
const BUF_BYTES: usize = 64 * 1024;

/// A compression format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Not compressed (or not a format we recognise: treated as text).
    Plain,
    /// gzip, one or several members.
    Gzip,
}

impl Codec {
    /// Lower-case name, for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Plain => "plain",
            Codec::Gzip => "gzip",
        }
    }
}

/// Hints besides the magic bytes.
#[derive(Debug, Clone, Default)]
pub struct Hints {
    /// The object's `Content-Encoding`, if any.
    pub content_encoding: Option<String>,
    /// The Devo parameter `compressed_events`: treat the object as gzip whatever it looks like.
    pub force_gzip: bool,
}

/// Why an object could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error("reading the first bytes: {0}")]
    Read(#[from] std::io::Error),
}

/// Finds the codec from the first bytes of an object.
pub fn sniff(prefix: &[u8]) -> Codec {
    if prefix.starts_with(&[0x1f, 0x8b]) {
        Codec::Gzip
    } else {
        Codec::Plain
    }
}

/// Wraps `input` in the decoder its first bytes call for.
pub fn open<'a>(
    input: Box<dyn BufRead + Send + 'a>,
    hints: &Hints,
) -> Result<(Codec, Box<dyn BufRead + Send + 'a>), DecompressError> {
    let mut input = input;
    let codec = if hints.force_gzip {
        Codec::Gzip
    } else {
        sniff(input.fill_buf()?)
    };
    let reader: Box<dyn BufRead + Send + 'a> = match codec {
        Codec::Plain => input,
        Codec::Gzip => Box::new(BufReader::with_capacity(
            BUF_BYTES,
            MultiGzDecoder::new(input),
        )),
    };
    Ok((codec, reader))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn multi_member_gzip() {
        let mut data = gzip(b"one\n");
        data.extend(gzip(b"two\n"));
        let (codec, mut r) = open(Box::new(&data[..]), &Hints::default()).unwrap();
        assert_eq!(codec, Codec::Gzip);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "one\ntwo\n");
    }

    #[test]
    fn plain() {
        let (codec, mut r) = open(Box::new(&b"abc"[..]), &Hints::default()).unwrap();
        assert_eq!(codec, Codec::Plain);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");
    }
}
