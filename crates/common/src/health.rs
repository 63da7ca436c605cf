//! The `health` subcommand's probe, shared by both binaries: one blocking `GET {path}` over TCP
//! (`ip:port`, `host:port`) or a unix socket (`unix:/path`), Ok only for a 2xx status line.
//!
//! It exists because the runtime image has no shell and no curl: Docker's HEALTHCHECK and
//! Kubernetes exec probes run the binary itself. It is std only (no async runtime, no logging
//! set-up), sends no token (`/health` and `/ready` need none) and reads nothing past the status
//! line. It does not follow redirects or speak TLS: both listeners are plain HTTP.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a probe may take when the caller does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Exit code: the probe answered 2xx.
pub const EXIT_HEALTHY: u8 = 0;
/// Exit code: not reachable, not 2xx, or no answer in time.
pub const EXIT_UNHEALTHY: u8 = 1;
/// Exit code: the configuration (or the address in it) cannot be probed.
pub const EXIT_CONFIG: u8 = 2;

/// The longest status line read: a real one is ~20 bytes; more without a line end is not HTTP.
const MAX_STATUS_LINE: usize = 1024;

/// What was probed, for error messages: `GET /health on 127.0.0.1:7700`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub address: String,
    pub path: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GET {} on {}", self.path, self.address)
    }
}

/// Why a probe failed. [`HealthError::Invalid`] is the caller's mistake (a configuration
/// error); every other variant means the listener is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("{target}: {message}")]
    Invalid { target: Target, message: String },
    #[error("{target}: cannot connect: {source}")]
    Connect {
        target: Target,
        #[source]
        source: io::Error,
    },
    #[error("{target}: no answer within {timeout:?} (while {stage})")]
    Timeout {
        target: Target,
        stage: &'static str,
        timeout: Duration,
    },
    #[error("{target}: {stage}: {source}")]
    Io {
        target: Target,
        stage: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{target}: answered {code} {reason}")]
    Status {
        target: Target,
        code: u16,
        reason: String,
    },
    #[error("{target}: not an HTTP status line: {line:?}")]
    Unparsable { target: Target, line: String },
}

impl HealthError {
    /// The process exit code this error maps to: [`EXIT_CONFIG`] for an address or path that
    /// cannot be probed, [`EXIT_UNHEALTHY`] for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            HealthError::Invalid { .. } => EXIT_CONFIG,
            _ => EXIT_UNHEALTHY,
        }
    }
}

/// Sends `GET {path} HTTP/1.1` to `address` and reads the status line; Ok only for 2xx.
///
/// `address` is `ip:port`, `host:port` or `unix:/path`; a wildcard ip (`0.0.0.0`, `[::]`) is
/// probed on the loopback of its family, where a listener bound to it answers. The whole probe
/// (resolving, connecting, writing, reading) ends within `timeout`: each socket step gets what
/// is left of it, and the probe runs on a thread of its own so that the steps std cannot bound
/// (name resolution, a unix connect to a full backlog) cannot hold the caller past it.
pub fn probe(address: &str, path: &str, timeout: Duration) -> Result<(), HealthError> {
    let target = Target {
        address: address.to_string(),
        path: path.to_string(),
    };
    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_whitespace() || b < 0x20) {
        return Err(HealthError::Invalid {
            target,
            message: "the path must start with / and hold no spaces or control characters".into(),
        });
    }
    let deadline = Instant::now() + timeout;
    let (tx, rx) = mpsc::channel();
    let job_target = target.clone();
    std::thread::Builder::new()
        .name("health-probe".into())
        .spawn(move || {
            let _ = tx.send(exchange(&job_target, deadline, timeout));
        })
        .map_err(|source| HealthError::Io {
            target: target.clone(),
            stage: "starting the probe thread",
            source,
        })?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        // Timed out, or the thread died (it cannot panic on any input, but say something).
        Err(_) => Err(HealthError::Timeout {
            target,
            stage: "waiting for the probe",
            timeout,
        }),
    }
}

/// Connects, sends the request and checks the status line.
fn exchange(target: &Target, deadline: Instant, timeout: Duration) -> Result<(), HealthError> {
    let timed_out = |stage| HealthError::Timeout {
        target: target.clone(),
        stage,
        timeout,
    };
    let io_error = |stage: &'static str, source: io::Error| {
        if matches!(
            source.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            timed_out(stage)
        } else {
            HealthError::Io {
                target: target.clone(),
                stage,
                source,
            }
        }
    };
    let (mut stream, host) = connect(target, deadline, timeout)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sluice-health\r\nConnection: close\r\n\r\n",
        target.path
    );
    stream
        .set_write_timeout(Some(left(deadline).ok_or_else(|| timed_out("writing"))?))
        .map_err(|e| io_error("writing", e))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| io_error("writing", e))?;
    let mut line = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    loop {
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            line.truncate(end);
            break;
        }
        if line.len() > MAX_STATUS_LINE {
            break;
        }
        stream
            .set_read_timeout(Some(left(deadline).ok_or_else(|| timed_out("reading"))?))
            .map_err(|e| io_error("reading", e))?;
        match stream.read(&mut buf) {
            Ok(0) if line.is_empty() => {
                return Err(HealthError::Io {
                    target: target.clone(),
                    stage: "reading",
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection closed without an answer",
                    ),
                })
            }
            Ok(0) => break,
            Ok(n) => line.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error("reading", e)),
        }
    }
    check_status(target, &line)
}

/// Parses `HTTP/1.x NNN reason`; Ok for 2xx.
fn check_status(target: &Target, line: &[u8]) -> Result<(), HealthError> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    let unparsable = || HealthError::Unparsable {
        target: target.clone(),
        line: text.chars().take(120).collect(),
    };
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    let reason = parts.next().unwrap_or("").trim().to_string();
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(unparsable());
    }
    let code: u16 = code.parse().map_err(|_| unparsable())?;
    if !(100..=599).contains(&code) {
        return Err(unparsable());
    }
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(HealthError::Status {
            target: target.clone(),
            code,
            reason,
        })
    }
}

/// The time left before `deadline`, None once it passed.
fn left(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// A connected stream of either kind.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// Opens the stream; returns it with the `Host` header's value.
fn connect(
    target: &Target,
    deadline: Instant,
    timeout: Duration,
) -> Result<(Stream, String), HealthError> {
    let invalid = |message: String| HealthError::Invalid {
        target: target.clone(),
        message,
    };
    let address = target.address.as_str();
    if let Some(path) = address.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(invalid("unix: needs a path".into()));
        }
        let stream =
            UnixStream::connect(Path::new(path)).map_err(|source| HealthError::Connect {
                target: target.clone(),
                source,
            })?;
        return Ok((Stream::Unix(stream), "localhost".into()));
    }
    let candidates: Vec<SocketAddr> = match address.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => {
            if address.rsplit_once(':').is_none() {
                return Err(invalid("expected ip:port, host:port or unix:/path".into()));
            }
            address
                .to_socket_addrs()
                .map_err(|source| HealthError::Connect {
                    target: target.clone(),
                    source,
                })?
                .collect()
        }
    };
    if candidates.iter().any(|a| a.port() == 0) {
        return Err(invalid(
            "port 0 is chosen at start-up: there is no fixed port to probe".into(),
        ));
    }
    let mut last = None;
    for candidate in candidates.into_iter().map(loopback_if_wildcard) {
        let Some(remaining) = left(deadline) else {
            break;
        };
        match TcpStream::connect_timeout(&candidate, remaining) {
            Ok(stream) => {
                // A wildcard was replaced by loopback: name what was really dialled.
                let host = if address.parse::<SocketAddr>().is_ok() {
                    candidate.to_string()
                } else {
                    address.to_string()
                };
                return Ok((Stream::Tcp(stream), host));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            HealthError::Timeout {
                target: target.clone(),
                stage: "connecting",
                timeout,
            }
        }
        Some(source) => HealthError::Connect {
            target: target.clone(),
            source,
        },
        None => HealthError::Timeout {
            target: target.clone(),
            stage: "connecting",
            timeout,
        },
    })
}

/// `0.0.0.0:p` -> `127.0.0.1:p`, `[::]:p` -> `[::1]:p`; other addresses unchanged.
fn loopback_if_wildcard(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), a.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), a.port())
        }
        _ => a,
    }
}

/// Parses a `--timeout` value: a positive number of seconds, fractions allowed, at most an
/// hour.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{text:?} is not a number of seconds in (0, 3600]")),
    }
}

/// Probes and prints one line to stderr, `{who}: GET /health on ADDRESS: healthy` or the
/// reason it is not; returns the exit code ([`EXIT_HEALTHY`], [`EXIT_UNHEALTHY`] or
/// [`EXIT_CONFIG`]). For the binaries' `health` subcommands.
pub fn check(who: &str, address: &str, path: &str, timeout: Duration) -> u8 {
    let started = Instant::now();
    match probe(address, path, timeout) {
        Ok(()) => {
            eprintln!(
                "{who}: GET {path} on {address}: healthy ({} ms)",
                started.elapsed().as_millis()
            );
            EXIT_HEALTHY
        }
        Err(e) => {
            let verdict = match e.exit_code() {
                EXIT_CONFIG => "cannot probe",
                _ => "unhealthy",
            };
            eprintln!("{who}: {verdict}: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::unix::net::UnixListener;
    use std::sync::{Arc, Mutex};

    const QUICK: Duration = Duration::from_millis(500);

    /// Accepts one connection on a thread, records the request head and answers `answer`
    /// (None: holds the connection open without a word until the test ends).
    fn serve_once<S: Read + Write + Send + 'static>(
        accept: impl FnOnce() -> S + Send + 'static,
        answer: Option<&'static [u8]>,
    ) -> Arc<Mutex<String>> {
        let seen = Arc::new(Mutex::new(String::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            let mut stream = accept();
            let mut head = Vec::new();
            let mut buf = [0u8; 256];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            *record.lock().unwrap() = String::from_utf8_lossy(&head).into_owned();
            match answer {
                Some(bytes) => {
                    let _ = stream.write_all(bytes);
                }
                // Silent: keep the stream until well after the probe gave up.
                None => std::thread::sleep(Duration::from_secs(5)),
            }
        });
        seen
    }

    fn tcp(answer: Option<&'static [u8]>) -> (String, Arc<Mutex<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let seen = serve_once(move || listener.accept().unwrap().0, answer);
        (address, seen)
    }

    #[test]
    fn a_200_is_healthy_and_the_request_is_minimal() {
        let (address, seen) = tcp(Some(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        probe(&address, "/health", QUICK).unwrap();
        let head = seen.lock().unwrap().clone();
        assert!(head.starts_with("GET /health HTTP/1.1\r\n"), "{head:?}");
        assert!(
            head.contains(&format!("\r\nHost: {address}\r\n")),
            "{head:?}"
        );
        assert!(head.contains("\r\nConnection: close\r\n"), "{head:?}");
        assert!(!head.to_ascii_lowercase().contains("authorization"));
    }

    #[test]
    fn http_1_0_without_a_reason_phrase_is_fine() {
        let (address, _) = tcp(Some(b"HTTP/1.0 204\r\n\r\n"));
        probe(&address, "/ready", QUICK).unwrap();
    }

    #[test]
    fn a_503_is_unhealthy_with_its_code() {
        let (address, _) = tcp(Some(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"));
        let e = probe(&address, "/ready", QUICK).unwrap_err();
        assert!(
            matches!(&e, HealthError::Status { code: 503, reason, .. } if reason == "Service Unavailable"),
            "{e:?}"
        );
        assert_eq!(e.exit_code(), EXIT_UNHEALTHY);
        let text = e.to_string();
        assert!(text.contains(&address) && text.contains("/ready"), "{text}");
    }

    #[test]
    fn garbage_is_unparsable() {
        let (address, _) = tcp(Some(b"SSH-2.0-OpenSSH_9.6\r\n"));
        let e = probe(&address, "/health", QUICK).unwrap_err();
        assert!(
            matches!(&e, HealthError::Unparsable { line, .. } if line.starts_with("SSH-")),
            "{e:?}"
        );
        assert_eq!(e.exit_code(), EXIT_UNHEALTHY);
    }

    #[test]
    fn endless_bytes_without_a_line_end_are_unparsable() {
        static NOISE: [u8; 4096] = [b'x'; 4096];
        let (address, _) = tcp(Some(&NOISE));
        let e = probe(&address, "/health", QUICK).unwrap_err();
        assert!(matches!(e, HealthError::Unparsable { .. }), "{e:?}");
    }

    #[test]
    fn a_peer_closing_without_a_word_is_an_io_error() {
        let (address, _) = tcp(Some(b""));
        let e = probe(&address, "/health", QUICK).unwrap_err();
        assert!(matches!(e, HealthError::Io { .. }), "{e:?}");
    }

    #[test]
    fn a_silent_peer_times_out_within_the_timeout() {
        let (address, _) = tcp(None);
        let started = Instant::now();
        let e = probe(&address, "/health", QUICK).unwrap_err();
        let took = started.elapsed();
        assert!(matches!(e, HealthError::Timeout { .. }), "{e:?}");
        assert!(took < QUICK + Duration::from_millis(250), "took {took:?}");
        assert_eq!(e.exit_code(), EXIT_UNHEALTHY);
    }

    #[test]
    fn nothing_listening_is_a_connect_error() {
        let address = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let e = probe(&address, "/health", QUICK).unwrap_err();
        assert!(matches!(e, HealthError::Connect { .. }), "{e:?}");
        assert!(e.to_string().contains(&address));
        assert_eq!(e.exit_code(), EXIT_UNHEALTHY);
    }

    #[test]
    fn a_wildcard_address_is_probed_on_loopback() {
        let (address, _) = tcp(Some(b"HTTP/1.1 200 OK\r\n\r\n"));
        let port = address.rsplit_once(':').unwrap().1;
        probe(&format!("0.0.0.0:{port}"), "/health", QUICK).unwrap();
    }

    #[test]
    fn a_host_name_is_resolved() {
        let (address, seen) = tcp(Some(b"HTTP/1.1 200 OK\r\n\r\n"));
        let port = address.rsplit_once(':').unwrap().1;
        let named = format!("localhost:{port}");
        // localhost may resolve to ::1 first, where nothing listens: the next address is tried.
        probe(&named, "/health", QUICK).unwrap();
        assert!(seen.lock().unwrap().contains(&format!("Host: {named}\r\n")));
    }

    #[test]
    fn a_unix_socket_is_probed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let seen = serve_once(
            move || listener.accept().unwrap().0,
            Some(b"HTTP/1.1 200 OK\r\n\r\n"),
        );
        let address = format!("unix:{}", path.display());
        probe(&address, "/health", QUICK).unwrap();
        assert!(seen.lock().unwrap().contains("Host: localhost\r\n"));
    }

    #[test]
    fn a_unix_socket_answering_503_or_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.sock");
        let listener = UnixListener::bind(&path).unwrap();
        serve_once(
            move || listener.accept().unwrap().0,
            Some(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"),
        );
        let address = format!("unix:{}", path.display());
        let e = probe(&address, "/ready", QUICK).unwrap_err();
        assert!(matches!(e, HealthError::Status { code: 503, .. }), "{e:?}");

        let gone = format!("unix:{}", dir.path().join("nothing.sock").display());
        let e = probe(&gone, "/health", QUICK).unwrap_err();
        assert!(matches!(e, HealthError::Connect { .. }), "{e:?}");
    }

    #[test]
    fn bad_addresses_and_paths_are_config_errors() {
        for (address, path) in [
            ("no-port-here", "/health"),
            ("127.0.0.1:0", "/health"),
            ("unix:", "/health"),
            ("127.0.0.1:9", "health"),
            ("127.0.0.1:9", "/a b"),
            ("127.0.0.1:9", "/a\r\nX: y"),
        ] {
            let e = probe(address, path, QUICK).unwrap_err();
            assert!(
                matches!(e, HealthError::Invalid { .. }),
                "{address} {path}: {e:?}"
            );
            assert_eq!(e.exit_code(), EXIT_CONFIG);
        }
    }

    #[test]
    fn timeouts_parse_as_positive_seconds() {
        assert_eq!(parse_timeout("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_timeout("0.25"), Ok(Duration::from_millis(250)));
        for bad in ["0", "-1", "nan", "inf", "1e9", "two", ""] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn check_maps_outcomes_to_exit_codes() {
        let (address, _) = tcp(Some(b"HTTP/1.1 200 OK\r\n\r\n"));
        assert_eq!(check("test", &address, "/health", QUICK), EXIT_HEALTHY);
        let (address, _) = tcp(Some(b"HTTP/1.1 500 Oops\r\n\r\n"));
        assert_eq!(check("test", &address, "/health", QUICK), EXIT_UNHEALTHY);
        assert_eq!(check("test", "nowhere", "/health", QUICK), EXIT_CONFIG);
    }
}
