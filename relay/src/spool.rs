//! The crash-safe disk spool: an append-only log of segment files holding every accepted batch
//! as received (compressed), with per-output cursors and a bounded window of idempotency keys.
//!
//! Layout under `spool.dir`:
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: segments, numbered in order. A record is
//!   `magic "SLR1" | payload length u32 LE | crc32 of payload u32 LE | payload`, the payload
//!   `key length u8 | key | events u64 LE | body`.
//! - `keys.log`: `KEY EVENTS SEGMENT OFFSET` lines, the idempotency keys of stored batches and
//!   where their records start (bounded window, compacted by rewrite + rename). Lines
//!   `KEY EVENTS` of older relays still parse (no location known).
//! - `cursor-NAME`: `SEGMENT OFFSET`, how far output NAME has delivered.
//! - `lock`: held with flock so two relays never share a spool.
//!
//! One writer thread owns every file it changes: it takes appends in groups, writes them, makes
//! them durable with one `fdatasync` per group (group commit) and only then answers each of them
//! and publishes the new durable end to the readers. The same thread persists cursors and
//! deletes segments that every output has passed (after syncing `keys.log`, so the keys of a
//! deleted segment are durable elsewhere).
//!
//! Damage never costs more than the damaged bytes. At start every segment is verified record
//! by record; after a bad record (bad magic, impossible length, checksum mismatch) the scan
//! resumes at the next offset holding a valid record (magic found with memchr's memmem, then
//! header and checksum verified), so the good records after it survive. Each skipped range is
//! logged with its segment and offsets, counted, and remembered so readers jump over it without
//! counting it again; only the last segment's tail after its last valid record is cut off. A
//! reader that meets a bad record at run time does the same. The idempotency keys of records in
//! a skipped range, of a segment that vanished and of the part of a segment that was truncated
//! are forgotten (logged), so a producer that resends those batches is answered 200, not
//! `duplicate`, and the data comes back. A record's claimed length is bounded by the bytes left
//! before the durable end and by the largest record the limits allow, so a flipped length bit
//! never makes a reader allocate or read more than the segment holds.
//!
//! Written here rather than taken from a crate: the embedded stores (sled, redb, fjall) keep
//! values in their own trees and would copy every multi-megabyte batch again, and the segment
//! log crates found do not offer per-reader cursors with group commit.
//!
//! It does not decode batches (the ingest checked them) and does not deliver (outputs do).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::SpoolSettings;
use crate::metrics::{Event, Metrics, SegmentLoss};
use sluice_channel::wire::MAX_KEY_BYTES;

const MAGIC: &[u8; 4] = b"SLR1";
const HEADER: usize = 12;
/// Smallest payload: the key length byte and the event count.
const MIN_PAYLOAD: u64 = 1 + 8;
/// Largest record size beyond its body: header, key length, key, event count.
const RECORD_OVERHEAD: u64 = HEADER as u64 + 1 + MAX_KEY_BYTES as u64 + 8;
/// Largest payload a record may claim: the largest body the limits allow
/// (`limits.max_body_bytes` is below 2 GiB) with its key. Anything above is corruption.
const MAX_PAYLOAD: u64 = (u32::MAX / 2) as u64 + 1 + MAX_KEY_BYTES as u64 + 8;
/// Bytes of a payload before its body, at most (the key length is one byte).
const MAX_PREFIX: usize = 1 + u8::MAX as usize + 8;
/// A group commit takes at most this many bytes before it syncs.
const GROUP_BYTES: usize = 8 * 1024 * 1024;
/// Window of the verifying scanner (start-up, resynchronisation).
const SCAN_WINDOW: usize = 1 << 20;

/// A place in the log: segment number and byte offset inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub(crate) struct Position {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.segment, self.offset)
    }
}

/// What went wrong in the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool {path} is in use by another relay (lock held)")]
    Locked { path: PathBuf },
    #[error("spool {path} offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("spool is closed")]
    Closed,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Why an append was not stored.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("spool full")]
    Full { retry_after_secs: u64 },
    #[error("batch of {0} bytes can never fit the spool")]
    TooLarge(u64),
    #[error("spool write failed: {0}")]
    Io(String),
    #[error("spool is closed")]
    Closed,
}

/// A stored append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Written and synced now.
    Stored,
    /// The key was stored before, with this many events.
    Duplicate { events: u64 },
}

/// One batch read back from the spool.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    pub key: String,
    pub events: u64,
    pub body: Bytes,
    /// Where the next record starts: what an output acknowledges once it delivered this one.
    pub(crate) end: Position,
}

enum Cmd {
    Append {
        key: String,
        events: u64,
        body: Bytes,
        reply: oneshot::Sender<Result<Appended, AppendError>>,
    },
    Ack {
        name: String,
        pos: Position,
    },
    /// A reader found `segment` missing, or shorter than `seen` (the end it was allowed to read
    /// to). The writer checks the file, settles the loss and answers whether it found one.
    Damaged {
        segment: u64,
        seen: u64,
        reply: oneshot::Sender<bool>,
    },
    /// A reader forgot keys: rewrite keys.log so they stay forgotten after a restart.
    KeysForgotten,
    Shutdown(oneshot::Sender<()>),
}

/// One remembered idempotency key.
#[derive(Debug, Clone, Copy)]
struct KeyEntry {
    events: u64,
    /// Where its record starts; unknown for keys read from old two-field keys.log lines.
    loc: Option<Position>,
    /// Insertion number, so a stale slot in `order` is told from a newer insert of the key.
    seq: u64,
}

/// The idempotency window: the last N keys with their event counts and record locations.
#[derive(Default)]
struct KeyWindow {
    map: HashMap<String, KeyEntry>,
    order: VecDeque<(u64, String)>,
    next_seq: u64,
    cap: usize,
}

impl KeyWindow {
    fn new(cap: usize) -> Self {
        KeyWindow {
            cap,
            ..Default::default()
        }
    }

    fn get(&self, key: &str) -> Option<u64> {
        self.map.get(key).map(|e| e.events)
    }

    fn insert(&mut self, key: String, events: u64, loc: Option<Position>) {
        if let Some(e) = self.map.get_mut(&key) {
            e.events = events;
            e.loc = loc.or(e.loc);
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.map.insert(key.clone(), KeyEntry { events, loc, seq });
        self.order.push_back((seq, key));
        while self.map.len() > self.cap {
            let Some((seq, old)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|e| e.seq == seq) {
                self.map.remove(&old);
            }
        }
        // Forgotten keys leave stale slots behind; drop them once they pile up.
        if self.order.len() > 2 * self.cap + 64 {
            let map = &self.map;
            self.order
                .retain(|(s, k)| map.get(k).is_some_and(|e| e.seq == *s));
        }
    }

    /// Removes every key whose record location satisfies `pred`; returns them in log order.
    fn forget(&mut self, pred: impl Fn(Position) -> bool) -> Vec<(String, u64, Position)> {
        let mut gone: Vec<(String, u64, Position)> = self
            .map
            .iter()
            .filter_map(|(k, e)| e.loc.filter(|l| pred(*l)).map(|l| (k.clone(), e.events, l)))
            .collect();
        for (k, _, _) in &gone {
            self.map.remove(k);
        }
        gone.sort_by_key(|g| g.2);
        gone
    }

    /// The live keys, oldest first.
    fn entries(&self) -> Vec<(String, KeyEntry)> {
        self.order
            .iter()
            .filter_map(|(s, k)| {
                self.map
                    .get(k)
                    .filter(|e| e.seq == *s)
                    .map(|e| (k.clone(), *e))
            })
            .collect()
    }
}

/// One keys.log line: `KEY EVENTS SEGMENT OFFSET`, or `KEY EVENTS` (older relays).
fn key_line(key: &str, events: u64, loc: Option<Position>) -> String {
    match loc {
        Some(l) => format!("{key} {events} {} {}\n", l.segment, l.offset),
        None => format!("{key} {events}\n"),
    }
}

fn parse_key_line(text: &str) -> Option<(String, u64, Option<Position>)> {
    let mut it = text.split(' ');
    let key = it.next()?;
    let events = it.next()?.parse().ok()?;
    let loc = match (it.next(), it.next()) {
        (None, None) => None,
        (Some(s), Some(o)) => Some(Position {
            segment: s.parse().ok()?,
            offset: o.parse().ok()?,
        }),
        _ => return None,
    };
    if it.next().is_some() || !sluice_channel::wire::validate_idempotency_key(key) {
        return None;
    }
    Some((key.to_string(), events, loc))
}

struct Shared {
    dir: PathBuf,
    settings: SpoolSettings,
    used: AtomicU64,
    keys: Mutex<KeyWindow>,
    /// Known segments and their sizes; the last one is the active one.
    segments: Mutex<BTreeMap<u64, u64>>,
    /// Known bad ranges, `(segment, start) -> end`: readers jump over them without counting
    /// them again.
    bad: Mutex<BTreeMap<(u64, u64), u64>>,
    committed: watch::Sender<Position>,
    /// Each output's cursor, republished by the writer whenever an ack moves one, so the
    /// relay's drain on stop can tell when every output has caught up (app.rs).
    delivered: watch::Sender<HashMap<String, Position>>,
    metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn segment_size(&self, id: u64) -> Option<u64> {
        lock(&self.segments).get(&id).copied()
    }

    /// The end of the known bad range holding `at`, if any.
    fn known_bad(&self, at: Position) -> Option<u64> {
        let bad = lock(&self.bad);
        bad.range(..=(at.segment, at.offset))
            .next_back()
            .filter(|((s, _), end)| *s == at.segment && at.offset < **end)
            .map(|(_, end)| *end)
    }

    /// Remembers a bad range; false when another reader found it first.
    fn register_bad(&self, segment: u64, start: u64, end: u64) -> bool {
        let mut bad = lock(&self.bad);
        let known = bad
            .range(..=(segment, start))
            .next_back()
            .is_some_and(|((s, _), e)| *s == segment && start < *e);
        if !known {
            bad.insert((segment, start), end);
        }
        !known
    }

    /// Forgets the keys whose records are located where `pred` says (their batches cannot be
    /// read back), logs them and counts them; returns how many.
    fn forget_keys(&self, why: &str, pred: impl Fn(Position) -> bool) -> usize {
        let gone = lock(&self.keys).forget(pred);
        self.metrics
            .record(Event::KeysForgotten { why, gone: &gone });
        gone.len()
    }
}

/// The spool's handle. Cheap to clone.
#[derive(Clone)]
pub struct Spool {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Cmd>,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn cursor_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("cursor-{name}"))
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Checks a record header, `room` being the bytes after it up to the end the reader may read:
/// the payload length and checksum, or why it cannot be a record.
fn parse_header(h: &[u8], room: u64) -> Result<(u64, u32), String> {
    if &h[..4] != MAGIC {
        return Err("bad record magic".into());
    }
    let len = u64::from(u32::from_le_bytes([h[4], h[5], h[6], h[7]]));
    let crc = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&len) {
        return Err(format!("record length {len} out of range"));
    }
    if len > room {
        return Err(format!(
            "record length {len} runs past the end of the segment's data ({room} bytes left)"
        ));
    }
    Ok((len, crc))
}

/// Splits the start of a checksummed payload: key, events, and where the body starts.
fn parse_prefix(p: &[u8], len: u64) -> Result<(String, u64, usize), String> {
    let klen = usize::from(*p.first().ok_or("empty payload")?);
    if len < (1 + klen + 8) as u64 || p.len() < 1 + klen + 8 {
        return Err("record shorter than its key".into());
    }
    let key = std::str::from_utf8(&p[1..1 + klen])
        .ok()
        .filter(|k| sluice_channel::wire::validate_idempotency_key(k))
        .ok_or("record key is not a valid idempotency key")?;
    let mut ev = [0u8; 8];
    ev.copy_from_slice(&p[1 + klen..1 + klen + 8]);
    Ok((key.to_string(), u64::from_le_bytes(ev), 1 + klen + 8))
}

fn encode_header(key: &str, events: u64, body: &[u8]) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(1 + key.len() + 8);
    prefix.push(key.len() as u8);
    prefix.extend_from_slice(key.as_bytes());
    prefix.extend_from_slice(&events.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&prefix);
    crc.update(body);
    let len = (prefix.len() + body.len()) as u32;
    let mut out = Vec::with_capacity(HEADER + prefix.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&prefix);
    out
}

/// A verified record, without its body.
struct Meta {
    key: String,
    events: u64,
    size: u64,
}

/// What [`Scanner::check`] found at an offset.
enum Check {
    Valid(Meta),
    Bad(String),
    /// The file ends before the end the scanner was given (truncated under us).
    Short,
}

/// What [`Scanner::resync`] found.
enum Resync {
    /// The next valid record starts here.
    Found(u64),
    /// No valid record up to the end.
    None,
    /// The file ends before the end the scanner was given.
    Short,
}

/// Windowed positional reads over one segment up to `end`: verifies records without keeping
/// their bodies (start-up) and finds the next valid record after a bad one. Reads at most
/// [`SCAN_WINDOW`] bytes at a time, whatever a record claims.
struct Scanner<'a> {
    file: &'a File,
    end: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`, and how many bytes of `buf` hold file data.
    start: u64,
    filled: usize,
}

impl<'a> Scanner<'a> {
    fn new(file: &'a File, end: u64) -> Self {
        let cap = end.clamp(MAX_PREFIX as u64 + HEADER as u64, SCAN_WINDOW as u64) as usize;
        Scanner {
            file,
            end,
            buf: vec![0; cap],
            start: 0,
            filled: 0,
        }
    }

    /// Makes `[pos, pos + n)` available (`n` at most the window, `pos + n` at most `end`);
    /// false when the file ends first.
    fn load(&mut self, pos: u64, n: usize) -> std::io::Result<bool> {
        if pos >= self.start && pos + n as u64 <= self.start + self.filled as u64 {
            return Ok(true);
        }
        let want = (self.end.saturating_sub(pos)).min(self.buf.len() as u64) as usize;
        let mut got = 0;
        while got < want {
            match self
                .file
                .read_at(&mut self.buf[got..want], pos + got as u64)
            {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.start = pos;
        self.filled = got;
        Ok(got >= n)
    }

    fn bytes(&self, pos: u64, n: usize) -> &[u8] {
        let i = (pos - self.start) as usize;
        &self.buf[i..i + n]
    }

    /// Verifies the record at `pos` (`pos < end`): header, bounded length, checksum, key.
    fn check(&mut self, pos: u64) -> std::io::Result<Check> {
        let left = self.end - pos;
        if left < HEADER as u64 {
            return Ok(Check::Bad(format!(
                "torn record header ({left} of {HEADER} bytes)"
            )));
        }
        if !self.load(pos, HEADER)? {
            return Ok(Check::Short);
        }
        let (len, crc) = match parse_header(self.bytes(pos, HEADER), left - HEADER as u64) {
            Ok(x) => x,
            Err(reason) => return Ok(Check::Bad(reason)),
        };
        let mut hasher = crc32fast::Hasher::new();
        let mut prefix = None;
        let (first, stop) = (pos + HEADER as u64, pos + HEADER as u64 + len);
        let mut at = first;
        while at < stop {
            let n = (stop - at).min(self.buf.len() as u64) as usize;
            if !self.load(at, n)? {
                return Ok(Check::Short);
            }
            let chunk = self.bytes(at, n);
            if at == first {
                prefix = Some(parse_prefix(&chunk[..n.min(MAX_PREFIX)], len));
            }
            hasher.update(chunk);
            at += n as u64;
        }
        if hasher.finalize() != crc {
            return Ok(Check::Bad("checksum mismatch".into()));
        }
        Ok(match prefix {
            Some(Ok((key, events, _))) => Check::Valid(Meta {
                key,
                events,
                size: HEADER as u64 + len,
            }),
            Some(Err(reason)) => Check::Bad(reason),
            None => Check::Bad("empty payload".into()),
        })
    }

    /// The first offset at or after `from` where a valid record starts: the magic found with
    /// memmem, then the header and checksum verified.
    fn resync(&mut self, from: u64) -> std::io::Result<Resync> {
        let finder = memchr::memmem::Finder::new(MAGIC);
        let smallest = HEADER as u64 + MIN_PAYLOAD;
        let mut p = from;
        while p + smallest <= self.end {
            let n = (self.end - p).min(self.buf.len() as u64) as usize;
            if !self.load(p, n)? {
                return Ok(Resync::Short);
            }
            match finder.find(self.bytes(p, n)) {
                Some(i) => {
                    let candidate = p + i as u64;
                    match self.check(candidate)? {
                        Check::Valid(_) => return Ok(Resync::Found(candidate)),
                        Check::Bad(_) => p = candidate + 1,
                        Check::Short => return Ok(Resync::Short),
                    }
                }
                None if p + n as u64 >= self.end => break,
                // The magic may straddle the window's end: look again from its last bytes.
                None => p += (n - (MAGIC.len() - 1)) as u64,
            }
        }
        Ok(Resync::None)
    }
}

/// Everything found on disk at start.
struct Recovered {
    segments: BTreeMap<u64, u64>,
    /// Every valid record's key, events and location, in log order.
    keys: Vec<(String, u64, Position)>,
    bad: BTreeMap<(u64, u64), u64>,
}

/// Scans the spool directory: verifies every segment, skipping bad ranges to the next valid
/// record, cuts the last segment's tail after its last valid record, collects keys.
fn recover(dir: &Path, metrics: &Metrics) -> Result<Recovered, SpoolError> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name
            .strip_suffix(".seg")
            .and_then(|s| s.parse::<u64>().ok())
        {
            ids.push(id);
        } else if name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    ids.sort_unstable();
    let mut out = Recovered {
        segments: BTreeMap::new(),
        keys: Vec::new(),
        bad: BTreeMap::new(),
    };
    let last = ids.last().copied();
    for id in ids {
        let size = recover_segment(dir, id, Some(id) == last, metrics, &mut out)?;
        out.segments.insert(id, size);
    }
    Ok(out)
}

/// Verifies one segment; returns the size readers may read.
fn recover_segment(
    dir: &Path,
    id: u64,
    last: bool,
    metrics: &Metrics,
    out: &mut Recovered,
) -> Result<u64, SpoolError> {
    let path = segment_path(dir, id);
    let file = File::open(&path).map_err(io_err(&path))?;
    let len = file.metadata().map_err(io_err(&path))?.len();
    let mut scan = Scanner::new(&file, len);
    let mut offset = 0u64;
    while offset < len {
        let reason = match scan.check(offset).map_err(io_err(&path))? {
            Check::Valid(m) => {
                out.keys.push((
                    m.key,
                    m.events,
                    Position {
                        segment: id,
                        offset,
                    },
                ));
                offset += m.size;
                continue;
            }
            Check::Bad(reason) => reason,
            Check::Short => "the file shrank while it was read".to_string(),
        };
        let end = match scan.resync(offset + 1).map_err(io_err(&path))? {
            Resync::Found(next) => next,
            Resync::None | Resync::Short => len,
        };
        if last && end == len {
            // Only the tail after the last valid record is cut: a crash mid-write leaves a
            // torn record there that was never answered 200.
            metrics.record(Event::SkippedRange {
                path: &path,
                segment: id,
                range: (offset, end),
                reason: &reason,
                what: "torn or corrupt tail of the last segment, cut off",
            });
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            f.set_len(offset).map_err(io_err(&path))?;
            f.sync_all().map_err(io_err(&path))?;
            return Ok(offset);
        }
        metrics.record(Event::SkippedRange {
            path: &path,
            segment: id,
            range: (offset, end),
            reason: &reason,
            what: "corrupt bytes skipped; reading resumes at the next valid record",
        });
        out.bad.insert((id, offset), end);
        offset = end;
    }
    Ok(len)
}

fn read_keys_log(path: &Path) -> Result<Vec<(String, u64, Option<Position>)>, SpoolError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut out = Vec::new();
    let mut r = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        // A line without LF is a torn tail; a line that does not parse is damage: both skipped.
        if line.last() != Some(&b'\n') {
            break;
        }
        if let Some(entry) = parse_key_line(&String::from_utf8_lossy(&line[..line.len() - 1])) {
            out.push(entry);
        }
    }
    Ok(out)
}

fn read_cursor(path: &Path) -> Option<Position> {
    let text = std::fs::read_to_string(path).ok()?;
    let (s, o) = text.trim().split_once(' ')?;
    Some(Position {
        segment: s.parse().ok()?,
        offset: o.parse().ok()?,
    })
}

/// Creates the spool directory if needed and locks it (flock): two relays never share it.
fn take_lock(dir: &Path) -> Result<File, SpoolError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let lock_path = dir.join("lock");
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    // SAFETY: flock on a descriptor we own; the file stays open for the writer's life.
    if unsafe { libc::flock(lock_file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(SpoolError::Locked {
            path: dir.to_path_buf(),
        });
    }
    Ok(lock_file)
}

/// Creates segment `id` for appending, durably (directory synced).
fn create_segment(dir: &Path, id: u64) -> Result<File, SpoolError> {
    let path = segment_path(dir, id);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok(file)
}

fn write_atomic(path: &Path, data: &[u8], sync: bool) -> Result<(), SpoolError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    if sync {
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// Builds the idempotency window at start: keys.log, then the keys of every valid record.
/// A key whose record was not delivered by every output (located at or after `min_cursor`) and
/// was not found valid is forgotten: its bytes were skipped, cut off or are gone with their
/// segment, so a resend must be stored again. Returns the window and whether any was forgotten.
fn build_window(
    cap: usize,
    logged: Vec<(String, u64, Option<Position>)>,
    found: Vec<(String, u64, Position)>,
    min_cursor: Position,
    metrics: &Metrics,
) -> (KeyWindow, bool) {
    let valid: HashSet<&str> = found.iter().map(|(k, _, _)| k.as_str()).collect();
    let mut window = KeyWindow::new(cap);
    let mut lost: BTreeMap<String, (u64, Position)> = BTreeMap::new();
    for (k, e, loc) in logged {
        match loc {
            Some(l) if l >= min_cursor && !valid.contains(k.as_str()) => {
                lost.insert(k, (e, l));
            }
            _ => {
                // A later line of the key (stored again) wins over an earlier lost one.
                lost.remove(&k);
                window.insert(k, e, loc);
            }
        }
    }
    drop(valid);
    for (k, e, loc) in found {
        window.insert(k, e, Some(loc));
    }
    let mut gone: Vec<(String, u64, Position)> =
        lost.into_iter().map(|(k, (e, l))| (k, e, l)).collect();
    gone.sort_by_key(|g| g.2);
    metrics.record(Event::KeysForgotten {
        why: "record unreadable or missing at start",
        gone: &gone,
    });
    (window, !gone.is_empty())
}

/// Segments missing between the oldest undelivered one and the newest: they vanished while
/// the relay was down (deletion only ever removes segments every output has passed).
fn report_missing_segments(segments: &BTreeMap<u64, u64>, min_cursor: Position, metrics: &Metrics) {
    let Some(newest) = segments.keys().next_back().copied() else {
        return;
    };
    for id in min_cursor.segment + 1..newest {
        if !segments.contains_key(&id) {
            metrics.record(Event::SegmentLost {
                segment: id,
                how: SegmentLoss::MissingAtStart,
            });
        }
    }
}

/// Each output's cursor as saved, or the start of the oldest segment for an output without
/// one (new, or its cursor file lost).
fn read_cursors(
    dir: &Path,
    outputs: &[String],
    segments: &BTreeMap<u64, u64>,
) -> HashMap<String, Position> {
    let first = segments.keys().next().copied().unwrap_or(0);
    outputs
        .iter()
        .map(|name| {
            let pos = read_cursor(&cursor_path(dir, name)).unwrap_or(Position {
                segment: first,
                offset: 0,
            });
            (name.clone(), pos)
        })
        .collect()
}

/// The segment appends go to after a start. Always a fresh one, so a recovered segment is
/// never written again; numbers only grow, even when every segment was deleted, so no cursor
/// is ahead of them.
fn next_segment_id(segments: &BTreeMap<u64, u64>, cursors: &HashMap<String, Position>) -> u64 {
    segments
        .keys()
        .next_back()
        .copied()
        .into_iter()
        .chain(cursors.values().map(|p| p.segment))
        .max()
        .unwrap_or(0)
        + 1
}

impl Spool {
    /// Opens (or creates) the spool for the outputs named `outputs`, recovering what is there.
    pub fn open(
        settings: &SpoolSettings,
        outputs: &[String],
        metrics: Arc<Metrics>,
    ) -> Result<Spool, SpoolError> {
        let dir = settings.dir.clone();
        let lock_file = take_lock(&dir)?;
        let recovered = recover(&dir, &metrics)?;
        let mut segments = recovered.segments;
        let cursors = read_cursors(&dir, outputs, &segments);
        let min_cursor = cursors.values().min().copied().unwrap_or_default();
        report_missing_segments(&segments, min_cursor, &metrics);

        let keys_path = dir.join("keys.log");
        let logged = read_keys_log(&keys_path)?;
        let key_lines = logged.len();
        let (window, forgot) = build_window(
            settings.keys_window,
            logged,
            recovered.keys,
            min_cursor,
            &metrics,
        );

        let active = next_segment_id(&segments, &cursors);
        let file = create_segment(&dir, active)?;
        segments.insert(active, 0);
        let used: u64 = segments.values().sum();
        metrics.spool_bytes.set(used as i64);
        metrics.spool_max_bytes.set(settings.max_bytes as i64);
        metrics.spool_segments.set(segments.len() as i64);
        let keys_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&keys_path)
            .map_err(io_err(&keys_path))?;

        let (committed, _) = watch::channel(Position {
            segment: active,
            offset: 0,
        });
        let (delivered, _) = watch::channel(cursors.clone());
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            settings: settings.clone(),
            used: AtomicU64::new(used),
            keys: Mutex::new(window),
            segments: Mutex::new(segments),
            bad: Mutex::new(recovered.bad),
            committed,
            delivered,
            metrics,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let mut writer = Writer {
            shared: shared.clone(),
            rx,
            active,
            active_size: 0,
            file,
            keys_file: BufWriter::new(keys_file),
            keys_path,
            key_lines,
            keys_dirty: false,
            keys_rewrite: false,
            cursors,
            cursors_dirty: HashMap::new(),
            _lock: lock_file,
        };
        if forgot {
            // Forgotten keys must stay forgotten even once their segment is deleted.
            writer.compact_keys();
        }
        // Segments already passed by every output (a crash before their deletion) go now.
        writer.collect_garbage();
        let handle = writer.spawn()?;
        tracing::info!(
            dir = %dir.display(),
            bytes = used,
            max_bytes = settings.max_bytes,
            "spool open"
        );
        Ok(Spool {
            shared,
            tx,
            writer: Arc::new(Mutex::new(Some(handle))),
        })
    }

    /// Stores one batch durably, or says it was stored before under `key`.
    pub async fn append(
        &self,
        key: &str,
        events: u64,
        body: Bytes,
    ) -> Result<Appended, AppendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Append {
                key: key.to_string(),
                events,
                body,
                reply,
            })
            .map_err(|_| AppendError::Closed)?;
        rx.await.map_err(|_| AppendError::Closed)?
    }

    /// The events stored under `key`, when the key is in the window.
    pub(crate) fn lookup(&self, key: &str) -> Option<u64> {
        lock(&self.shared.keys).get(key)
    }

    /// Bytes on disk in segments.
    pub(crate) fn used_bytes(&self) -> u64 {
        self.shared.used.load(Ordering::Relaxed)
    }

    /// True while a batch of `bytes` would be taken.
    pub(crate) fn has_room(&self, bytes: u64) -> bool {
        self.used_bytes() + bytes + RECORD_OVERHEAD <= self.shared.settings.max_bytes
    }

    /// Seconds a refused producer should wait.
    pub(crate) fn retry_after_secs(&self) -> u64 {
        self.shared.settings.retry_after_secs
    }

    /// A reader for output `name`, starting at its persisted cursor.
    pub fn reader(&self, name: &str) -> SpoolReader {
        let dir = &self.shared.dir;
        let first = lock(&self.shared.segments)
            .keys()
            .next()
            .copied()
            .unwrap_or(0);
        let pos = read_cursor(&cursor_path(dir, name))
            .unwrap_or(Position {
                segment: first,
                offset: 0,
            })
            .max(Position {
                segment: first,
                offset: 0,
            });
        SpoolReader {
            shared: self.shared.clone(),
            committed: self.shared.committed.subscribe(),
            pos,
            file: None,
            acker: Acker {
                name: name.to_string(),
                tx: self.tx.clone(),
            },
            last_damage: None,
        }
    }

    /// Bytes of spooled records each output has not delivered yet (everything after its
    /// cursor), by output name, sorted. All zero means every output has caught up.
    pub(crate) fn undelivered(&self) -> Vec<(String, u64)> {
        let cursors = self.shared.delivered.borrow().clone();
        let segments = lock(&self.shared.segments);
        let mut left: Vec<(String, u64)> = cursors
            .into_iter()
            .map(|(name, c)| {
                let bytes = segments
                    .range(c.segment..)
                    .map(|(id, size)| {
                        if *id == c.segment {
                            size.saturating_sub(c.offset)
                        } else {
                            *size
                        }
                    })
                    .sum();
                (name, bytes)
            })
            .collect();
        left.sort();
        left
    }

    /// Changes whenever an output's cursor moves (see [`Spool::undelivered`]).
    pub(crate) fn delivery_progress(&self) -> watch::Receiver<HashMap<String, Position>> {
        self.shared.delivered.subscribe()
    }

    /// Stops the writer after the commands already sent, syncing what it holds.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        let handle = lock(&self.writer).take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

/// Tells the spool how far an output has delivered. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Acker {
    name: String,
    tx: mpsc::UnboundedSender<Cmd>,
}

impl Acker {
    /// Everything before `pos` was delivered: persist the cursor, free what no output needs.
    pub(crate) fn ack(&self, pos: Position) {
        let _ = self.tx.send(Cmd::Ack {
            name: self.name.clone(),
            pos,
        });
    }
}

/// The reader's open segment and where its file position is.
struct Cached {
    segment: u64,
    file: File,
    /// The file position, `u64::MAX` when unknown.
    at: u64,
}

/// What a read at the reader's position found.
enum Found {
    Record {
        key: String,
        events: u64,
        body: Bytes,
        size: u64,
    },
    Bad(String),
    /// The file ends before the end the reader may read to.
    Short,
    /// The segment file is gone.
    Missing,
}

/// Reads the record at `pos` of `c`, not past `end`. The hot path of delivery: one read of
/// the header and one of the payload straight into the batch's buffer (the body is a slice of
/// it, not a copy), sequential reads without seeks.
fn read_record_at(c: &mut Cached, pos: u64, end: u64) -> std::io::Result<Found> {
    let left = end - pos;
    if left < HEADER as u64 {
        return Ok(Found::Bad(format!(
            "torn record header ({left} of {HEADER} bytes)"
        )));
    }
    if c.at != pos {
        c.at = u64::MAX;
        c.file.seek(SeekFrom::Start(pos))?;
        c.at = pos;
    }
    let mut header = [0u8; HEADER];
    match c.file.read_exact(&mut header) {
        Ok(()) => c.at += HEADER as u64,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            c.at = u64::MAX;
            return Ok(Found::Short);
        }
        Err(e) => {
            c.at = u64::MAX;
            return Err(e);
        }
    }
    let (len, crc) = match parse_header(&header, left - HEADER as u64) {
        Ok(x) => x,
        Err(reason) => return Ok(Found::Bad(reason)),
    };
    // `len` is bounded by the bytes before `end`: a flipped length bit cannot allocate more.
    // Read into the batch's own buffer, exactly sized and not zeroed first (the body is a
    // slice of it below, not a copy).
    let mut payload = Vec::with_capacity(len as usize);
    let got = (&c.file).take(len).read_to_end(&mut payload);
    let got = match got {
        Ok(n) => n as u64,
        Err(e) => {
            c.at = u64::MAX;
            return Err(e);
        }
    };
    c.at += got;
    if got < len {
        return Ok(Found::Short);
    }
    if crc32fast::hash(&payload) != crc {
        return Ok(Found::Bad("checksum mismatch".into()));
    }
    match parse_prefix(&payload, len) {
        Ok((key, events, body_at)) => Ok(Found::Record {
            key,
            events,
            body: Bytes::from(payload).slice(body_at..),
            size: HEADER as u64 + len,
        }),
        Err(reason) => Ok(Found::Bad(reason)),
    }
}

/// What the reader's next step is after one read.
enum Step {
    Batch(StoredBatch),
    Bad(String),
    Damaged,
}

/// Reads one output's batches in log order, waiting for new ones.
pub struct SpoolReader {
    shared: Arc<Shared>,
    committed: watch::Receiver<Position>,
    pos: Position,
    file: Option<Cached>,
    acker: Acker,
    /// The last damage reported (position, limit): the same again means settling it changed
    /// nothing, and the reader returns an error (retried after a pause) rather than spin.
    last_damage: Option<(Position, u64)>,
}

impl SpoolReader {
    /// The acker that moves this output's persisted cursor.
    pub(crate) fn acker(&self) -> Acker {
        self.acker.clone()
    }

    /// Where the next read starts.
    pub(crate) fn position(&self) -> Position {
        self.pos
    }

    /// The next durable batch; waits until there is one. A bad record is skipped up to the next
    /// valid one (reported and counted once); a segment that vanished or was truncated is
    /// reported and the reader goes on after it. Errors are I/O errors other than a missing
    /// file (permissions, EIO), worth retrying.
    pub async fn next(&mut self) -> Result<StoredBatch, SpoolError> {
        loop {
            let committed = *self.committed.borrow_and_update();
            let sealed = self.pos.segment < committed.segment;
            let limit = if self.pos.segment == committed.segment {
                Some(committed.offset)
            } else if sealed {
                match self.shared.segment_size(self.pos.segment) {
                    Some(s) => Some(s),
                    None => {
                        self.hop();
                        continue;
                    }
                }
            } else {
                None
            };
            match limit {
                Some(limit) if self.pos.offset < limit => match self.read_one(limit).await? {
                    Step::Batch(batch) => return Ok(batch),
                    Step::Bad(reason) => self.skip_bad(limit, reason).await?,
                    Step::Damaged => self.report_damage(limit).await?,
                },
                Some(_) if sealed => self.hop(),
                _ => {
                    if self.committed.changed().await.is_err() {
                        return Err(SpoolError::Closed);
                    }
                }
            }
        }
    }

    /// Moves to the start of the next segment.
    fn hop(&mut self) {
        let next = lock(&self.shared.segments)
            .range(self.pos.segment + 1..)
            .next()
            .map(|(id, _)| *id);
        self.file = None;
        self.pos = Position {
            segment: next.unwrap_or(self.pos.segment + 1),
            offset: 0,
        };
    }

    /// Runs `f` on the current segment's file (opened if needed) on the blocking pool.
    async fn with_file<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Cached) -> std::io::Result<T> + Send + 'static,
    ) -> Result<Option<T>, SpoolError> {
        let segment = self.pos.segment;
        let path = segment_path(&self.shared.dir, segment);
        let cached = self.file.take().filter(|c| c.segment == segment);
        let (cached, result) = tokio::task::spawn_blocking(move || {
            let mut c = match cached {
                Some(c) => c,
                None => match File::open(&path) {
                    Ok(file) => Cached {
                        segment,
                        file,
                        at: 0,
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (None, Ok(None)),
                    Err(e) => return (None, Err(io_err(&path)(e))),
                },
            };
            let r = f(&mut c).map(Some).map_err(io_err(&path));
            (Some(c), r)
        })
        .await
        .map_err(|e| SpoolError::Io {
            path: self.shared.dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        self.file = cached;
        result
    }

    async fn read_one(&mut self, limit: u64) -> Result<Step, SpoolError> {
        let start = self.pos;
        let found = self
            .with_file(move |c| read_record_at(c, start.offset, limit))
            .await?
            .unwrap_or(Found::Missing);
        Ok(match found {
            Found::Record {
                key,
                events,
                body,
                size,
            } => {
                self.pos.offset += size;
                Step::Batch(StoredBatch {
                    key,
                    events,
                    body,
                    end: self.pos,
                })
            }
            Found::Bad(reason) => Step::Bad(reason),
            Found::Short | Found::Missing => Step::Damaged,
        })
    }

    /// Skips the bad bytes at the reader's position up to the next valid record (or `limit`):
    /// a range found before (at start or by another output) is jumped over silently; a new one
    /// is remembered, reported, counted, and the keys of its records forgotten.
    async fn skip_bad(&mut self, limit: u64, reason: String) -> Result<(), SpoolError> {
        let at = self.pos;
        if let Some(end) = self.shared.known_bad(at) {
            self.pos.offset = end;
            return Ok(());
        }
        let found = self
            .with_file(move |c| Scanner::new(&c.file, limit).resync(at.offset + 1))
            .await?;
        let end = match found {
            Some(Resync::Found(next)) => next,
            Some(Resync::None) => limit,
            Some(Resync::Short) | None => return self.report_damage(limit).await,
        };
        if self.shared.register_bad(at.segment, at.offset, end) {
            let path = segment_path(&self.shared.dir, at.segment);
            self.shared.metrics.record(Event::SkippedRange {
                path: &path,
                segment: at.segment,
                range: (at.offset, end),
                reason: &reason,
                what: "corrupt bytes skipped by a reader; reading resumes at the next valid record",
            });
            let n = self.shared.forget_keys("record in a corrupt range", |l| {
                l.segment == at.segment && (at.offset..end).contains(&l.offset)
            });
            if n > 0 {
                let _ = self.acker.tx.send(Cmd::KeysForgotten);
            }
        }
        self.pos.offset = end;
        Ok(())
    }

    /// The segment is missing or ends before `limit`: has the writer check and settle it
    /// (report, forget keys, move on to a new segment if it was the active one).
    async fn report_damage(&mut self, limit: u64) -> Result<(), SpoolError> {
        self.file = None;
        let segment = self.pos.segment;
        let unreadable = || SpoolError::Corrupt {
            path: segment_path(&self.shared.dir, segment),
            offset: self.pos.offset,
            reason: "segment ends before its durable end".into(),
        };
        let here = (self.pos, limit);
        if self.last_damage.take() == Some(here) {
            return Err(unreadable());
        }
        let (reply, rx) = oneshot::channel();
        self.acker
            .tx
            .send(Cmd::Damaged {
                segment,
                seen: limit,
                reply,
            })
            .map_err(|_| SpoolError::Closed)?;
        if rx.await.map_err(|_| SpoolError::Closed)? {
            // Recorded only once settled: a `next()` cancelled while waiting (outputs poll it
            // in a select) asks again without tripping the guard.
            self.last_damage = Some(here);
            Ok(())
        } else {
            // The file looks whole to the writer yet could not be read: an error to retry.
            Err(unreadable())
        }
    }
}

/// The appends of one group commit, written but not yet synced.
struct Group {
    /// Size of the active segment before the group: what a failed sync cuts back to.
    start_size: u64,
    /// Answers sent only after the sync.
    answers: Vec<(Reply, Appended)>,
    /// Keys of the batches written, with where their records start.
    keys: Vec<(String, u64, Position)>,
    /// The first write that failed: the rest of the group is refused, nothing is synced.
    write_error: Option<String>,
}

struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Cmd>,
    active: u64,
    active_size: u64,
    file: File,
    keys_file: BufWriter<File>,
    keys_path: PathBuf,
    key_lines: usize,
    keys_dirty: bool,
    /// Keys were forgotten: keys.log must be rewritten without them.
    keys_rewrite: bool,
    cursors: HashMap<String, Position>,
    cursors_dirty: HashMap<String, Position>,
    _lock: File,
}

type Reply = oneshot::Sender<Result<Appended, AppendError>>;

impl Writer {
    fn run(mut self) {
        while let Some(first) = self.rx.blocking_recv() {
            let mut cmds = vec![first];
            let mut bytes = 0usize;
            // Group commit: everything queued now shares one sync.
            while bytes < GROUP_BYTES {
                match self.rx.try_recv() {
                    Ok(cmd) => {
                        if let Cmd::Append { body, .. } = &cmd {
                            bytes += body.len();
                        }
                        cmds.push(cmd);
                    }
                    Err(_) => break,
                }
            }
            let mut stop = None;
            let mut appends = Vec::new();
            let mut acked = false;
            for cmd in cmds {
                match cmd {
                    Cmd::Append {
                        key,
                        events,
                        body,
                        reply,
                    } => appends.push((key, events, body, reply)),
                    Cmd::Ack { name, pos } => {
                        if self.cursors.get(&name).map_or(true, |p| *p < pos) {
                            self.cursors.insert(name.clone(), pos);
                            self.cursors_dirty.insert(name, pos);
                            acked = true;
                        }
                    }
                    Cmd::Damaged {
                        segment,
                        seen,
                        reply,
                    } => {
                        let settled = self.check_segment(segment, seen);
                        let _ = reply.send(settled);
                    }
                    Cmd::KeysForgotten => self.keys_rewrite = true,
                    Cmd::Shutdown(reply) => stop = Some(reply),
                }
            }
            if !appends.is_empty() {
                self.commit_group(appends);
            }
            if acked {
                self.persist_cursors();
                self.collect_garbage();
                self.shared.delivered.send_replace(self.cursors.clone());
            }
            if self.keys_rewrite {
                self.compact_keys();
            }
            if let Some(reply) = stop {
                self.persist_cursors();
                let _ = self.keys_file.flush();
                let _ = self.keys_file.get_ref().sync_data();
                let _ = reply.send(());
                return;
            }
        }
        let _ = self.keys_file.flush();
        let _ = self.keys_file.get_ref().sync_data();
    }

    /// Runs the writer on its own thread (it does blocking file I/O and fsyncs).
    fn spawn(self) -> Result<std::thread::JoinHandle<()>, SpoolError> {
        let dir = self.shared.dir.clone();
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || self.run())
            .map_err(io_err(&dir))
    }

    /// Writes a group of appends, syncs once, then answers each: stored, duplicate or why
    /// not. Nothing is answered 200 before it is durable.
    fn commit_group(&mut self, appends: Vec<(String, u64, Bytes, Reply)>) {
        if let Err(e) = self.ready_for_group() {
            for (_, _, _, reply) in appends {
                let _ = reply.send(Err(AppendError::Io(e.clone())));
            }
            return;
        }
        let group = self.write_group(appends);
        if let Err(e) = self.sync_group(&group) {
            for (reply, _) in group.answers {
                let _ = reply.send(Err(AppendError::Io(e.clone())));
            }
            return;
        }
        self.remember_keys(&group.keys);
        self.shared.committed.send_replace(Position {
            segment: self.active,
            offset: self.active_size,
        });
        for (reply, outcome) in group.answers {
            let _ = reply.send(Ok(outcome));
        }
    }

    /// An active segment that is still ours and has room, or why appends cannot go on.
    fn ready_for_group(&mut self) -> Result<(), String> {
        if !self.check_active() {
            // Never answer 200 for bytes that would land where no reader can find them.
            return Err(format!(
                "active segment {} lost and no new one",
                self.active
            ));
        }
        if self.active_size >= self.shared.settings.segment_bytes {
            if let Err(e) = self.roll() {
                tracing::error!(error = %e, "spool: cannot start a new segment");
                return Err(e.to_string());
            }
        }
        Ok(())
    }

    /// Writes each new batch of the group to the active segment (not synced yet). Duplicates
    /// and batches that cannot fit are answered at once; the others wait in the group.
    fn write_group(&mut self, appends: Vec<(String, u64, Bytes, Reply)>) -> Group {
        let mut group = Group {
            start_size: self.active_size,
            answers: Vec::new(),
            keys: Vec::new(),
            write_error: None,
        };
        let max = self.shared.settings.max_bytes;
        let mut in_group: HashMap<String, u64> = HashMap::new();
        for (key, events, body, reply) in appends {
            let known = lock(&self.shared.keys)
                .get(&key)
                .or_else(|| in_group.get(&key).copied());
            if let Some(events) = known {
                group.answers.push((reply, Appended::Duplicate { events }));
                continue;
            }
            let header = encode_header(&key, events, &body);
            let size = (header.len() + body.len()) as u64;
            if size > max / 2 {
                let _ = reply.send(Err(AppendError::TooLarge(size)));
                continue;
            }
            let used = self.shared.used.load(Ordering::Relaxed);
            if used + (self.active_size - group.start_size) + size > max {
                self.shared.metrics.record(Event::SpoolFull);
                let _ = reply.send(Err(AppendError::Full {
                    retry_after_secs: self.shared.settings.retry_after_secs,
                }));
                continue;
            }
            if let Some(e) = &group.write_error {
                let _ = reply.send(Err(AppendError::Io(String::clone(e))));
                continue;
            }
            let r = self
                .file
                .write_all(&header)
                .and_then(|_| self.file.write_all(&body));
            match r {
                Ok(()) => {
                    let loc = Position {
                        segment: self.active,
                        offset: self.active_size,
                    };
                    self.active_size += size;
                    in_group.insert(key.clone(), events);
                    group.keys.push((key, events, loc));
                    group.answers.push((reply, Appended::Stored));
                }
                Err(e) => {
                    group.write_error = Some(e.to_string());
                    let _ = reply.send(Err(AppendError::Io(e.to_string())));
                }
            }
        }
        group
    }

    /// Makes what the group wrote durable and counts it. On failure what it wrote is cut off
    /// and appends continue in a new segment; the caller answers the group with the error
    /// (retryable).
    fn sync_group(&mut self, group: &Group) -> Result<(), String> {
        if self.active_size == group.start_size && group.write_error.is_none() {
            return Ok(());
        }
        let synced = match &group.write_error {
            None => self.file.sync_data().map_err(|e| e.to_string()),
            Some(e) => Err(e.clone()),
        };
        if let Err(e) = synced {
            tracing::error!(error = %e, segment = self.active, "spool: write or sync failed");
            let _ = self.file.set_len(group.start_size);
            self.active_size = group.start_size;
            if let Err(e) = self.roll() {
                tracing::error!(error = %e, "spool: cannot start a new segment");
            }
            return Err(e);
        }
        let added = self.active_size - group.start_size;
        let used = self.shared.used.fetch_add(added, Ordering::Relaxed) + added;
        self.shared.metrics.spool_bytes.set(used as i64);
        lock(&self.shared.segments).insert(self.active, self.active_size);
        Ok(())
    }

    /// Adds the group's keys to the window and to keys.log.
    fn remember_keys(&mut self, keys: &[(String, u64, Position)]) {
        {
            let mut window = lock(&self.shared.keys);
            for (key, events, loc) in keys {
                window.insert(key.clone(), *events, Some(*loc));
            }
        }
        for (key, events, loc) in keys {
            // Not synced here: keys.log is synced before any segment (which also holds the
            // keys) is deleted, and recovery reads keys from both.
            let _ = self
                .keys_file
                .write_all(key_line(key, *events, Some(*loc)).as_bytes());
            self.key_lines += 1;
            self.keys_dirty = true;
        }
        let _ = self.keys_file.flush();
        if self.key_lines > 2 * self.shared.settings.keys_window {
            self.compact_keys();
        }
    }

    /// Before a group is written: is the active segment still the file on disk, with the size
    /// written? One fstat. When it was deleted or its size changed under us, the loss is
    /// settled and appends move to a new segment (offsets in the old one are no longer ours).
    /// False when appends cannot go on (no new segment could be made).
    fn check_active(&mut self) -> bool {
        let Ok(meta) = self.file.metadata() else {
            return true;
        };
        let id = self.active;
        if meta.nlink() > 0 && meta.len() == self.active_size {
            return true;
        }
        if meta.nlink() == 0 {
            self.segment_lost(id);
        } else if meta.len() < self.active_size {
            self.segment_truncated(id, meta.len());
        } else if meta.len() > self.active_size {
            tracing::warn!(
                segment = id,
                size = self.active_size,
                file_size = meta.len(),
                "spool: bytes appended to the active segment by someone else; ignored, moving \
                 to a new segment"
            );
            if let Err(e) = self.roll() {
                tracing::error!(error = %e, "spool: cannot start a new segment");
            }
        }
        self.active != id
            || self
                .file
                .metadata()
                .is_ok_and(|m| m.nlink() > 0 && m.len() == self.active_size)
    }

    /// A reader found segment `id` missing or shorter than `seen`: settles it. True when the
    /// loss is (or already was) settled, false when the file looks whole.
    fn check_segment(&mut self, id: u64, seen: u64) -> bool {
        let Some(known) = self.shared.segment_size(id) else {
            return true;
        };
        if known < seen {
            return true;
        }
        let path = segment_path(&self.shared.dir, id);
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.segment_lost(id);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, segment = id, path = %path.display(), "spool: cannot check segment");
                false
            }
            Ok(m) if m.len() < known => {
                self.segment_truncated(id, m.len());
                true
            }
            Ok(_) if id == self.active => {
                // The path may name another file now; the one we write may be deleted.
                self.check_active();
                self.active != id
            }
            Ok(_) => false,
        }
    }

    /// Segment `id` vanished: forget it and its keys, report it; a new segment if it was the
    /// active one.
    fn segment_lost(&mut self, id: u64) {
        let Some(size) = lock(&self.shared.segments).remove(&id) else {
            return;
        };
        if id == self.active {
            if let Err(e) = self.roll() {
                tracing::error!(error = %e, "spool: cannot start a new segment");
            }
        }
        lock(&self.shared.bad).retain(|(s, _), _| *s != id);
        self.release(size);
        self.shared.metrics.record(Event::SegmentLost {
            segment: id,
            how: SegmentLoss::Vanished {
                path: &segment_path(&self.shared.dir, id),
                bytes: size,
            },
        });
        if self
            .shared
            .forget_keys("segment vanished", |l| l.segment == id)
            > 0
        {
            self.compact_keys();
        }
    }

    /// Segment `id` is `len` bytes, less than its durable end: what is past `len` is lost.
    fn segment_truncated(&mut self, id: u64, len: u64) {
        let known = {
            let mut segs = lock(&self.shared.segments);
            let Some(size) = segs.get_mut(&id) else {
                return;
            };
            if *size <= len {
                return;
            }
            std::mem::replace(size, len)
        };
        if id == self.active {
            // O_APPEND writes land at the file's end now.
            self.active_size = len;
            if let Err(e) = self.roll() {
                tracing::error!(error = %e, "spool: cannot start a new segment");
            }
        }
        {
            let mut bad = lock(&self.shared.bad);
            bad.retain(|(s, start), _| *s != id || *start < len);
            for ((_, _), end) in bad.range_mut((id, 0)..(id + 1, 0)) {
                *end = (*end).min(len);
            }
        }
        self.release(known - len);
        self.shared.metrics.record(Event::SegmentLost {
            segment: id,
            how: SegmentLoss::Truncated {
                path: &segment_path(&self.shared.dir, id),
                durable_end: known,
                file_size: len,
            },
        });
        if self
            .shared
            .forget_keys("segment truncated", |l| l.segment == id && l.offset >= len)
            > 0
        {
            self.compact_keys();
        }
    }

    /// `bytes` of segments are gone from disk: update the accounting.
    fn release(&self, bytes: u64) {
        let used = self.shared.used.fetch_sub(bytes, Ordering::Relaxed) - bytes;
        self.shared.metrics.spool_bytes.set(used as i64);
        let count = lock(&self.shared.segments).len();
        self.shared.metrics.spool_segments.set(count as i64);
    }

    /// Seals the active segment and opens the next one.
    fn roll(&mut self) -> Result<(), SpoolError> {
        let dir = self.shared.dir.clone();
        let old = segment_path(&dir, self.active);
        self.file.sync_data().map_err(io_err(&old))?;
        let next = self.active + 1;
        self.file = create_segment(&dir, next)?;
        self.active = next;
        self.active_size = 0;
        let count = {
            let mut segs = lock(&self.shared.segments);
            segs.insert(next, 0);
            segs.len()
        };
        self.shared.metrics.spool_segments.set(count as i64);
        self.shared.committed.send_replace(Position {
            segment: next,
            offset: 0,
        });
        Ok(())
    }

    fn persist_cursors(&mut self) {
        for (name, pos) in self.cursors_dirty.drain() {
            let path = cursor_path(&self.shared.dir, &name);
            // Not synced: a lost cursor update only means a batch is delivered again.
            if let Err(e) = write_atomic(
                &path,
                format!("{} {}\n", pos.segment, pos.offset).as_bytes(),
                false,
            ) {
                tracing::warn!(error = %e, "spool: cannot persist cursor");
            }
        }
    }

    /// Deletes sealed segments that every output has passed.
    fn collect_garbage(&mut self) {
        let Some(min) = self.cursors.values().min().copied() else {
            return;
        };
        let doomed: Vec<(u64, u64)> = lock(&self.shared.segments)
            .iter()
            .filter(|(id, size)| {
                **id != self.active
                    && (**id < min.segment || (**id == min.segment && min.offset >= **size))
            })
            .map(|(id, size)| (*id, *size))
            .collect();
        if !doomed.is_empty() {
            self.delete_segments(&doomed);
        }
        // The active segment is freed only once sealed. When every output has delivered all
        // of it, seal it now if it is sizeable or the spool is tight, so an idle relay does
        // not keep delivered data on disk (small ones wait, to avoid a segment per batch).
        let used = self.shared.used.load(Ordering::Relaxed);
        let (segment_bytes, max_bytes) = (
            self.shared.settings.segment_bytes,
            self.shared.settings.max_bytes,
        );
        if self.active_size > 0
            && min
                >= (Position {
                    segment: self.active,
                    offset: self.active_size,
                })
            && (self.active_size >= segment_bytes / 4 || used + segment_bytes > max_bytes)
            && self.roll().is_ok()
        {
            self.collect_garbage();
        }
    }

    /// Deletes sealed segments (after making keys.log durable: it keeps their keys).
    fn delete_segments(&mut self, doomed: &[(u64, u64)]) {
        if self.keys_dirty {
            let _ = self.keys_file.flush();
            if let Err(e) = self.keys_file.get_ref().sync_data() {
                tracing::warn!(error = %e, "spool: cannot sync keys.log; segments kept");
                return;
            }
            self.keys_dirty = false;
        }
        let mut freed = 0;
        for (id, size) in doomed {
            let path = segment_path(&self.shared.dir, *id);
            match std::fs::remove_file(&path) {
                Ok(()) => freed += size,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => freed += size,
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "spool: cannot delete segment");
                    continue;
                }
            }
            lock(&self.shared.segments).remove(id);
            lock(&self.shared.bad).retain(|(s, _), _| s != id);
        }
        self.release(freed);
    }

    /// Rewrites keys.log from the window (atomically): bounds it, and drops forgotten keys.
    fn compact_keys(&mut self) {
        let window = lock(&self.shared.keys).entries();
        let mut text = String::with_capacity(window.len() * 48);
        for (k, e) in &window {
            text.push_str(&key_line(k, e.events, e.loc));
        }
        let _ = self.keys_file.flush();
        let result = write_atomic(&self.keys_path, text.as_bytes(), true)
            .and_then(|_| sync_dir(&self.shared.dir))
            .and_then(|_| {
                OpenOptions::new()
                    .append(true)
                    .open(&self.keys_path)
                    .map_err(io_err(&self.keys_path))
            });
        match result {
            Ok(f) => {
                self.keys_file = BufWriter::new(f);
                self.key_lines = window.len();
                self.keys_dirty = false;
                self.keys_rewrite = false;
            }
            Err(e) => tracing::warn!(error = %e, "spool: cannot compact keys.log"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings(dir: &Path, max: u64, seg: u64) -> SpoolSettings {
        SpoolSettings {
            dir: dir.to_path_buf(),
            max_bytes: max,
            segment_bytes: seg,
            retry_after_secs: 1,
            keys_window: 100,
        }
    }

    fn open(s: &SpoolSettings, outs: &[&str]) -> Spool {
        let names: Vec<String> = outs.iter().map(|s| s.to_string()).collect();
        Spool::open(s, &names, Arc::new(Metrics::new(&names))).unwrap()
    }

    async fn next(r: &mut SpoolReader) -> StoredBatch {
        tokio::time::timeout(Duration::from_secs(5), r.next())
            .await
            .expect("a batch")
            .unwrap()
    }

    fn open_m(s: &SpoolSettings, outs: &[&str]) -> (Spool, Arc<Metrics>) {
        let names: Vec<String> = outs.iter().map(|s| s.to_string()).collect();
        let metrics = Arc::new(Metrics::new(&names));
        (Spool::open(s, &names, metrics.clone()).unwrap(), metrics)
    }

    /// The records of a segment file as written: (offset, key, size on disk).
    fn records(path: &Path) -> Vec<(u64, String, u64)> {
        let data = std::fs::read(path).unwrap();
        let mut out = Vec::new();
        let mut off = 0;
        while off + HEADER <= data.len() {
            assert_eq!(&data[off..off + 4], MAGIC, "{} at {off}", path.display());
            let len = u32::from_le_bytes(data[off + 4..off + 8].try_into().unwrap()) as usize;
            let klen = data[off + HEADER] as usize;
            let key = String::from_utf8(data[off + HEADER + 1..off + HEADER + 1 + klen].to_vec());
            out.push((off as u64, key.unwrap(), (HEADER + len) as u64));
            off += HEADER + len;
        }
        out
    }

    /// Overwrites bytes in place (the file keeps its inode, as a bit rot would).
    fn poke(path: &Path, offset: u64, bytes: &[u8]) {
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(bytes, offset).unwrap();
    }

    /// Flips every bit of one byte.
    fn flip(path: &Path, offset: u64) {
        let data = std::fs::read(path).unwrap();
        poke(path, offset, &[data[offset as usize] ^ 0xff]);
    }

    /// Appends `keys` one by one (one record each), with a 40-byte body.
    async fn fill(spool: &Spool, keys: &[String]) {
        for k in keys {
            assert_eq!(
                spool
                    .append(k, 1, Bytes::from(vec![b'x'; 40]))
                    .await
                    .unwrap(),
                Appended::Stored
            );
        }
    }

    fn keys(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    /// Reads batches until `n` arrived; their keys.
    async fn read_keys(r: &mut SpoolReader, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(next(r).await.key);
        }
        out
    }

    /// Nothing more to read now (whatever is durable was read).
    async fn assert_idle(r: &mut SpoolReader) {
        let more = tokio::time::timeout(Duration::from_millis(200), r.next()).await;
        assert!(more.is_err(), "unexpected batch: {more:?}");
    }

    async fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn without(all: &[String], gone: &[&str]) -> Vec<String> {
        all.iter()
            .filter(|k| !gone.contains(&k.as_str()))
            .cloned()
            .collect()
    }

    #[tokio::test]
    async fn append_read_ack_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 1 << 16);
        let spool = open(&s, &["a"]);
        assert_eq!(
            spool
                .append("k1", 2, Bytes::from_static(b"one"))
                .await
                .unwrap(),
            Appended::Stored
        );
        assert_eq!(
            spool
                .append("k2", 3, Bytes::from_static(b"two"))
                .await
                .unwrap(),
            Appended::Stored
        );
        assert_eq!(
            spool
                .append("k1", 9, Bytes::from_static(b"x"))
                .await
                .unwrap(),
            Appended::Duplicate { events: 2 }
        );
        let mut r = spool.reader("a");
        let b1 = next(&mut r).await;
        assert_eq!(
            (b1.key.as_str(), b1.events, &b1.body[..]),
            ("k1", 2, &b"one"[..])
        );
        r.acker().ack(b1.end);
        spool.shutdown().await;
        drop(r);

        // Restart: k1 delivered, k2 not; both keys remembered.
        let spool = open(&s, &["a"]);
        assert_eq!(spool.lookup("k1"), Some(2));
        assert_eq!(spool.lookup("k2"), Some(3));
        let mut r = spool.reader("a");
        let b2 = next(&mut r).await;
        assert_eq!(b2.key, "k2");
        spool.shutdown().await;
    }

    #[tokio::test]
    async fn torn_tail_is_cut_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 1 << 16);
        let spool = open(&s, &["a"]);
        spool
            .append("k1", 1, Bytes::from_static(b"good"))
            .await
            .unwrap();
        spool.shutdown().await;
        // Simulate a crash mid-write: half a record after the good one.
        let seg = segment_path(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        let h = encode_header("k2", 1, b"lost body");
        f.write_all(&h[..HEADER + 2]).unwrap();
        drop(f);
        let good_len = std::fs::metadata(&seg).unwrap().len() - (HEADER as u64 + 2);

        let names = vec!["a".to_string()];
        let metrics = Arc::new(Metrics::new(&names));
        let spool = Spool::open(&s, &names, metrics.clone()).unwrap();
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len);
        assert_eq!(metrics.spool_corrupt_records.get(), 1);
        assert_eq!(metrics.spool_skipped_ranges.get(), 1);
        assert_eq!(metrics.spool_skipped_bytes.get(), HEADER as u64 + 2);
        let mut r = spool.reader("a");
        assert_eq!(next(&mut r).await.key, "k1");
        assert_eq!(spool.lookup("k2"), None);
        spool.shutdown().await;
    }

    #[tokio::test]
    async fn corrupt_record_in_sealed_segment_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 10);
        let spool = open(&s, &["a"]);
        spool
            .append("k1", 1, Bytes::from_static(b"aaaa"))
            .await
            .unwrap();
        spool
            .append("k2", 1, Bytes::from_static(b"bbbb"))
            .await
            .unwrap();
        spool.shutdown().await;
        // Flip a body byte of k1 (segment 1; k2 went to segment 2 after the roll).
        let seg = segment_path(dir.path(), 1);
        let mut data = std::fs::read(&seg).unwrap();
        let n = data.len();
        data[n - 1] ^= 0xff;
        std::fs::write(&seg, data).unwrap();
        let spool = open(&s, &["a"]);
        let mut r = spool.reader("a");
        assert_eq!(next(&mut r).await.key, "k2");
        spool.shutdown().await;
    }

    #[tokio::test]
    async fn corrupt_record_in_sealed_segment_is_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 10);
        let spool = open(&s, &["a", "b"]);
        for (k, b) in [("k1", b"aaaa"), ("k2", b"bbbb"), ("k3", b"cccc")] {
            spool.append(k, 1, Bytes::from_static(b)).await.unwrap();
        }
        spool.shutdown().await;
        let seg = segment_path(dir.path(), 1);
        let mut data = std::fs::read(&seg).unwrap();
        let n = data.len();
        data[n - 1] ^= 0xff;
        std::fs::write(&seg, data).unwrap();
        let (spool, metrics) = open_m(&s, &["a", "b"]);
        for out in ["a", "b"] {
            let mut r = spool.reader(out);
            assert_eq!(next(&mut r).await.key, "k2");
            assert_eq!(next(&mut r).await.key, "k3");
        }
        assert_eq!(metrics.spool_corrupt_records.get(), 1);
        assert_eq!(metrics.spool_skipped_ranges.get(), 1);
        spool.shutdown().await;
    }

    #[tokio::test]
    async fn full_spool_refuses_then_frees_after_ack() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 4096, 1024);
        let spool = open(&s, &["a", "b"]);
        let body = Bytes::from(vec![7u8; 900]);
        let mut stored = 0;
        let mut i = 0;
        loop {
            match spool.append(&format!("k{i}"), 1, body.clone()).await {
                Ok(Appended::Stored) => stored += 1,
                Err(AppendError::Full { retry_after_secs }) => {
                    assert_eq!(retry_after_secs, 1);
                    break;
                }
                other => panic!("{other:?}"),
            }
            i += 1;
        }
        assert!(stored >= 3, "{stored}");
        // Output a delivers everything; b has not: nothing can be freed yet.
        let mut ra = spool.reader("a");
        let mut rb = spool.reader("b");
        let mut last = Position::default();
        for _ in 0..stored {
            last = next(&mut ra).await.end;
        }
        // The writer takes commands in order: this append sees the ack.
        ra.acker().ack(last);
        assert!(matches!(
            spool.append("more", 1, body.clone()).await,
            Err(AppendError::Full { .. })
        ));
        for _ in 0..stored {
            last = next(&mut rb).await.end;
        }
        rb.acker().ack(last);
        let mut ok = false;
        for _ in 0..100 {
            if let Ok(Appended::Stored) = spool.append("more", 1, body.clone()).await {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(ok, "space freed after both outputs acked");
        assert_eq!(next(&mut ra).await.key, "more");
        spool.shutdown().await;
    }

    #[tokio::test]
    async fn keys_window_is_bounded_and_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path(), 1 << 20, 1 << 16);
        s.keys_window = 10;
        let spool = open(&s, &["a"]);
        for i in 0..50 {
            spool
                .append(&format!("k{i}"), 1, Bytes::from_static(b"x"))
                .await
                .unwrap();
        }
        assert_eq!(spool.lookup("k0"), None);
        assert_eq!(spool.lookup("k49"), Some(1));
        spool.shutdown().await;
        let lines = std::fs::read_to_string(dir.path().join("keys.log"))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 21, "{lines}");
    }

    #[tokio::test]
    async fn second_relay_on_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 1 << 16);
        let spool = open(&s, &["a"]);
        let names = vec!["a".to_string()];
        let err = Spool::open(&s, &names, Arc::new(Metrics::new(&names)));
        assert!(matches!(err, Err(SpoolError::Locked { .. })));
        spool.shutdown().await;
    }

    #[tokio::test]
    async fn reader_waits_for_new_batches() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 64);
        let spool = open(&s, &["a"]);
        let mut r = spool.reader("a");
        let waiter = tokio::spawn(async move {
            let mut keys = Vec::new();
            for _ in 0..5 {
                keys.push(next(&mut r).await.key);
            }
            keys
        });
        for i in 0..5 {
            spool
                .append(&format!("k{i}"), 1, Bytes::from(vec![1u8; 40]))
                .await
                .unwrap();
        }
        assert_eq!(waiter.await.unwrap(), vec!["k0", "k1", "k2", "k3", "k4"]);
        spool.shutdown().await;
    }

    #[tokio::test]
    async fn bad_record_in_the_middle_of_the_last_segment_keeps_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 1 << 16);
        let spool = open(&s, &["a"]);
        let all = keys("k", 10);
        fill(&spool, &all).await;
        spool.shutdown().await;
        let seg = segment_path(dir.path(), 1);
        let recs = records(&seg);
        assert_eq!(recs.len(), 10);
        let (off, key, size) = recs[4].clone();
        assert_eq!(key, "k4");
        flip(&seg, off + size - 1);
        let len = std::fs::metadata(&seg).unwrap().len();

        let (spool, metrics) = open_m(&s, &["a"]);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), len, "nothing cut");
        assert_eq!(metrics.spool_skipped_ranges.get(), 1);
        assert_eq!(metrics.spool_skipped_bytes.get(), size);
        assert_eq!(metrics.spool_keys_forgotten.get(), 1);
        assert_eq!(
            spool.lookup("k4"),
            None,
            "the damaged batch's key is forgotten"
        );
        for k in without(&all, &["k4"]) {
            assert_eq!(spool.lookup(&k), Some(1), "{k}");
        }
        let mut r = spool.reader("a");
        let got = read_keys(&mut r, 9).await;
        assert_eq!(got, without(&all, &["k4"]));
        assert_idle(&mut r).await;
        assert_eq!(metrics.spool_skipped_ranges.get(), 1, "counted once");

        // Everything delivered: segment 1 goes, and k4 stays forgotten across a restart.
        r.acker().ack(r.position());
        wait_for("segment 1 deleted", || !seg.exists()).await;
        spool.shutdown().await;
        drop(r);
        let spool = open(&s, &["a"]);
        assert_eq!(spool.lookup("k4"), None);
        assert_eq!(spool.lookup("k3"), Some(1));
        // A resend is stored again and delivered.
        assert_eq!(
            spool
                .append("k4", 1, Bytes::from_static(b"again"))
                .await
                .unwrap(),
            Appended::Stored
        );
        let mut r = spool.reader("a");
        let b = next(&mut r).await;
        assert_eq!((b.key.as_str(), &b.body[..]), ("k4", &b"again"[..]));
        spool.shutdown().await;
    }

    #[tokio::test]
    async fn corrupt_last_record_is_cut_and_its_key_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 1 << 16);
        let spool = open(&s, &["a"]);
        fill(&spool, &keys("t", 3)).await;
        spool.shutdown().await;
        let seg = segment_path(dir.path(), 1);
        let (off, _, _) = records(&seg)[2].clone();
        flip(&seg, off + HEADER as u64 + 5);
        let (spool, metrics) = open_m(&s, &["a"]);
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            off,
            "the tail is cut"
        );
        assert_eq!(metrics.spool_skipped_ranges.get(), 1);
        assert_eq!(spool.lookup("t2"), None);
        assert_eq!(spool.lookup("t1"), Some(1));
        let mut r = spool.reader("a");
        assert_eq!(read_keys(&mut r, 2).await, ["t0", "t1"]);
        assert_idle(&mut r).await;
        spool.shutdown().await;
    }

    #[tokio::test]
    async fn bad_record_in_a_sealed_segment_is_skipped_and_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 200);
        let spool = open(&s, &["a", "b"]);
        let all = keys("s", 12);
        fill(&spool, &all).await;
        spool.shutdown().await;
        let seg = segment_path(dir.path(), 1);
        let recs = records(&seg);
        assert!(recs.len() >= 3, "{recs:?}");
        assert!(segment_path(dir.path(), 2).exists());
        let (off, bad, _) = recs[1].clone();
        flip(&seg, off + HEADER as u64 + 20);

        let (spool, metrics) = open_m(&s, &["a", "b"]);
        assert_eq!(metrics.spool_skipped_ranges.get(), 1);
        assert_eq!(spool.lookup(&bad), None);
        let want = without(&all, &[bad.as_str()]);
        for name in ["a", "b"] {
            let mut r = spool.reader(name);
            assert_eq!(read_keys(&mut r, 11).await, want, "output {name}");
            assert_idle(&mut r).await;
        }
        assert_eq!(metrics.spool_skipped_ranges.get(), 1, "counted once");
        assert_eq!(metrics.spool_corrupt_records.get(), 1);
        spool.shutdown().await;
    }

    #[tokio::test]
    async fn bad_record_found_at_run_time_is_counted_once_and_its_key_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 200);
        let (spool, metrics) = open_m(&s, &["a", "b"]);
        let all = keys("r", 12);
        fill(&spool, &all).await;
        let seg = segment_path(dir.path(), 2);
        let (off, bad, _) = records(&seg)[1].clone();
        flip(&seg, off + HEADER as u64 + 20);
        let want = without(&all, &[bad.as_str()]);
        let mut ra = spool.reader("a");
        let mut rb = spool.reader("b");
        assert_eq!(read_keys(&mut ra, 11).await, want);
        assert_eq!(read_keys(&mut rb, 11).await, want);
        assert_eq!(metrics.spool_skipped_ranges.get(), 1, "counted once");
        assert_eq!(spool.lookup(&bad), None);
        assert_eq!(metrics.spool_keys_forgotten.get(), 1);
        assert_eq!(
            spool
                .append(&bad, 1, Bytes::from_static(b"again"))
                .await
                .unwrap(),
            Appended::Stored
        );
        assert_eq!(next(&mut ra).await.key, bad);
        spool.shutdown().await;
        drop((ra, rb));
        // keys.log was rewritten: the new record's location, not the damaged one's.
        let log = std::fs::read_to_string(dir.path().join("keys.log")).unwrap();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with(&format!("{bad} ")))
            .collect();
        assert_eq!(lines.len(), 1, "{log}");
        assert!(!lines[0].ends_with(&format!(" 2 {off}")), "{log}");
    }

    #[tokio::test]
    async fn huge_length_field_is_bounded_by_the_bytes_left() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 1 << 16);
        let spool = open(&s, &["a"]);
        let all = keys("h", 6);
        fill(&spool, &all).await;
        spool.shutdown().await;
        let seg = segment_path(dir.path(), 1);
        let recs = records(&seg);
        // One length within what a record may claim but past the segment's end, one beyond
        // any record.
        poke(&seg, recs[1].0 + 4, &0x7fff_fff0u32.to_le_bytes());
        poke(&seg, recs[3].0 + 4, &u32::MAX.to_le_bytes());
        let (spool, metrics) = open_m(&s, &["a"]);
        assert_eq!(metrics.spool_skipped_ranges.get(), 2);
        assert_eq!(metrics.spool_skipped_bytes.get(), recs[1].2 + recs[3].2);
        let mut r = spool.reader("a");
        assert_eq!(read_keys(&mut r, 4).await, ["h0", "h2", "h4", "h5"]);

        // And at run time, in the segment being written.
        fill(&spool, &keys("n", 3)).await;
        let seg2 = segment_path(dir.path(), 2);
        let recs2 = records(&seg2);
        poke(&seg2, recs2[0].0 + 4, &0x7fff_fff0u32.to_le_bytes());
        assert_eq!(read_keys(&mut r, 2).await, ["n1", "n2"]);
        assert_eq!(metrics.spool_skipped_ranges.get(), 3);
        assert_eq!(spool.lookup("n0"), None);
        spool.shutdown().await;
    }

    #[tokio::test]
    async fn sealed_segment_deleted_at_run_time_is_reported_and_passed() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 200);
        let (spool, metrics) = open_m(&s, &["a"]);
        let all = keys("d", 12);
        fill(&spool, &all).await;
        let mut r = spool.reader("a");
        assert_eq!(next(&mut r).await.key, "d0");
        let seg2 = segment_path(dir.path(), 2);
        let lost: Vec<String> = records(&seg2).into_iter().map(|r| r.1).collect();
        assert!(!lost.is_empty());
        let used = spool.used_bytes();
        std::fs::remove_file(&seg2).unwrap();
        let lost_refs: Vec<&str> = lost.iter().map(String::as_str).collect();
        let want = without(&all[1..], &lost_refs);
        assert_eq!(read_keys(&mut r, want.len()).await, want);
        assert_idle(&mut r).await;
        assert_eq!(metrics.spool_lost_segments.get(), 1);
        assert_eq!(metrics.spool_keys_forgotten.get(), lost.len() as u64);
        assert!(spool.used_bytes() < used);
        for k in &lost {
            assert_eq!(spool.lookup(k), None, "{k}");
        }
        assert_eq!(spool.lookup("d0"), Some(1));
        assert_eq!(
            spool
                .append(&lost[0], 1, Bytes::from_static(b"again"))
                .await
                .unwrap(),
            Appended::Stored
        );
        assert_eq!(next(&mut r).await.key, lost[0]);
        spool.shutdown().await;
    }

    #[tokio::test]
    async fn active_segment_deleted_moves_the_writer_to_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 1 << 16);
        let (spool, metrics) = open_m(&s, &["a", "b"]);
        fill(&spool, &keys("w", 2)).await;
        // A reader meets the vanished active segment while the writer is idle.
        std::fs::remove_file(segment_path(dir.path(), 1)).unwrap();
        let mut ra = spool.reader("a");
        let waiting = tokio::spawn(async move {
            let b = next(&mut ra).await;
            (b.key, b.end.segment)
        });
        wait_for("the loss is settled", || {
            metrics.spool_lost_segments.get() == 1
        })
        .await;
        assert_eq!(spool.lookup("w0"), None);
        fill(&spool, &keys("x", 1)).await;
        assert_eq!(
            waiting.await.unwrap(),
            (
                "x0".to_string(),
                // The first record of the new segment 2.
                2
            )
        );
        // The writer itself notices its active file gone before the next group.
        std::fs::remove_file(segment_path(dir.path(), 2)).unwrap();
        fill(&spool, &keys("y", 1)).await;
        assert_eq!(metrics.spool_lost_segments.get(), 2);
        assert_eq!(spool.lookup("x0"), None);
        assert_eq!(spool.lookup("y0"), Some(1));
        assert!(segment_path(dir.path(), 3).exists());
        let mut rb = spool.reader("b");
        assert_eq!(next(&mut rb).await.key, "y0");
        assert_eq!(metrics.spool_lost_segments.get(), 2, "counted once");
        spool.shutdown().await;
    }

    #[tokio::test]
    async fn segment_truncated_at_run_time_loses_only_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 200);
        let (spool, metrics) = open_m(&s, &["a"]);
        let all = keys("t", 12);
        fill(&spool, &all).await;
        let seg = segment_path(dir.path(), 1);
        let recs = records(&seg);
        assert!(recs.len() >= 4, "{recs:?}");
        // Cut in the middle of the third record: it and the fourth are lost.
        let cut = recs[2].0 + 10;
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let lost: Vec<&str> = recs[2..].iter().map(|r| r.1.as_str()).collect();
        let want = without(&all, &lost);
        let mut r = spool.reader("a");
        assert_eq!(read_keys(&mut r, want.len()).await, want);
        assert_idle(&mut r).await;
        assert_eq!(metrics.spool_lost_segments.get(), 1);
        for k in &lost {
            assert_eq!(spool.lookup(k), None, "{k}");
        }
        assert_eq!(spool.lookup(&recs[1].1), Some(1));
        spool.shutdown().await;
    }

    #[tokio::test]
    async fn keys_log_old_format_still_parses() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 1 << 16);
        std::fs::write(dir.path().join("cursor-a"), "5 0\n").unwrap();
        std::fs::write(
            dir.path().join("keys.log"),
            "old-1 5\nold-2 7\ndelivered 4 3 100\nlost 2 7 0\nnot a line\nbad key! 1\n",
        )
        .unwrap();
        let (spool, metrics) = open_m(&s, &["a"]);
        assert_eq!(spool.lookup("old-1"), Some(5));
        assert_eq!(spool.lookup("old-2"), Some(7));
        // Located before every cursor: delivered, still a duplicate.
        assert_eq!(spool.lookup("delivered"), Some(4));
        // Located after a cursor, with no record there: forgotten.
        assert_eq!(spool.lookup("lost"), None);
        assert_eq!(metrics.spool_keys_forgotten.get(), 1);
        assert_eq!(
            spool
                .append("old-1", 9, Bytes::from_static(b"x"))
                .await
                .unwrap(),
            Appended::Duplicate { events: 5 }
        );
        spool
            .append("new-1", 3, Bytes::from_static(b"x"))
            .await
            .unwrap();
        spool.shutdown().await;
        let log = std::fs::read_to_string(dir.path().join("keys.log")).unwrap();
        assert!(log.lines().any(|l| l == "old-1 5"), "{log}");
        assert!(log.lines().any(|l| l == "new-1 3 6 0"), "{log}");
        assert!(!log.contains("lost"), "{log}");
    }

    #[test]
    fn key_window_forgets_and_stays_bounded() {
        let mut w = KeyWindow::new(3);
        let at = |o| {
            Some(Position {
                segment: 1,
                offset: o,
            })
        };
        for (i, k) in ["a", "b", "c"].iter().enumerate() {
            w.insert(k.to_string(), 1, at(i as u64));
        }
        let gone = w.forget(|l| l.offset == 1);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, "b");
        w.insert("b".into(), 2, at(10));
        w.insert("d".into(), 1, at(11));
        // "a" is the oldest live key; the stale slot of the first "b" is not.
        assert_eq!(w.get("a"), None);
        assert_eq!(w.get("b"), Some(2));
        assert_eq!((w.get("c"), w.get("d")), (Some(1), Some(1)));
        let order: Vec<String> = w.entries().into_iter().map(|e| e.0).collect();
        assert_eq!(order, ["c", "b", "d"]);
        for i in 0..1000 {
            w.insert(format!("k{i}"), 1, at(100 + i));
            w.forget(|l| l.offset >= 100);
        }
        // The first insert evicted "c"; the stale slots of forgotten keys do not pile up.
        assert_eq!((w.get("b"), w.get("d"), w.map.len()), (Some(2), Some(1), 2));
        assert!(w.order.len() <= 2 * 3 + 64 + 1, "{}", w.order.len());
    }
}
