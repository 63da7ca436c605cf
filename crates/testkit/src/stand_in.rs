//! A stand-in relay that answers every batch after a delay, for tests of the collector's
//! behaviour against a slow peer. It speaks just enough of docs/channel.md: reads a POST,
//! gunzips the body, records its lines (`TAG MESSAGE`), answers 200. It is not the relay: no
//! spool, no idempotency, no limits.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use crate::process::Lines;

/// The stand-in's port and what it recorded.
pub struct SlowRelay {
    pub port: u16,
    pub lines: Lines,
}

impl SlowRelay {
    /// Listens on a free loopback port; answers each batch `delay` after reading it.
    pub fn start(delay: Duration) -> SlowRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let lines = Lines::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let sink = sink.clone();
                std::thread::spawn(move || serve_slow(stream, delay, sink));
            }
        });
        SlowRelay { port, lines }
    }
}

fn serve_slow(stream: std::net::TcpStream, delay: Duration, sink: Lines) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut text = String::new();
        let _ = flate2::read::MultiGzDecoder::new(&body[..]).read_to_string(&mut text);
        std::thread::sleep(delay);
        let events = text.lines().count();
        sink.extend(text.lines().map(str::to_string));
        let answer = format!("{{\"events\":{events},\"duplicate\":false}}");
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
