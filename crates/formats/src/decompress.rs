//! Decompress stage: picks the codec of an object by its magic bytes (not its name) and wraps
//! the byte stream in the matching streaming decoder: gzip (every member), zlib, zstd (every
//! frame), bzip2 (every stream), framed snappy, or none.
//!
//! Order of decision: `force_gzip` (the Devo parameter `compressed_events`) wins; then the magic
//! bytes; only when they say "plain" does a known `Content-Encoding` choose the codec (S3 hands
//! objects over as stored, so magic bytes are the better witness, and some uploaders set
//! encodings such as `aws-chunked` that mean nothing here). Parquet (`PAR1`) passes through as
//! plain bytes: the processor recognises it.
//!
//! Decoder errors are I/O errors that name the codec and the compressed byte offset, so a
//! truncated gzip or garbage after a member reads as such. gzip and zlib hand over every byte
//! inflated before corrupt data, the error coming on the next read (flate2's own readers drop
//! the output of the call that meets the damage), so the events before it are not lost. Works on blocking readers; never
//! buffers a whole object. It does not split or decode text.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::{Decompress, FlushDecompress, Status};

/// Read buffer of the decoders, in bytes.
const BUF_BYTES: usize = 64 * 1024;

/// A compression format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Not compressed (or not a format we recognise: treated as text).
    Plain,
    /// gzip, one or several members.
    Gzip,
    /// zlib (RFC 1950), e.g. Imperva payloads.
    Zlib,
    /// zstd, one or several frames.
    Zstd,
    /// bzip2, one or several streams.
    Bzip2,
    /// Snappy framing format (`sNaPpY` stream identifier).
    Snappy,
}

impl Codec {
    /// Lower-case name, for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Plain => "plain",
            Codec::Gzip => "gzip",
            Codec::Zlib => "zlib",
            Codec::Zstd => "zstd",
            Codec::Bzip2 => "bzip2",
            Codec::Snappy => "snappy",
        }
    }

    /// The codec a `Content-Encoding` value names, if any (`identity` and unknown values:
    /// none). For a list, the first known entry.
    pub fn from_content_encoding(value: &str) -> Option<Codec> {
        value
            .split(',')
            .map(|v| v.trim().to_ascii_lowercase())
            .find_map(|v| match v.as_str() {
                "gzip" | "x-gzip" => Some(Codec::Gzip),
                "deflate" | "zlib" => Some(Codec::Zlib),
                "zstd" => Some(Codec::Zstd),
                "bzip2" | "x-bzip2" => Some(Codec::Bzip2),
                "snappy" | "x-snappy-framed" => Some(Codec::Snappy),
                _ => None,
            })
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

/// Finds the codec from the first bytes of an object (at least 10 bytes when available).
pub fn sniff(prefix: &[u8]) -> Codec {
    const SNAPPY: &[u8] = b"\xff\x06\x00\x00sNaPpY";
    if prefix.starts_with(&[0x1f, 0x8b]) {
        Codec::Gzip
    } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Codec::Zstd
    } else if prefix.len() >= 4 && prefix.starts_with(b"BZh") && (b'1'..=b'9').contains(&prefix[3])
    {
        Codec::Bzip2
    } else if prefix.starts_with(SNAPPY) {
        Codec::Snappy
    } else if prefix.len() >= 2
        && prefix[0] == 0x78
        && [0x01, 0x5e, 0x9c, 0xda].contains(&prefix[1])
    {
        // The four zlib headers encoders write (32 KiB window, each compression level). Other
        // valid CMF/FLG pairs are printable text ("HK…") and would misread plain objects.
        Codec::Zlib
    } else {
        Codec::Plain
    }
}

/// Wraps `input` in the decoder its first bytes (or the hints) call for.
pub fn open<'a>(
    input: Box<dyn BufRead + Send + 'a>,
    hints: &Hints,
) -> Result<(Codec, Box<dyn BufRead + Send + 'a>), DecompressError> {
    let mut input = input;
    let codec = if hints.force_gzip {
        Codec::Gzip
    } else {
        let prefix = first_bytes(&mut input)?;
        match sniff(prefix) {
            Codec::Plain => hints
                .content_encoding
                .as_deref()
                .and_then(Codec::from_content_encoding)
                .unwrap_or(Codec::Plain),
            codec => codec,
        }
    };
    if codec == Codec::Plain {
        return Ok((codec, input));
    }
    let consumed = Arc::new(AtomicU64::new(0));
    let counted = Counted {
        inner: input,
        consumed: consumed.clone(),
    };
    let decoder: Box<dyn Read + Send + 'a> = match codec {
        Codec::Plain => unreachable!("returned above"),
        Codec::Gzip => Box::new(Inflate::gzip(counted)),
        Codec::Zlib => Box::new(Inflate::zlib(counted)),
        Codec::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(counted)?),
        Codec::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(counted)),
        Codec::Snappy => Box::new(snap::read::FrameDecoder::new(counted)),
    };
    let reader = Labelled {
        inner: decoder,
        codec,
        consumed,
    };
    Ok((codec, Box::new(BufReader::with_capacity(BUF_BYTES, reader))))
}

/// The first buffer of the object (sniffing looks at most at 10 bytes; readers buffer KiBs).
fn first_bytes<'b>(input: &'b mut Box<dyn BufRead + Send + '_>) -> io::Result<&'b [u8]> {
    loop {
        match input.fill_buf() {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    input.fill_buf()
}

/// gzip (every member) or zlib over a `BufRead`, with zlib-rs through flate2's `Decompress`.
///
/// flate2's readers drop the bytes inflated in the call that meets corrupt data (they return
/// the error, not the count), so up to a buffer of good data before the damage would never
/// reach the processor. This one returns those bytes first and the error on the next call.
struct Inflate<R> {
    inner: R,
    z: Decompress,
    /// gzip: a new member may follow the end of one; zlib: one stream.
    multi: bool,
    /// The last stream ended: a gzip member may follow, or the data ends.
    ended: bool,
    /// An error met after some output, returned by the next call.
    pending: Option<io::Error>,
}

impl<R: BufRead> Inflate<R> {
    fn gzip(inner: R) -> Self {
        Inflate {
            inner,
            z: Decompress::new_gzip(15),
            multi: true,
            ended: false,
            pending: None,
        }
    }

    fn zlib(inner: R) -> Self {
        Inflate {
            inner,
            z: Decompress::new(true),
            multi: false,
            ended: false,
            pending: None,
        }
    }
}

impl<R: BufRead> Read for Inflate<R> {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        if dst.is_empty() {
            return Ok(0);
        }
        loop {
            let input = self.inner.fill_buf()?;
            let eof = input.is_empty();
            if self.ended {
                if eof || !self.multi {
                    return Ok(0);
                }
                // Another member: the gzip mode survives the reset.
                self.z.reset(true);
                self.ended = false;
            }
            let (before_in, before_out) = (self.z.total_in(), self.z.total_out());
            let flush = if eof {
                FlushDecompress::Finish
            } else {
                FlushDecompress::None
            };
            let status = self.z.decompress(input, dst, flush);
            let consumed = (self.z.total_in() - before_in) as usize;
            let read = (self.z.total_out() - before_out) as usize;
            self.inner.consume(consumed);
            match status {
                Ok(Status::StreamEnd) => {
                    self.ended = true;
                    if read > 0 {
                        return Ok(read);
                    }
                }
                Ok(_) if read > 0 => return Ok(read),
                Ok(_) if eof => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the stream ends inside a member",
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    let e = io::Error::new(io::ErrorKind::InvalidData, e);
                    if read > 0 {
                        self.pending = Some(e);
                        return Ok(read);
                    }
                    return Err(e);
                }
            }
        }
    }
}

/// Counts the compressed bytes the decoder consumed, for error messages.
struct Counted<R> {
    inner: R,
    consumed: Arc<AtomicU64>,
}

impl<R: BufRead> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.consumed.fetch_add(amt as u64, Ordering::Relaxed);
        self.inner.consume(amt)
    }
}

/// Names the codec and the compressed offset in decoder errors, and turns a decoder's early
/// end-of-data into an `UnexpectedEof` that says the object is truncated.
struct Labelled<R> {
    inner: R,
    codec: Codec,
    consumed: Arc<AtomicU64>,
}

impl<R: Read> Read for Labelled<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            let at = self.consumed.load(Ordering::Relaxed);
            let kind = e.kind();
            let what = if kind == io::ErrorKind::UnexpectedEof {
                "truncated data"
            } else {
                "corrupt data"
            };
            io::Error::new(
                kind,
                format!(
                    "{}: {what} near compressed byte {at}: {e}",
                    self.codec.name()
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn read_all(data: &[u8], hints: &Hints) -> (Codec, io::Result<Vec<u8>>) {
        let (codec, mut r) = open(Box::new(data), hints).unwrap();
        let mut out = Vec::new();
        let res = r.read_to_end(&mut out).map(|_| out);
        (codec, res)
    }

    #[test]
    fn multi_member_gzip() {
        let mut data = gzip(b"one\n");
        data.extend(gzip(b"two\n"));
        let (codec, out) = read_all(&data, &Hints::default());
        assert_eq!(codec, Codec::Gzip);
        assert_eq!(out.unwrap(), b"one\ntwo\n");
    }

    #[test]
    fn plain() {
        let (codec, out) = read_all(b"abc", &Hints::default());
        assert_eq!(codec, Codec::Plain);
        assert_eq!(out.unwrap(), b"abc");
        let (codec, out) = read_all(b"", &Hints::default());
        assert_eq!((codec, out.unwrap()), (Codec::Plain, vec![]));
    }

    #[test]
    fn every_codec_by_magic() {
        let text = b"line one\nline two\n".repeat(50);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&text).unwrap();
        let zlib = zlib.finish().unwrap();
        let mut zst = zstd::stream::encode_all(&text[..], 3).unwrap();
        zst.extend(zstd::stream::encode_all(&b"second frame\n"[..], 3).unwrap());
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&text).unwrap();
        let bz = bz.finish().unwrap();
        let mut sn = snap::write::FrameEncoder::new(Vec::new());
        sn.write_all(&text).unwrap();
        let sn = sn.into_inner().unwrap();
        let mut text_zst = text.clone();
        text_zst.extend_from_slice(b"second frame\n");
        for (data, codec, want) in [
            (zlib, Codec::Zlib, &text),
            (zst, Codec::Zstd, &text_zst),
            (bz, Codec::Bzip2, &text),
            (sn, Codec::Snappy, &text),
        ] {
            let (got_codec, out) = read_all(&data, &Hints::default());
            assert_eq!(got_codec, codec);
            assert_eq!(&out.unwrap(), want, "{codec:?}");
        }
    }

    #[test]
    fn text_that_resembles_no_magic_stays_plain() {
        for text in [
            &b"HKEY_LOCAL_MACHINE"[..],
            b"xyz",
            b"BZh",
            b"BZhx",
            b"PAR1...",
            b"{\"a\":1}",
        ] {
            assert_eq!(sniff(text), Codec::Plain, "{text:?}");
        }
    }

    #[test]
    fn content_encoding_used_when_magic_says_plain() {
        let hints = Hints {
            content_encoding: Some("gzip".into()),
            force_gzip: false,
        };
        // Already-gzip bytes: magic agrees.
        let (codec, out) = read_all(&gzip(b"a"), &hints);
        assert_eq!((codec, out.unwrap()), (Codec::Gzip, b"a".to_vec()));
        // Plain bytes claimed to be gzip: decoded as gzip, and fail clearly.
        let (codec, out) = read_all(b"not gzip at all", &hints);
        assert_eq!(codec, Codec::Gzip);
        assert!(out.unwrap_err().to_string().starts_with("gzip:"));
        // Unknown encodings are ignored.
        let hints = Hints {
            content_encoding: Some("aws-chunked".into()),
            force_gzip: false,
        };
        assert_eq!(read_all(b"abc", &hints).0, Codec::Plain);
        assert_eq!(
            Codec::from_content_encoding("aws-chunked, ZSTD"),
            Some(Codec::Zstd)
        );
    }

    #[test]
    fn force_gzip_wins() {
        let hints = Hints {
            content_encoding: None,
            force_gzip: true,
        };
        let (codec, out) = read_all(b"plain", &hints);
        assert_eq!(codec, Codec::Gzip);
        assert!(out.is_err());
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let data = gzip(&b"some text that compresses\n".repeat(100));
        let (_, out) = read_all(&data[..data.len() / 2], &Hints::default());
        let err = out.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        assert!(err.to_string().contains("gzip: truncated data"), "{err}");
        // Missing only the trailer (CRC + size) is truncation too.
        let (_, out) = read_all(&data[..data.len() - 4], &Hints::default());
        assert!(out.is_err());
    }

    #[test]
    fn corrupt_gzip_gives_every_byte_before_the_damage() {
        // A sync flush ends a block on a byte boundary; the next block header is overwritten
        // with the reserved block type. The damage sits well inside one 64 KiB read.
        let text: Vec<u8> = (0..2000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&text[..10_000]).unwrap();
        enc.flush().unwrap();
        let at = enc.get_ref().len();
        enc.write_all(&text[10_000..]).unwrap();
        let mut data = enc.finish().unwrap();
        data[at] = 0x07;
        let (_, mut r) = open(Box::new(&data[..]), &Hints::default()).unwrap();
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(out, &text[..10_000]);
        assert!(err.to_string().starts_with("gzip: corrupt data"), "{err}");
        // zlib too.
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&text[..10_000]).unwrap();
        enc.flush().unwrap();
        let at = enc.get_ref().len();
        enc.write_all(&text[10_000..]).unwrap();
        let mut data = enc.finish().unwrap();
        data[at] = 0x07;
        let (_, out) = read_all(&data, &Hints::default());
        assert!(out.is_err());
        let (_, mut r) = open(Box::new(&data[..]), &Hints::default()).unwrap();
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
        assert_eq!(out, &text[..10_000]);
    }

    #[test]
    fn empty_gzip_members_and_zlib_trailing_bytes() {
        let mut data = gzip(b"");
        data.extend(gzip(b"x\n"));
        data.extend(gzip(b""));
        assert_eq!(read_all(&data, &Hints::default()).1.unwrap(), b"x\n");
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"zlib\n").unwrap();
        let mut data = z.finish().unwrap();
        data.extend_from_slice(b"trailing");
        assert_eq!(read_all(&data, &Hints::default()).1.unwrap(), b"zlib\n");
    }

    #[test]
    fn garbage_after_a_gzip_member_is_an_error() {
        let mut data = gzip(b"good\n");
        let good_len = data.len();
        data.extend_from_slice(b"GARBAGE GARBAGE");
        let (_, out) = read_all(&data, &Hints::default());
        let err = out.unwrap_err();
        assert!(err.to_string().starts_with("gzip: corrupt data"), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("compressed byte {}", good_len + 15))
                || err.to_string().contains("compressed byte"),
            "{err}"
        );
    }
}
