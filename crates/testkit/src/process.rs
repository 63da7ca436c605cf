//! The binaries under test as child processes: found by path next to the test executable,
//! started with `--config`, their output collected line by line on reader threads, stopped
//! with SIGTERM (and a deadline) or SIGKILL; killed on drop so no test leaves one behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Error;

/// A binary of the workspace, by name, in the target directory of the running test (cargo
/// puts test executables in `target/<profile>/deps` and binaries one level up). Panics with a
/// hint when it was not built.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let path = exe
        .ancestors()
        .skip(1)
        .map(|dir| dir.join(name))
        .take(2)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{name} is missing next to {}: run the tests with `cargo test --workspace` \
                 (or build it first)",
                exe.display()
            )
        });
    path
}

/// Lines a child printed (each as read, with its `\n`), collected by a reader thread.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<Vec<u8>>>>);

impl Lines {
    /// Collects the lines of `stream` on a thread; echoes them on stderr as `[name] line` when
    /// `echo` names the process.
    pub fn collect(
        stream: impl std::io::Read + Send + 'static,
        echo: Option<&'static str>,
    ) -> Self {
        let lines = Lines::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if let Some(name) = echo {
                            eprintln!("[{name}] {}", text_of(&line));
                        }
                        sink.0.lock().unwrap().push(line);
                    }
                }
            }
        });
        lines
    }

    /// Adds a line (for receivers written in the tests).
    pub fn push(&self, line: String) {
        self.0.lock().unwrap().push(line.into_bytes());
    }

    /// Adds several lines.
    pub fn extend<I: IntoIterator<Item = String>>(&self, lines: I) {
        self.0
            .lock()
            .unwrap()
            .extend(lines.into_iter().map(String::into_bytes));
    }

    /// Every line so far, bytes as read (with the `\n`).
    pub fn raw(&self) -> Vec<Vec<u8>> {
        self.0.lock().unwrap().clone()
    }

    /// Every line so far as text, without its line end.
    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(|l| text_of(l)).collect()
    }

    /// How many lines so far.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// True before the first line.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every line so far, joined with `\n`.
    pub fn text(&self) -> String {
        self.snapshot().join("\n")
    }

    /// Lines containing every one of `needles`.
    pub fn matching(&self, needles: &[&str]) -> Vec<String> {
        self.snapshot()
            .into_iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .collect()
    }

    /// Messages recorded by a stand-in relay (lines are `TAG MESSAGE`), counted.
    pub fn counted(&self) -> std::collections::BTreeMap<String, usize> {
        let mut seen = std::collections::BTreeMap::new();
        for line in self.snapshot() {
            let message = line
                .split_once(' ')
                .map(|(_, m)| m.to_string())
                .unwrap_or(line);
            *seen.entry(message).or_insert(0) += 1;
        }
        seen
    }

    /// Waits (blocking) until at least `n` lines arrived; returns them. Panics after `timeout`.
    pub fn wait_lines(&self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        crate::wait::wait_lines(n, timeout, || self.raw(), String::new)
    }
}

/// A line as text without its line end.
fn text_of(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line).into_owned()
}

/// A child process killed on drop, with its captured output.
pub struct Proc {
    pub child: Child,
    /// Empty unless the output was captured ([`Proc::capture`]).
    pub stdout: Lines,
    pub stderr: Lines,
    /// `http://127.0.0.1:PORT` serving its `GET /metrics`, when it has one.
    pub metrics: Option<String>,
}

impl Proc {
    /// `program --config config` with `RUST_LOG=info` and no stdin; the caller may add to it.
    pub fn command(program: &Path, config: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        cmd
    }

    /// Starts `cmd` with stdout and stderr captured (stderr echoed as `[name] line`).
    pub fn capture(mut cmd: Command, name: &'static str) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = Lines::collect(child.stdout.take().expect("stdout"), None);
        let stderr = Lines::collect(child.stderr.take().expect("stderr"), Some(name));
        Proc {
            child,
            stdout,
            stderr,
            metrics: None,
        }
    }

    /// Starts `program --config config` with its output captured.
    pub fn spawn(program: &Path, config: &Path, name: &'static str) -> Proc {
        Proc::capture(Proc::command(program, config), name)
    }

    /// A child started by the caller (output wherever the caller sent it).
    pub fn from_child(child: Child) -> Proc {
        Proc {
            child,
            stdout: Lines::default(),
            stderr: Lines::default(),
            metrics: None,
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: i32) {
        signal(&self.child, sig);
    }

    /// SIGTERM, then the exit status (waits up to 30 s, then panics).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        wait_exit(&mut self.child, Duration::from_secs(30))
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL after `grace` if it still runs.
    pub fn stop(&mut self, grace: Duration) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its metrics, in the Prometheus text format (empty when it serves none).
    pub fn metrics_text(&self) -> String {
        self.metrics
            .as_deref()
            .map(|m| crate::metrics::http(m, "GET", "/metrics"))
            .unwrap_or_default()
    }

    /// The sum of every series of the counter `name` (0 when absent).
    pub fn counter(&self, name: &str) -> u64 {
        crate::metrics::metric_sum(&self.metrics_text(), name, &[])
    }

    /// Waits until the process wrote a complete line (`ADDRESS\n`) into `path` (the relay's
    /// `address_file`); returns the address. Fails when the process exits first or after
    /// `timeout`.
    pub fn wait_address_file(&mut self, path: &Path, timeout: Duration) -> Result<String, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(text) = std::fs::read_to_string(path) {
                if text.ends_with('\n') {
                    return Ok(text.trim().to_string());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Harness(format!("exited early: {status}")));
            }
            if Instant::now() >= deadline {
                return Err(Error::Harness(format!(
                    "did not write its address into {}",
                    path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `sig` to `child`.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Waits for `child` to exit; panics after `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_bytes_and_give_text() {
        let lines = Lines::collect(&b"a b\nc\r\nlast"[..], None);
        let got = crate::wait::poll(Duration::from_secs(5), || lines.len() == 3);
        assert!(got);
        assert_eq!(lines.snapshot(), ["a b", "c", "last"]);
        assert_eq!(lines.raw()[0], b"a b\n");
        assert_eq!(lines.counted().get("b"), Some(&1));
    }
}
