//! The roofline: the cost of the work no pipeline can avoid, measured on the same corpus in one
//! process, one part at a time, as CPU seconds (of the measuring thread) per GB of raw events:
//!
//! 1. gunzip the objects (flate2, zlib-rs backend, the collector's);
//! 2. split into records: CloudTrail with a borrowed raw-value splitter
//!    (`serde_json::value::RawValue`), VPC flow by newline (header skipped), CloudWatch Logs
//!    documents with a streaming deserializer over raw entries (envelope fields appended, as
//!    the collector's default output has them);
//! 3. frame: the channel line `TAG SP MESSAGE LF` and the Devo line
//!    `<PRI>Mmm dd HH:MM:SS HOST TAG: MESSAGE LF`;
//! 4. the channel: gzip the lines in batches (4 MiB, like the collector's default cut) at the
//!    configured level, and gunzip them again (what the relay must do);
//! 5. TLS write: the Devo lines through rustls (ring, AES-GCM) over a loopback TCP socket to a
//!    reader thread whose decryption is not counted (that is the receiver's work).
//!
//! "GB" is 10^9 bytes of decompressed object data.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::corpus::{Kind, Manifest};
use sluice_testkit::pki::Pki;
use sluice_testkit::procstat::thread_cpu;

/// Channel batch cut, bytes (the collector's `batch.max_bytes` default).
pub const BATCH_BYTES: usize = 4 << 20;
/// The Devo header the relay writes (fixed date: formatting it is per batch, not per event).
const DEVO_HEADER: &[u8] = b"<14>Jan  1 00:00:00 benchhost ";

/// The parts of the roofline, in order.
pub const PARTS: [&str; 6] = [
    "gunzip objects",
    "split records",
    "frame (channel + Devo lines)",
    "channel gzip",
    "channel gunzip",
    "TLS write (AES-GCM)",
];

/// One corpus's roofline.
#[derive(Debug, Clone, Default)]
pub struct Roofline {
    pub kind: Option<Kind>,
    pub level: u32,
    pub objects: u64,
    pub events: u64,
    pub raw_bytes: u64,
    /// Channel batch bytes before and after gzip.
    pub channel_raw: u64,
    pub channel_gz: u64,
    /// Devo bytes written through TLS.
    pub devo_bytes: u64,
    /// CPU time of each part (see [`PARTS`]).
    pub cpu: [Duration; 6],
}

impl Roofline {
    /// CPU seconds per GB of raw events of part `i`.
    pub fn per_gb(&self, i: usize) -> f64 {
        self.cpu[i].as_secs_f64() / (self.raw_bytes as f64 / 1e9)
    }
    /// The whole roofline, CPU-s per GB.
    pub fn total_per_gb(&self) -> f64 {
        (0..PARTS.len()).map(|i| self.per_gb(i)).sum()
    }
}

#[derive(Deserialize)]
struct Trail<'a> {
    #[serde(borrow, rename = "Records")]
    records: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct CwDoc<'a> {
    #[serde(borrow)]
    owner: &'a RawValue,
    #[serde(borrow)]
    logGroup: &'a RawValue,
    #[serde(borrow)]
    logStream: &'a RawValue,
    #[serde(borrow)]
    logEvents: Vec<&'a RawValue>,
}

/// Times `f` on this thread's CPU clock.
fn timed<T>(acc: &mut Duration, f: impl FnOnce() -> T) -> T {
    let t0 = thread_cpu();
    let r = f();
    *acc += thread_cpu() - t0;
    r
}

/// A rustls client over loopback TCP to a thread that reads and discards.
struct TlsLoop {
    stream: rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    reader: Option<std::thread::JoinHandle<u64>>,
}

impl TlsLoop {
    fn start(pki_dir: &Path) -> anyhow::Result<TlsLoop> {
        let pki = Pki::generate(pki_dir, "", "sluice-bench CA", &["localhost", "127.0.0.1"])?;
        let server = sluice_testkit::tls::server_config(&pki.server_tls(&pki))?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let reader = std::thread::spawn(move || -> u64 {
            let Ok((tcp, _)) = listener.accept() else {
                return 0;
            };
            let Ok(conn) = rustls::ServerConnection::new(server) else {
                return 0;
            };
            let mut s = rustls::StreamOwned::new(conn, tcp);
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n as u64,
                }
            }
        });
        let mut stream = sluice_testkit::tls::connect(&pki, addr)?;
        // Finish the handshake before anything is timed.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsLoop {
            stream,
            reader: Some(reader),
        })
    }

    fn finish(mut self) -> u64 {
        self.stream.conn.send_close_notify();
        let _ = self.stream.flush();
        let _ = self.stream.sock.shutdown(std::net::Shutdown::Write);
        self.reader
            .take()
            .map(|r| r.join().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// Splits one decompressed object into events, appended to `events` as byte ranges of
/// `raw` or (CloudWatch, reshaped) of `arena`.
pub fn split<'a>(
    kind: Kind,
    raw: &'a [u8],
    arena: &'a mut Vec<u8>,
) -> anyhow::Result<Vec<&'a [u8]>> {
    Ok(match kind {
        Kind::Cloudtrail | Kind::Large => {
            let trail: Trail<'a> = serde_json::from_slice(raw)?;
            trail
                .records
                .into_iter()
                .map(|r| r.get().as_bytes())
                .collect()
        }
        Kind::VpcFlow => {
            let mut lines = raw.split(|&b| b == b'\n');
            lines.next(); // the header
            lines.filter(|l| !l.is_empty()).collect()
        }
        Kind::Cloudwatch => {
            let mut ranges = Vec::new();
            arena.clear();
            for doc in serde_json::Deserializer::from_slice(raw).into_iter::<CwDoc<'_>>() {
                let doc = doc?;
                for entry in doc.logEvents {
                    let e = entry.get().as_bytes();
                    let start = arena.len();
                    arena.extend_from_slice(&e[..e.len() - 1]);
                    arena.extend_from_slice(br#","logGroup":"#);
                    arena.extend_from_slice(doc.logGroup.get().as_bytes());
                    arena.extend_from_slice(br#","logStream":"#);
                    arena.extend_from_slice(doc.logStream.get().as_bytes());
                    arena.extend_from_slice(br#","owner":"#);
                    arena.extend_from_slice(doc.owner.get().as_bytes());
                    arena.push(b'}');
                    ranges.push((start, arena.len()));
                }
            }
            let arena: &'a Vec<u8> = arena;
            ranges.into_iter().map(|(s, e)| &arena[s..e]).collect()
        }
    })
}

/// The Devo tag the collector gives this corpus by default.
pub fn tag_of(kind: Kind) -> &'static str {
    match kind {
        Kind::Cloudtrail | Kind::Large => "cloud.aws.cloudtrail.events",
        Kind::VpcFlow => "cloud.aws.vpc.flow",
        Kind::Cloudwatch => "cloud.aws.cloudwatch.logs",
    }
}

/// Measures the roofline of the corpus in `dir` with the channel at gzip `level`.
/// `pki_dir` receives throwaway certificates for the TLS part.
pub fn measure(dir: &Path, level: u32, pki_dir: &Path) -> anyhow::Result<Roofline> {
    let manifest = Manifest::load(dir)?;
    let kind = manifest.kind;
    let tag = tag_of(kind).as_bytes();
    let mut r = Roofline {
        kind: Some(kind),
        level,
        ..Roofline::default()
    };
    let mut tls = TlsLoop::start(pki_dir)?;
    let mut raw = Vec::new();
    let mut arena = Vec::new();
    let mut channel = Vec::with_capacity(BATCH_BYTES + (1 << 20));
    let mut devo = Vec::with_capacity(BATCH_BYTES + (1 << 20));
    let mut back = vec![0u8; 256 * 1024];
    let mut gz_out = Vec::with_capacity(BATCH_BYTES);
    for object in &manifest.objects {
        let compressed = std::fs::read(dir.join(&object.file))?;
        raw.clear();
        timed(&mut r.cpu[0], || {
            MultiGzDecoder::new(&compressed[..]).read_to_end(&mut raw)
        })?;
        r.raw_bytes += raw.len() as u64;
        r.objects += 1;
        let events = timed(&mut r.cpu[1], || split(kind, &raw, &mut arena))?;
        r.events += events.len() as u64;
        let mut i = 0;
        while i < events.len() {
            // One batch: frame lines until the cut.
            channel.clear();
            devo.clear();
            let start = i;
            timed(&mut r.cpu[2], || {
                while i < events.len() && channel.len() < BATCH_BYTES {
                    let m = events[i];
                    channel.extend_from_slice(tag);
                    channel.push(b' ');
                    channel.extend_from_slice(m);
                    channel.push(b'\n');
                    devo.extend_from_slice(DEVO_HEADER);
                    devo.extend_from_slice(tag);
                    devo.extend_from_slice(b": ");
                    devo.extend_from_slice(m);
                    devo.push(b'\n');
                    i += 1;
                }
            });
            debug_assert!(i > start);
            r.channel_raw += channel.len() as u64;
            gz_out.clear();
            timed(&mut r.cpu[3], || -> std::io::Result<()> {
                let mut e = GzEncoder::new(&mut gz_out, Compression::new(level));
                e.write_all(&channel)?;
                e.finish()?;
                Ok(())
            })?;
            r.channel_gz += gz_out.len() as u64;
            let back_len = timed(&mut r.cpu[4], || -> std::io::Result<u64> {
                let mut d = MultiGzDecoder::new(&gz_out[..]);
                let mut n = 0u64;
                loop {
                    let k = d.read(&mut back)?;
                    if k == 0 {
                        return Ok(n);
                    }
                    n += k as u64;
                }
            })?;
            anyhow::ensure!(
                back_len == channel.len() as u64,
                "channel round trip lost bytes"
            );
            r.devo_bytes += devo.len() as u64;
            timed(&mut r.cpu[5], || -> std::io::Result<()> {
                for chunk in devo.chunks(256 * 1024) {
                    tls.stream.write_all(chunk)?;
                }
                tls.stream.flush()
            })?;
        }
    }
    let received = tls.finish();
    anyhow::ensure!(
        received == r.devo_bytes,
        "TLS reader got {received} of {} bytes",
        r.devo_bytes
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitters() {
        let mut arena = Vec::new();
        let ct = br#"{"Records":[{"a":1},{"b":[2,{"c":3}]}]}"#;
        let ev = split(Kind::Cloudtrail, ct, &mut arena).unwrap();
        assert_eq!(ev, vec![&br#"{"a":1}"#[..], &br#"{"b":[2,{"c":3}]}"#[..]]);
        let vpc = b"version x\n2 a\n2 b\n";
        assert_eq!(split(Kind::VpcFlow, vpc, &mut arena).unwrap().len(), 2);
        let cw = br#"{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"g","logStream":"s","subscriptionFilters":[],"logEvents":[{"id":"1","message":"m"}]}{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"g","logStream":"s","subscriptionFilters":[],"logEvents":[]}"#;
        let ev = split(Kind::Cloudwatch, cw, &mut arena).unwrap();
        assert_eq!(
            ev,
            vec![&br#"{"id":"1","message":"m","logGroup":"g","logStream":"s","owner":"1"}"#[..]]
        );
    }
}
