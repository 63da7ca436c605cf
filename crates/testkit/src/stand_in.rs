//! Stand-ins for the relay's HTTP side, for tests of the collector's behaviour against a peer
//! that misbehaves: a plain HTTP/1.1 server (keep-alive, `Content-Length` bodies) whose answer
//! the test chooses, and on it a slow relay that answers every batch after a delay. They speak
//! just enough of docs/channel.md; they are not the relay (no spool, no idempotency, no limits).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use crate::process::Lines;

/// One request as a stand-in read it.
pub struct Request {
    /// `POST /v1/batches` and the like (the request line without the version).
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// A stand-in's answer: status and JSON body.
pub type Answer = (u16, String);

/// A plain HTTP/1.1 server on a free loopback port, one thread per connection, answering each
/// request with what `answer` says.
pub struct StandIn {
    pub port: u16,
}

impl StandIn {
    pub fn start(answer: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let answer = answer.clone();
                std::thread::spawn(move || serve(stream, &*answer));
            }
        });
        StandIn { port }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn serve(stream: std::net::TcpStream, answer: &dyn Fn(&Request) -> Answer) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut first = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if first.is_empty() {
                first = line.clone();
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
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
        let mut words = first.split_whitespace();
        let request = Request {
            method: words.next().unwrap_or_default().to_string(),
            path: words.next().unwrap_or_default().to_string(),
            body,
        };
        let (status, text) = answer(&request);
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// A stand-in relay that answers every batch after `delay`: gunzips the body, records its
/// lines (`TAG MESSAGE`), answers 200.
pub struct SlowRelay {
    pub port: u16,
    pub lines: Lines,
}

impl SlowRelay {
    /// Listens on a free loopback port; answers each batch `delay` after reading it.
    pub fn start(delay: Duration) -> SlowRelay {
        let lines = Lines::default();
        let sink = lines.clone();
        let stand_in = StandIn::start(move |request| {
            let mut text = String::new();
            let _ = flate2::read::MultiGzDecoder::new(&request.body[..]).read_to_string(&mut text);
            std::thread::sleep(delay);
            let events = text.lines().count();
            sink.extend(text.lines().map(str::to_string));
            (200, format!("{{\"events\":{events},\"duplicate\":false}}"))
        });
        SlowRelay {
            port: stand_in.port,
            lines,
        }
    }
}
