//! Processed-object ledger: remembers objects (bucket, key, ETag) whose events were all
//! confirmed, so a redelivered message does not send them again. Optional, off by default.
//!
//! It only cuts duplicates; it is never needed for correctness. So entries are appended and
//! flushed but not fsynced (a lost entry costs a duplicate), they expire after a TTL, and the
//! ledger holds at most a fixed number (oldest evicted first). The file is one JSON array per
//! line, `[unix_secs, bucket, key, etag]`, compacted when opened. "Persistence reset" in the
//! Devo collector's terms is a new `short_unique_id` or deleting the file.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why the ledger could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("ledger {path}: {source}")]
pub struct LedgerError {
    path: String,
    #[source]
    source: std::io::Error,
}

type Entry = (String, String, String);

struct State {
    seen: HashMap<Entry, u64>,
    order: VecDeque<(u64, Entry)>,
    file: BufWriter<File>,
}

/// A ledger file and its entries in memory.
pub struct Ledger {
    path: PathBuf,
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

impl Ledger {
    /// Opens (or creates) the ledger at `path`, dropping expired entries.
    pub fn open(path: &Path, ttl: Duration, max_entries: usize) -> Result<Ledger, LedgerError> {
        let err = |source| LedgerError {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let cutoff = now_secs().saturating_sub(ttl.as_secs());
        let mut seen = HashMap::new();
        let mut order = VecDeque::new();
        if let Ok(file) = File::open(path) {
            for line in BufReader::new(file).lines() {
                let Ok(line) = line else { break };
                // A torn last line (crash mid-append) or a foreign line is skipped.
                let Ok((ts, bucket, key, etag)) =
                    serde_json::from_str::<(u64, String, String, String)>(&line)
                else {
                    continue;
                };
                if ts >= cutoff {
                    let entry = (bucket, key, etag);
                    seen.insert(entry.clone(), ts);
                    order.push_back((ts, entry));
                }
            }
        }
        while order.len() > max_entries {
            if let Some((_, e)) = order.pop_front() {
                seen.remove(&e);
            }
        }
        // Compact: rewrite what is still valid, then append from there.
        let tmp = path.with_extension("tmp");
        {
            let mut w = BufWriter::new(File::create(&tmp).map_err(err)?);
            for (ts, (b, k, e)) in &order {
                let line = serde_json::to_string(&(ts, b, k, e)).unwrap_or_default();
                writeln!(w, "{line}").map_err(err)?;
            }
            w.flush().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)?;
        let file = OpenOptions::new().append(true).open(path).map_err(err)?;
        Ok(Ledger {
            path: path.to_path_buf(),
            ttl,
            max_entries,
            state: Mutex::new(State {
                seen,
                order,
                file: BufWriter::new(file),
            }),
        })
    }

    /// True when the object was recorded within the TTL.
    pub fn contains(&self, bucket: &str, key: &str, etag: &str) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let entry = (bucket.to_string(), key.to_string(), etag.to_string());
        state
            .seen
            .get(&entry)
            .is_some_and(|&ts| ts >= now_secs().saturating_sub(self.ttl.as_secs()))
    }

    /// Records a delivered object. A write failure is logged, not returned: the ledger only
    /// saves duplicates.
    pub fn record(&self, bucket: &str, key: &str, etag: &str) {
        let ts = now_secs();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let entry = (bucket.to_string(), key.to_string(), etag.to_string());
        state.seen.insert(entry.clone(), ts);
        state.order.push_back((ts, entry));
        while state.order.len() > self.max_entries {
            if let Some((old_ts, e)) = state.order.pop_front() {
                // Only forget it if no newer record of the same object exists.
                if state.seen.get(&e) == Some(&old_ts) {
                    state.seen.remove(&e);
                }
            }
        }
        let line = serde_json::to_string(&(ts, bucket, key, etag)).unwrap_or_default();
        let written = writeln!(state.file, "{line}").and_then(|_| state.file.flush());
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "ledger append failed (duplicates possible)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_across_reopen_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/objects.ledger");
        let ledger = Ledger::open(&path, Duration::from_secs(3600), 10).unwrap();
        assert!(!ledger.contains("b", "k\n1", "e"));
        ledger.record("b", "k\n1", "e");
        assert!(ledger.contains("b", "k\n1", "e"));
        assert!(!ledger.contains("b", "k\n1", "other-etag"));
        drop(ledger);
        let ledger = Ledger::open(&path, Duration::from_secs(3600), 10).unwrap();
        assert!(ledger.contains("b", "k\n1", "e"));
        // An old entry on disk is dropped when opened.
        std::fs::write(&path, "[1,\"b\",\"old\",\"e\"]\n{torn").unwrap();
        let ledger = Ledger::open(&path, Duration::from_secs(3600), 10).unwrap();
        assert!(!ledger.contains("b", "old", "e"));
    }

    #[test]
    fn bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("l"), Duration::from_secs(3600), 2).unwrap();
        ledger.record("b", "1", "e");
        ledger.record("b", "2", "e");
        ledger.record("b", "3", "e");
        assert!(!ledger.contains("b", "1", "e"));
        assert!(ledger.contains("b", "3", "e"));
    }
}
