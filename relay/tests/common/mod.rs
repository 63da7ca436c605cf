//! Helpers shared by the relay's process-level tests: start the real `sluice-relay` binary on
//! 127.0.0.1:0 with a config written into a temporary directory, read the address it bound,
//! collect what it prints on stdout, stop it with SIGTERM or SIGKILL.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_channel::client::ChannelClient;
use sluice_channel::encode::{BatchEncoder, EncodedBatch};

/// A running relay process.
pub struct Relay {
    pub child: Child,
    pub address: String,
    pub lines: Arc<Mutex<Vec<Vec<u8>>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

/// Writes `config` (which must hold `ADDRESS_FILE` where the address file goes) and starts the
/// relay; waits until it listens.
pub fn start(dir: &Path, config: &str) -> Relay {
    start_env(dir, config, &[])
}

pub fn start_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Relay {
    let address_file = dir.join("address");
    let _ = std::fs::remove_file(&address_file);
    let config = config.replace("ADDRESS_FILE", &address_file.display().to_string());
    let config_path = dir.join("relay.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-relay"));
    cmd.arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("relay starts");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().unwrap();
    {
        let lines = lines.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => lines.lock().unwrap().push(line),
                }
            }
        });
    }
    let stderr_lines = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    {
        let out = stderr_lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("relay: {line}");
                out.lock().unwrap().push(line);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let address = loop {
        if let Ok(text) = std::fs::read_to_string(&address_file) {
            if text.ends_with('\n') {
                break text.trim().to_string();
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("relay exited early: {status}");
        }
        assert!(Instant::now() < deadline, "relay did not write its address");
        std::thread::sleep(Duration::from_millis(20));
    };
    Relay {
        child,
        address,
        lines,
        stderr: stderr_lines,
    }
}

impl Relay {
    pub fn url(&self) -> String {
        if self.address.starts_with("unix:") {
            self.address.clone()
        } else {
            format!("http://{}", self.address)
        }
    }

    pub fn client(&self, token: Option<&str>) -> ChannelClient {
        ChannelClient::new(
            &self.url(),
            token.map(str::to_string),
            Duration::from_secs(10),
        )
        .unwrap()
    }

    /// Waits until stdout holds at least `n` lines; returns them.
    pub fn wait_lines(&self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let l = self.lines.lock().unwrap();
                if l.len() >= n {
                    return l.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} lines arrived",
                self.lines.lock().unwrap().len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// SIGTERM, then the exit status (waits up to 30 s).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        signal(&self.child, libc::SIGTERM);
        wait_exit(&mut self.child, Duration::from_secs(30))
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        signal(&self.child, libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sends a signal to the child we spawned, by its pid.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "relay did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A batch of `(tag, message)` events.
pub fn batch(events: &[(&str, &str)]) -> EncodedBatch {
    let mut e = BatchEncoder::new(6);
    for (t, m) in events {
        e.push(t, m.as_bytes());
    }
    e.finish()
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

/// `Mmm dd HH:MM:SS`, day padded with a space.
pub fn assert_date(date: &[u8]) {
    let d = std::str::from_utf8(date).unwrap();
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    assert!(months.contains(&&d[0..3]), "{d:?}");
    assert_eq!(&d[3..4], " ");
    let day = d[4..6].trim_start().parse::<u32>().unwrap();
    assert!((1..=31).contains(&day), "{d:?}");
    if day < 10 {
        assert_eq!(&d[4..5], " ", "day padded with a space: {d:?}");
    }
    assert_eq!(&d[6..7], " ");
    for (i, c) in d[7..].char_indices() {
        if i == 2 || i == 5 {
            assert_eq!(c, ':', "{d:?}");
        } else {
            assert!(c.is_ascii_digit(), "{d:?}");
        }
    }
}

pub fn spool_config(spool: &Path, extra_listen: &str, outputs: &str) -> String {
    format!(
        "[listen]\naddress = \"127.0.0.1:0\"\naddress_file = \"ADDRESS_FILE\"\n{extra_listen}\n\
         [spool]\ndir = \"{}\"\n\n{outputs}\n",
        spool.display()
    )
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

pub fn tmp() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().to_path_buf();
    (d, p)
}

pub mod receiver;

/// A plain HTTP/1.1 GET; returns (status, body).
pub fn http_get(address: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(address).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// The value of metric `series` (`name` or `name{labels}`, exactly as exposed) in a
/// /metrics text.
pub fn metric_value(text: &str, series: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `GET /metrics` until `series` satisfies `ok` (metrics are bumped after the effect a
/// test sees, e.g. stdout lines before `events_delivered_total`); returns the text. Panics
/// with the last text after `timeout`.
pub fn wait_metric(
    address: &str,
    series: &str,
    ok: impl Fn(i64) -> bool,
    timeout: Duration,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, text) = http_get(address, "/metrics");
        if metric_value(&text, series).is_some_and(&ok) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached the expected value:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first word of each received line's message (the tests' event ids).
pub fn ids(lines: &[Vec<u8>]) -> std::collections::HashSet<String> {
    lines
        .iter()
        .filter_map(|l| {
            let text = String::from_utf8_lossy(l);
            let msg = text.split_once(": ")?.1;
            Some(msg.split(' ').next()?.to_string())
        })
        .collect()
}
