//! Processed-object ledger: remembers, per object version (bucket, key, ETag), that all its
//! events were confirmed, and — while an object is part-way — a checkpoint: how many of its
//! first events the relay confirmed, for one fingerprint of the processing spec. A redelivered
//! message then skips delivered objects and, for a part-delivered one, its first N events
//! (processing is deterministic for the same bytes and spec).
//!
//! It only cuts duplicates; it is never needed for correctness. So entries are appended and
//! flushed but not fsynced (a lost entry costs a duplicate), they expire after a TTL, and the
//! ledger holds at most a fixed number of entries, checkpoints included (the least recently
//! written evicted first). In memory an entry is a 128-bit digest of the version (and 64 bits
//! of one of the fingerprint) plus its counters: about 100 bytes with the map's overhead and
//! its place in the eviction order, so the default 100,000 entries cost some 10 MB whatever
//! the key lengths.
//!
//! Without a file (no `state_dir`) it cuts the duplicates of one process's life. With one, the
//! file is one JSON array per line, `[unix_secs, bucket, key, etag]` for a delivered object and
//! `[unix_secs, bucket, key, etag, fingerprint, events]` for a checkpoint (the last line of a
//! slot wins). It is compacted when opened and whenever its lines outgrow twice the live
//! entries: the lines still live are copied (each live entry remembers its line). "Persistence
//! reset" in the Devo collector's terms is a new `short_unique_id` or deleting the file.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::Digest;

use crate::config::LedgerSettings;

/// Why the ledger could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("ledger {path}: {source}")]
pub struct LedgerError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// What an entry is about: the digest of an object version, and for a checkpoint the digest
/// of the spec fingerprint (0: the version was delivered whole). Plain words, so the map's
/// entries stay small (no 16-byte alignment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Slot {
    version: [u64; 2],
    spec: u64,
}

/// `Entry::line` of an entry that has no line in the file.
const NO_LINE: u64 = u64::MAX;

fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(w)
}

fn digest(parts: &[&str]) -> [u8; 16] {
    let mut h = md5::Md5::new();
    for p in parts {
        // Length-prefixed, so ("ab","c") and ("a","bc") differ.
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

impl Slot {
    fn done(bucket: &str, key: &str, etag: &str) -> Slot {
        let d = digest(&[bucket, key, etag]);
        Slot {
            version: [word(&d[..8]), word(&d[8..])],
            spec: 0,
        }
    }

    fn partial(bucket: &str, key: &str, etag: &str, fingerprint: &str) -> Slot {
        Slot {
            spec: word(&digest(&[fingerprint])[..8]).max(1),
            ..Slot::done(bucket, key, etag)
        }
    }

    fn is_checkpoint(&self) -> bool {
        self.spec != 0
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Written at (unix seconds), for the TTL.
    ts: u64,
    /// Write sequence: tells the live entry from stale places in `order`.
    seq: u64,
    /// Events confirmed (checkpoints).
    events: u64,
    /// Index of its line in the file, or [`NO_LINE`].
    line: u64,
}

/// One line of the file.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Line {
    Done(u64, String, String, String),
    Partial(u64, String, String, String, String, u64),
}

impl Line {
    fn parse(bytes: &[u8]) -> Option<(Slot, u64, u64)> {
        Some(match serde_json::from_slice::<Line>(bytes).ok()? {
            Line::Done(ts, b, k, e) => (Slot::done(&b, &k, &e), ts, 0),
            Line::Partial(ts, b, k, e, fp, events) => (Slot::partial(&b, &k, &e, &fp), ts, events),
        })
    }
}

struct State {
    live: HashMap<Slot, Entry>,
    /// Slots in write order, oldest first; a slot written again appears again (the older
    /// place is stale: its seq no longer matches).
    order: VecDeque<(u64, Slot)>,
    next_seq: u64,
    file: Option<BufWriter<File>>,
    /// Lines in the file (the index of the next one).
    lines: u64,
}

/// The ledger of one input.
pub struct Ledger {
    path: Option<PathBuf>,
    ttl: Duration,
    max_entries: usize,
    state: Mutex<State>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl State {
    fn insert(&mut self, slot: Slot, entry: Entry, max_entries: usize) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.live.insert(slot, Entry { seq, ..entry });
        self.order.push_back((seq, slot));
        while self.live.len() > max_entries {
            let Some((seq, slot)) = self.order.pop_front() else {
                break;
            };
            if self.live.get(&slot).is_some_and(|e| e.seq == seq) {
                self.live.remove(&slot);
            }
        }
        // Rewritten checkpoints leave stale places behind: drop them before they outnumber
        // the live ones, so memory stays bounded by `max_entries`.
        if self.order.len() > 2 * self.live.len() + 64 {
            let live = &self.live;
            self.order
                .retain(|(seq, slot)| live.get(slot).is_some_and(|e| e.seq == *seq));
        }
    }
}

impl Ledger {
    /// The ledger `settings` describe: in memory, or the file at `settings.path` (opened or
    /// created, expired entries dropped).
    pub fn open(settings: &LedgerSettings) -> Result<Ledger, LedgerError> {
        let mut state = State {
            live: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            file: None,
            lines: 0,
        };
        let max_entries = settings.max_entries.max(1);
        if let Some(path) = &settings.path {
            let err = |source| LedgerError {
                path: path.display().to_string(),
                source,
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            load(path, settings.ttl, max_entries, &mut state).map_err(err)?;
            state.file = Some(compact(path, &mut state).map_err(err)?);
        }
        Ok(Ledger {
            path: settings.path.clone(),
            ttl: settings.ttl,
            max_entries,
            state: Mutex::new(state),
        })
    }

    /// An in-memory ledger.
    pub fn in_memory(ttl: Duration, max_entries: usize) -> Ledger {
        Ledger {
            path: None,
            ttl,
            max_entries: max_entries.max(1),
            state: Mutex::new(State {
                live: HashMap::new(),
                order: VecDeque::new(),
                next_seq: 0,
                file: None,
                lines: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, slot: &Slot) -> Option<Entry> {
        let cutoff = now_secs().saturating_sub(self.ttl.as_secs());
        self.lock()
            .live
            .get(slot)
            .filter(|e| e.ts >= cutoff)
            .copied()
    }

    /// True when the object was recorded delivered within the TTL.
    pub fn contains(&self, bucket: &str, key: &str, etag: &str) -> bool {
        self.get(&Slot::done(bucket, key, etag)).is_some()
    }

    /// Events of the object version confirmed so far with the spec `fingerprint` (0 when
    /// unknown, expired, or recorded with another fingerprint).
    pub fn checkpoint(&self, bucket: &str, key: &str, etag: &str, fingerprint: &str) -> u64 {
        self.get(&Slot::partial(bucket, key, etag, fingerprint))
            .map_or(0, |e| e.events)
    }

    /// Records that the first `events` events of the object version (spec `fingerprint`) were
    /// confirmed. Called after every confirmed batch.
    pub fn set_checkpoint(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        fingerprint: &str,
        events: u64,
    ) {
        let slot = Slot::partial(bucket, key, etag, fingerprint);
        let ts = now_secs();
        self.write(slot, ts, events, None, || {
            serde_json::to_string(&(ts, bucket, key, etag, fingerprint, events))
        });
    }

    /// Records a delivered object, and forgets its checkpoint for `fingerprint` (the
    /// delivered entry supersedes it). A write failure is logged, not returned: the ledger
    /// only saves duplicates.
    pub fn record(&self, bucket: &str, key: &str, etag: &str, fingerprint: Option<&str>) {
        let stale = fingerprint.map(|fp| Slot::partial(bucket, key, etag, fp));
        let ts = now_secs();
        self.write(Slot::done(bucket, key, etag), ts, 0, stale, || {
            serde_json::to_string(&(ts, bucket, key, etag))
        });
    }

    fn write(
        &self,
        slot: Slot,
        ts: u64,
        events: u64,
        remove: Option<Slot>,
        line: impl FnOnce() -> serde_json::Result<String>,
    ) {
        let mut state = self.lock();
        if let Some(stale) = &remove {
            state.live.remove(stale);
        }
        let mut entry = Entry {
            ts,
            seq: 0,
            events,
            line: NO_LINE,
        };
        let Some(path) = &self.path else {
            state.insert(slot, entry, self.max_entries);
            return;
        };
        let line = line().unwrap_or_default();
        let written = match state.file.as_mut() {
            Some(file) => writeln!(file, "{line}").and_then(|_| file.flush()),
            None => Ok(()),
        };
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "ledger append failed (duplicates possible)");
        } else if state.file.is_some() {
            entry.line = state.lines;
            state.lines += 1;
        }
        state.insert(slot, entry, self.max_entries);
        // Checkpoints are rewritten per batch: compact before the file grows far past what
        // it holds.
        if state.lines > 2 * state.live.len() as u64 + 1024 {
            state.file = None;
            match compact(path, &mut state) {
                Ok(file) => state.file = Some(file),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ledger compaction failed (duplicates possible)");
                    // Appending goes on; the line indices are unknown now, so the next
                    // compaction keeps nothing older than this point.
                    state.file = OpenOptions::new()
                        .append(true)
                        .open(path)
                        .ok()
                        .map(BufWriter::new);
                    for e in state.live.values_mut() {
                        e.line = NO_LINE;
                    }
                }
            }
        }
    }
}

/// The file's lines, split on LF (the same count `load` and `compact` see).
fn file_lines(path: &Path) -> std::io::Result<Option<std::io::Split<BufReader<File>>>> {
    match File::open(path) {
        Ok(f) => Ok(Some(BufReader::new(f).split(b'\n'))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads the file's entries within the TTL into `state`.
fn load(path: &Path, ttl: Duration, max_entries: usize, state: &mut State) -> std::io::Result<()> {
    let cutoff = now_secs().saturating_sub(ttl.as_secs());
    let Some(lines) = file_lines(path)? else {
        return Ok(());
    };
    for (index, line) in lines.enumerate() {
        let line = line?;
        // A torn last line (crash mid-append) or a foreign line is skipped.
        let Some((slot, ts, events)) = Line::parse(&line) else {
            continue;
        };
        if ts >= cutoff {
            let entry = Entry {
                ts,
                seq: 0,
                events,
                line: index as u64,
            };
            state.insert(slot, entry, max_entries);
        }
    }
    // A checkpoint of a version since delivered is of no more use.
    let superseded: Vec<Slot> = state
        .live
        .keys()
        .filter(|s| s.is_checkpoint() && state.live.contains_key(&Slot { spec: 0, ..**s }))
        .copied()
        .collect();
    for slot in &superseded {
        state.live.remove(slot);
    }
    Ok(())
}

/// Rewrites the file with the lines of the live entries, then opens it for appending.
fn compact(path: &Path, state: &mut State) -> std::io::Result<BufWriter<File>> {
    let keep: HashMap<u64, Slot> = state
        .live
        .iter()
        .filter(|(_, e)| e.line != NO_LINE)
        .map(|(slot, e)| (e.line, *slot))
        .collect();
    let tmp = path.with_extension("tmp");
    let mut kept = 0u64;
    {
        let mut w = BufWriter::new(File::create(&tmp)?);
        if let Some(lines) = file_lines(path)? {
            for (index, line) in lines.enumerate() {
                let line = line?;
                let Some(slot) = keep.get(&(index as u64)) else {
                    continue;
                };
                w.write_all(&line)?;
                w.write_all(b"\n")?;
                if let Some(e) = state.live.get_mut(slot) {
                    e.line = kept;
                }
                kept += 1;
            }
        }
        w.flush()?;
    }
    std::fs::rename(&tmp, path)?;
    state.lines = kept;
    Ok(BufWriter::new(OpenOptions::new().append(true).open(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_disk(path: &Path, max_entries: usize) -> Ledger {
        Ledger::open(&LedgerSettings {
            path: Some(path.to_path_buf()),
            ttl: Duration::from_secs(3600),
            max_entries,
        })
        .unwrap()
    }

    #[test]
    fn remembers_across_reopen_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/objects.ledger");
        let ledger = on_disk(&path, 10);
        assert!(!ledger.contains("b", "k\n1", "e"));
        ledger.record("b", "k\n1", "e", None);
        assert!(ledger.contains("b", "k\n1", "e"));
        assert!(!ledger.contains("b", "k\n1", "other-etag"));
        drop(ledger);
        let ledger = on_disk(&path, 10);
        assert!(ledger.contains("b", "k\n1", "e"));
        // An old entry on disk is dropped when opened.
        std::fs::write(&path, "[1,\"b\",\"old\",\"e\"]\n{torn").unwrap();
        let ledger = on_disk(&path, 10);
        assert!(!ledger.contains("b", "old", "e"));
    }

    #[test]
    fn entries_stay_small() {
        // The memory figure in the module doc and README: map entry + place in the order.
        assert_eq!(std::mem::size_of::<(Slot, Entry)>(), 56);
        assert_eq!(std::mem::size_of::<(u64, Slot)>(), 32);
    }

    #[test]
    fn bounded() {
        let ledger = Ledger::in_memory(Duration::from_secs(3600), 2);
        ledger.record("b", "1", "e", None);
        ledger.record("b", "2", "e", None);
        ledger.record("b", "3", "e", None);
        assert!(!ledger.contains("b", "1", "e"));
        assert!(ledger.contains("b", "3", "e"));
    }

    #[test]
    fn checkpoint_skips_n_for_the_same_fingerprint_only() {
        let ledger = Ledger::in_memory(Duration::from_secs(3600), 10);
        assert_eq!(ledger.checkpoint("b", "k", "e", "fp1"), 0);
        ledger.set_checkpoint("b", "k", "e", "fp1", 100);
        ledger.set_checkpoint("b", "k", "e", "fp1", 250);
        assert_eq!(ledger.checkpoint("b", "k", "e", "fp1"), 250);
        // Another spec, or another version of the object: start from the beginning.
        assert_eq!(ledger.checkpoint("b", "k", "e", "fp2"), 0);
        assert_eq!(ledger.checkpoint("b", "k", "e2", "fp1"), 0);
        assert!(
            !ledger.contains("b", "k", "e"),
            "a checkpoint is not delivered"
        );
        ledger.record("b", "k", "e", Some("fp1"));
        assert!(ledger.contains("b", "k", "e"));
        assert_eq!(ledger.checkpoint("b", "k", "e", "fp1"), 0, "superseded");
    }

    #[test]
    fn checkpoint_persisted_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("objects.ledger");
        let ledger = on_disk(&path, 10);
        ledger.set_checkpoint("b", "part", "e", "fp", 10);
        ledger.set_checkpoint("b", "part", "e", "fp", 20);
        ledger.set_checkpoint("b", "whole", "e", "fp", 5);
        ledger.record("b", "whole", "e", Some("fp"));
        drop(ledger);
        let ledger = on_disk(&path, 10);
        assert_eq!(
            ledger.checkpoint("b", "part", "e", "fp"),
            20,
            "last line wins"
        );
        assert!(ledger.contains("b", "whole", "e"));
        assert_eq!(ledger.checkpoint("b", "whole", "e", "fp"), 0);
        // Compacted when opened: one line per live entry.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn checkpoints_count_toward_the_bound_and_the_file_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("objects.ledger");
        let ledger = on_disk(&path, 3);
        for events in 1..=5000 {
            ledger.set_checkpoint("b", "big", "e", "fp", events);
        }
        assert_eq!(ledger.checkpoint("b", "big", "e", "fp"), 5000);
        {
            let state = ledger.lock();
            assert_eq!(state.live.len(), 1);
            assert!(state.order.len() <= 2 + 64 + 1, "{}", state.order.len());
        }
        // Compacted on the way: far fewer lines than writes.
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 1025 + 1, "{lines} lines");
        for k in ["1", "2", "3"] {
            ledger.record("b", k, "e", None);
        }
        assert_eq!(ledger.checkpoint("b", "big", "e", "fp"), 0, "evicted");
        assert!(["1", "2", "3"].iter().all(|k| ledger.contains("b", k, "e")));
        drop(ledger);
        let ledger = on_disk(&path, 3);
        assert!(["1", "2", "3"].iter().all(|k| ledger.contains("b", k, "e")));
        assert_eq!(ledger.checkpoint("b", "big", "e", "fp"), 0);
    }
}
