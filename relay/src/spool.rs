//! The crash-safe disk spool: an append-only log of segment files holding every accepted batch
//! as received (compressed), with per-output cursors and a bounded window of idempotency keys.
//!
//! Layout under `spool.dir`:
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: segments, numbered in order. A record is
//!   `magic "SLR1" | payload length u32 LE | crc32 of payload u32 LE | payload`, the payload
//!   `key length u8 | key | events u64 LE | body`.
//! - `keys.log`: `KEY EVENTS` lines, the idempotency keys of every stored batch (bounded window,
//!   compacted by rewrite + rename).
//! - `cursor-NAME`: `SEGMENT OFFSET`, how far output NAME has delivered.
//! - `lock`: held with flock so two relays never share a spool.
//!
//! One writer thread owns every file it changes: it takes appends in groups, writes them, makes
//! them durable with one `fdatasync` per group (group commit) and only then answers each of them
//! and publishes the new durable end to the readers. The same thread persists cursors and
//! deletes segments that every output has passed (after syncing `keys.log`, so the keys of a
//! deleted segment are durable elsewhere). On start the last segment is verified record by
//! record and a torn or corrupt tail is reported and cut off; readers verify every record's
//! checksum and skip the rest of a segment at a corrupt record (reported and counted).
//!
//! Written here rather than taken from a crate: the embedded stores (sled, redb, fjall) keep
//! values in their own trees and would copy every multi-megabyte batch again, and the segment
//! log crates found do not offer per-reader cursors with group commit; this log is ~600 lines
//! with tests.
//!
//! It does not decode batches (the ingest checked them) and does not deliver (outputs do).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::SpoolSettings;
use crate::metrics::Metrics;

const MAGIC: &[u8; 4] = b"SLR1";
const HEADER: usize = 12;
/// Largest record size beyond its body: header, key length, key, event count.
const RECORD_OVERHEAD: u64 = HEADER as u64 + 1 + crate::protocol::MAX_KEY_BYTES as u64 + 8;
/// Largest payload a record may claim; anything above is corruption.
const MAX_PAYLOAD: u32 = u32::MAX / 2;
/// A group commit takes at most this many bytes before it syncs.
const GROUP_BYTES: usize = 8 * 1024 * 1024;

/// A place in the log: segment number and byte offset inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
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
    pub start: Position,
    pub end: Position,
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
    Shutdown(oneshot::Sender<()>),
}

/// The idempotency window: the last N keys with their event counts.
#[derive(Default)]
struct KeyWindow {
    map: HashMap<String, u64>,
    order: VecDeque<String>,
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
        self.map.get(key).copied()
    }
    fn insert(&mut self, key: String, events: u64) {
        if self.map.insert(key.clone(), events).is_none() {
            self.order.push_back(key);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
}

struct Shared {
    dir: PathBuf,
    settings: SpoolSettings,
    used: AtomicU64,
    keys: Mutex<KeyWindow>,
    /// Known segments and their sizes; the last one is the active one.
    segments: Mutex<BTreeMap<u64, u64>>,
    committed: watch::Sender<Position>,
    metrics: Arc<Metrics>,
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

/// A record read back: key, events, body, and its size on disk.
type Record = (String, u64, Vec<u8>, u64);

/// Reads one record at the reader's current place. `Ok(None)` at a clean end of file.
fn read_record(r: &mut impl Read, path: &Path, offset: u64) -> Result<Option<Record>, SpoolError> {
    let corrupt = |reason: String| SpoolError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match r.read(&mut header[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(path)(e)),
        }
    }
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER {
        return Err(corrupt(format!(
            "torn record header ({got} of {HEADER} bytes)"
        )));
    }
    if &header[..4] != MAGIC {
        return Err(corrupt("bad record magic".into()));
    }
    let len = u32::from_le_bytes(header[4..8].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default());
    if !(1 + 8..=MAX_PAYLOAD).contains(&len) {
        return Err(corrupt(format!("record length {len} out of range")));
    }
    let mut payload = Vec::new();
    let n = r
        .take(len as u64)
        .read_to_end(&mut payload)
        .map_err(io_err(path))?;
    if n < len as usize {
        return Err(corrupt(format!("torn record ({n} of {len} payload bytes)")));
    }
    if crc32fast::hash(&payload) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    let klen = payload[0] as usize;
    if payload.len() < 1 + klen + 8 {
        return Err(corrupt("record shorter than its key".into()));
    }
    let key = String::from_utf8(payload[1..1 + klen].to_vec())
        .map_err(|_| corrupt("key is not UTF-8".into()))?;
    let events = u64::from_le_bytes(
        payload[1 + klen..1 + klen + 8]
            .try_into()
            .unwrap_or_default(),
    );
    let body = payload.split_off(1 + klen + 8);
    Ok(Some((key, events, body, HEADER as u64 + len as u64)))
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

/// Everything found on disk at start.
struct Recovered {
    segments: BTreeMap<u64, u64>,
    keys: Vec<(String, u64)>,
}

/// Scans the spool directory: verifies the last segment and cuts a torn tail, collects keys.
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
    let mut segments = BTreeMap::new();
    let mut keys = Vec::new();
    let last = ids.last().copied();
    for id in ids {
        let path = segment_path(dir, id);
        let file = File::open(&path).map_err(io_err(&path))?;
        let len = file.metadata().map_err(io_err(&path))?.len();
        let mut r = BufReader::with_capacity(1 << 20, file);
        let mut offset = 0u64;
        loop {
            match read_record(&mut r, &path, offset) {
                Ok(Some((key, events, _body, size))) => {
                    keys.push((key, events));
                    offset += size;
                }
                Ok(None) => break,
                Err(e @ SpoolError::Io { .. }) => return Err(e),
                Err(e) => {
                    metrics.spool_corrupt_records.inc();
                    if Some(id) == last {
                        // Only the active segment can be torn (a crash mid-write); what is past
                        // the last whole record was never answered 200.
                        tracing::warn!(
                            error = %e,
                            dropped_bytes = len - offset,
                            "spool: torn or corrupt tail of the last segment, cut off"
                        );
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(io_err(&path))?;
                        f.set_len(offset).map_err(io_err(&path))?;
                        f.sync_all().map_err(io_err(&path))?;
                    } else {
                        tracing::error!(
                            error = %e,
                            skipped_bytes = len - offset,
                            "spool: corrupt record inside a sealed segment; the rest of that \
                             segment is skipped"
                        );
                    }
                    break;
                }
            }
        }
        let size = if Some(id) == last { offset } else { len };
        segments.insert(id, size);
    }
    Ok(Recovered { segments, keys })
}

fn read_keys_log(path: &Path) -> Result<Vec<(String, u64)>, SpoolError> {
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
        let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
        if let Some((k, e)) = text.split_once(' ') {
            if let Ok(events) = e.parse() {
                if crate::protocol::validate_idempotency_key(k) {
                    out.push((k.to_string(), events));
                }
            }
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

impl Spool {
    /// Opens (or creates) the spool for the outputs named `outputs`, recovering what is there.
    pub fn open(
        settings: &SpoolSettings,
        outputs: &[String],
        metrics: Arc<Metrics>,
    ) -> Result<Spool, SpoolError> {
        let dir = settings.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        // SAFETY: flock on a descriptor we own; the file stays open for the writer's life.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(SpoolError::Locked { path: dir });
        }

        let recovered = recover(&dir, &metrics)?;
        let keys_path = dir.join("keys.log");
        let mut window = KeyWindow::new(settings.keys_window);
        let mut key_lines = 0usize;
        for (k, e) in read_keys_log(&keys_path)? {
            window.insert(k, e);
            key_lines += 1;
        }
        for (k, e) in recovered.keys {
            window.insert(k, e);
        }
        let mut segments = recovered.segments;
        let mut cursors = HashMap::new();
        for name in outputs {
            let first = segments.keys().next().copied().unwrap_or(0);
            let pos = read_cursor(&cursor_path(&dir, name)).unwrap_or(Position {
                segment: first,
                offset: 0,
            });
            cursors.insert(name.clone(), pos);
        }
        // Appends always go to a fresh segment, so a recovered segment is never written again;
        // numbers only grow, even when every segment was deleted, so no cursor is ahead of them.
        let active = segments
            .keys()
            .next_back()
            .copied()
            .into_iter()
            .chain(cursors.values().map(|p: &Position| p.segment))
            .max()
            .unwrap_or(0)
            + 1;
        let active_path = segment_path(&dir, active);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&active_path)
            .map_err(io_err(&active_path))?;
        sync_dir(&dir)?;
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
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            settings: settings.clone(),
            used: AtomicU64::new(used),
            keys: Mutex::new(window),
            segments: Mutex::new(segments),
            committed,
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
            cursors,
            cursors_dirty: HashMap::new(),
            _lock: lock,
        };
        // Segments already passed by every output (a crash before their deletion) go now.
        writer.collect_garbage();
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run())
            .map_err(io_err(&dir))?;
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
    pub fn lookup(&self, key: &str) -> Option<u64> {
        self.shared
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
    }

    /// Bytes on disk in segments.
    pub fn used_bytes(&self) -> u64 {
        self.shared.used.load(Ordering::Relaxed)
    }

    /// True while a batch of `bytes` would be taken.
    pub fn has_room(&self, bytes: u64) -> bool {
        self.used_bytes() + bytes + RECORD_OVERHEAD <= self.shared.settings.max_bytes
    }

    /// Seconds a refused producer should wait.
    pub fn retry_after_secs(&self) -> u64 {
        self.shared.settings.retry_after_secs
    }

    /// A reader for output `name`, starting at its persisted cursor.
    pub fn reader(&self, name: &str) -> SpoolReader {
        let dir = &self.shared.dir;
        let first = self
            .shared
            .segments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
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
        }
    }

    /// Stops the writer after the commands already sent, syncing what it holds.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

/// Tells the spool how far an output has delivered. Cheap to clone.
#[derive(Clone)]
pub struct Acker {
    name: String,
    tx: mpsc::UnboundedSender<Cmd>,
}

impl Acker {
    /// Everything before `pos` was delivered: persist the cursor, free what no output needs.
    pub fn ack(&self, pos: Position) {
        let _ = self.tx.send(Cmd::Ack {
            name: self.name.clone(),
            pos,
        });
    }
}

/// Reads one output's batches in log order, waiting for new ones.
pub struct SpoolReader {
    shared: Arc<Shared>,
    committed: watch::Receiver<Position>,
    pos: Position,
    file: Option<(u64, File)>,
    acker: Acker,
}

impl SpoolReader {
    /// The acker that moves this output's persisted cursor.
    pub fn acker(&self) -> Acker {
        self.acker.clone()
    }

    /// Where the next read starts.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// The next durable batch; waits until there is one. Corrupt records are reported and
    /// skipped (the rest of their segment with them).
    pub async fn next(&mut self) -> Result<StoredBatch, SpoolError> {
        loop {
            let committed = *self.committed.borrow_and_update();
            let limit = if self.pos.segment == committed.segment {
                Some(committed.offset)
            } else if self.pos.segment < committed.segment {
                let size = self
                    .shared
                    .segments
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&self.pos.segment)
                    .copied();
                match size {
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
                Some(limit) if self.pos.offset < limit => match self.read_one().await {
                    Ok(batch) => return Ok(batch),
                    Err(e @ SpoolError::Io { .. }) => return Err(e),
                    Err(e) => {
                        self.shared.metrics.spool_corrupt_records.inc();
                        tracing::error!(error = %e, "spool: corrupt record; rest of segment skipped");
                        if self.pos.segment < committed.segment {
                            self.hop();
                        } else {
                            self.pos.offset = committed.offset;
                        }
                    }
                },
                Some(_) if self.pos.segment < committed.segment => self.hop(),
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
        let next = self
            .shared
            .segments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .range(self.pos.segment + 1..)
            .next()
            .map(|(id, _)| *id);
        self.file = None;
        self.pos = Position {
            segment: next.unwrap_or(self.pos.segment + 1),
            offset: 0,
        };
    }

    async fn read_one(&mut self) -> Result<StoredBatch, SpoolError> {
        let pos = self.pos;
        let path = segment_path(&self.shared.dir, pos.segment);
        let cached = self.file.take().filter(|(id, _)| *id == pos.segment);
        let (file, result) = tokio::task::spawn_blocking(move || {
            let mut file = match cached {
                Some((_, f)) => f,
                None => match File::open(&path) {
                    Ok(f) => f,
                    Err(e) => return (None, Err(io_err(&path)(e))),
                },
            };
            if let Err(e) = file.seek(SeekFrom::Start(pos.offset)) {
                return (Some(file), Err(io_err(&path)(e)));
            }
            let r = read_record(&mut file, &path, pos.offset);
            let r = match r {
                Ok(Some(rec)) => Ok(rec),
                Ok(None) => Err(SpoolError::Corrupt {
                    path: path.clone(),
                    offset: pos.offset,
                    reason: "end of file before the durable end".into(),
                }),
                Err(e) => Err(e),
            };
            (Some(file), r)
        })
        .await
        .map_err(|e| SpoolError::Io {
            path: self.shared.dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        self.file = file.map(|f| (pos.segment, f));
        let (key, events, body, size) = result?;
        self.pos.offset += size;
        Ok(StoredBatch {
            key,
            events,
            body: Bytes::from(body),
            start: pos,
            end: self.pos,
        })
    }
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
                    Cmd::Shutdown(reply) => stop = Some(reply),
                }
            }
            if !appends.is_empty() {
                self.commit_group(appends);
            }
            if acked {
                self.persist_cursors();
                self.collect_garbage();
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

    fn commit_group(&mut self, appends: Vec<(String, u64, Bytes, Reply)>) {
        if self.active_size >= self.shared.settings.segment_bytes {
            if let Err(e) = self.roll() {
                tracing::error!(error = %e, "spool: cannot start a new segment");
                for (_, _, _, reply) in appends {
                    let _ = reply.send(Err(AppendError::Io(e.to_string())));
                }
                return;
            }
        }
        let start_size = self.active_size;
        let max = self.shared.settings.max_bytes;
        // (reply, outcome) sent only after the sync.
        let mut answers: Vec<(Reply, Appended)> = Vec::new();
        let mut group_keys: HashMap<String, u64> = HashMap::new();
        let mut write_error = None;
        for (key, events, body, reply) in appends {
            let known = self
                .shared
                .keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .or_else(|| group_keys.get(&key).copied());
            if let Some(events) = known {
                answers.push((reply, Appended::Duplicate { events }));
                continue;
            }
            let header = encode_header(&key, events, &body);
            let size = (header.len() + body.len()) as u64;
            if size > max / 2 {
                let _ = reply.send(Err(AppendError::TooLarge(size)));
                continue;
            }
            let used = self.shared.used.load(Ordering::Relaxed);
            if used + (self.active_size - start_size) + size > max {
                self.shared.metrics.spool_full_events.inc();
                let _ = reply.send(Err(AppendError::Full {
                    retry_after_secs: self.shared.settings.retry_after_secs,
                }));
                continue;
            }
            if write_error.is_none() {
                let r = self
                    .file
                    .write_all(&header)
                    .and_then(|_| self.file.write_all(&body));
                match r {
                    Ok(()) => {
                        self.active_size += size;
                        group_keys.insert(key, events);
                        answers.push((reply, Appended::Stored));
                    }
                    Err(e) => {
                        write_error = Some(e.to_string());
                        let _ = reply.send(Err(AppendError::Io(e.to_string())));
                    }
                }
            } else {
                let _ = reply.send(Err(AppendError::Io(
                    write_error.clone().unwrap_or_default(),
                )));
            }
        }
        if self.active_size > start_size || write_error.is_some() {
            let synced = if write_error.is_none() {
                self.file.sync_data().map_err(|e| e.to_string())
            } else {
                Err(write_error.clone().unwrap_or_default())
            };
            if let Err(e) = synced {
                // What this group wrote is not known to be durable: cut it off and continue in
                // a new segment, answering every batch of the group with an error (retryable).
                tracing::error!(error = %e, segment = self.active, "spool: write or sync failed");
                let _ = self.file.set_len(start_size);
                self.active_size = start_size;
                for (reply, _) in answers {
                    let _ = reply.send(Err(AppendError::Io(e.clone())));
                }
                if let Err(e) = self.roll() {
                    tracing::error!(error = %e, "spool: cannot start a new segment");
                }
                return;
            }
            let added = self.active_size - start_size;
            let used = self.shared.used.fetch_add(added, Ordering::Relaxed) + added;
            self.shared.metrics.spool_bytes.set(used as i64);
            self.shared
                .segments
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(self.active, self.active_size);
        }
        {
            let mut window = self.shared.keys.lock().unwrap_or_else(|e| e.into_inner());
            for (key, events) in &group_keys {
                window.insert(key.clone(), *events);
            }
        }
        for (key, events) in &group_keys {
            // Not synced here: keys.log is synced before any segment (which also holds the
            // keys) is deleted, and recovery reads keys from both.
            let _ = writeln!(self.keys_file, "{key} {events}");
            self.key_lines += 1;
            self.keys_dirty = true;
        }
        let _ = self.keys_file.flush();
        if self.key_lines > 2 * self.shared.settings.keys_window {
            self.compact_keys();
        }
        self.shared.committed.send_replace(Position {
            segment: self.active,
            offset: self.active_size,
        });
        for (reply, outcome) in answers {
            let _ = reply.send(Ok(outcome));
        }
    }

    /// Seals the active segment and opens the next one.
    fn roll(&mut self) -> Result<(), SpoolError> {
        let dir = self.shared.dir.clone();
        let old = segment_path(&dir, self.active);
        self.file.sync_data().map_err(io_err(&old))?;
        let next = self.active + 1;
        let path = segment_path(&dir, next);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        sync_dir(&dir)?;
        self.file = file;
        self.active = next;
        self.active_size = 0;
        let count = {
            let mut segs = self
                .shared
                .segments
                .lock()
                .unwrap_or_else(|e| e.into_inner());
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
        let doomed: Vec<(u64, u64)> = {
            let segs = self
                .shared
                .segments
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            segs.iter()
                .filter(|(id, size)| {
                    **id != self.active
                        && (**id < min.segment || (**id == min.segment && min.offset >= **size))
                })
                .map(|(id, size)| (*id, *size))
                .collect()
        };
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
            self.shared
                .segments
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
        }
        let used = self.shared.used.fetch_sub(freed, Ordering::Relaxed) - freed;
        self.shared.metrics.spool_bytes.set(used as i64);
        let count = self
            .shared
            .segments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        self.shared.metrics.spool_segments.set(count as i64);
    }

    fn compact_keys(&mut self) {
        let window: Vec<(String, u64)> = {
            let w = self.shared.keys.lock().unwrap_or_else(|e| e.into_inner());
            w.order
                .iter()
                .filter_map(|k| w.map.get(k).map(|e| (k.clone(), *e)))
                .collect()
        };
        let mut text = String::with_capacity(window.len() * 32);
        for (k, e) in &window {
            text.push_str(k);
            text.push(' ');
            text.push_str(&e.to_string());
            text.push('\n');
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
        ra.acker().ack(last);
        tokio::time::sleep(Duration::from_millis(50)).await;
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
}
