//! The producer's side of the channel: POSTs finished batches to a relay and classifies the
//! answer as confirmed, retryable (with the relay's `Retry-After`) or refused; reads the caps
//! the relay applies (`GET /v1/limits`, the documented defaults when the relay predates it).
//!
//! It keeps a few idle keep-alive connections and opens more on demand. It does not retry by
//! itself: the caller owns the retry loop, so it can stop on shutdown and count attempts.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

use crate::encode::EncodedBatch;
use crate::limits::ChannelLimits;
use crate::wire::{BATCHES_PATH, CONTENT_TYPE, EVENTS_HEADER, IDEMPOTENCY_HEADER, LIMITS_PATH};

/// Where a relay listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `http://host:port`
    Tcp { authority: String },
    /// `unix:/path/to.sock`
    Unix { path: PathBuf },
}

impl Endpoint {
    /// Parses `http://host:port` or `unix:/path`.
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        if let Some(path) = url.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ClientError::Url(url.to_string()));
            }
            return Ok(Endpoint::Unix {
                path: PathBuf::from(path),
            });
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| ClientError::Url(url.to_string()))?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(ClientError::Url(url.to_string()));
        }
        Ok(Endpoint::Tcp {
            authority: authority.to_string(),
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp { authority } => write!(f, "http://{authority}"),
            Endpoint::Unix { path } => write!(f, "unix:{}", path.display()),
        }
    }
}

/// What went wrong sending a batch.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("relay url {0:?} is neither http://host:port nor unix:/path")]
    Url(String),
    /// The relay could not be reached or the exchange broke: retry.
    #[error("relay {endpoint} unreachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    /// The relay is full or not ready: retry after the delay.
    #[error("relay {endpoint} busy ({status}): {reason}")]
    Busy {
        endpoint: String,
        status: u16,
        retry_after: Option<Duration>,
        reason: String,
    },
    /// The relay refused the batch itself: retrying the same bytes cannot help.
    #[error("relay {endpoint} refused the batch ({status}): {reason}")]
    Refused {
        endpoint: String,
        status: u16,
        reason: String,
    },
    /// The peer answered 200 with something that is not the channel's answer (not a sluice
    /// relay, or a broken one): asking again cannot help.
    #[error("relay {endpoint} gave an answer that is not the channel's: {reason}")]
    BadAnswer { endpoint: String, reason: String },
}

impl ClientError {
    /// True when sending the same batch again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. } | ClientError::Busy { .. }
        )
    }

    /// The relay's `Retry-After`, when it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Busy { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The relay's answer to a confirmed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    /// Events the relay counted.
    pub events: u64,
    /// True when the relay had stored this idempotency key before.
    pub duplicate: bool,
}

/// A whole answer.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Bytes,
}

/// A channel client. Cheap to share behind an `Arc`.
pub struct ChannelClient {
    endpoint: Endpoint,
    token: Option<String>,
    timeout: Duration,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 8;
/// Largest answer body read from a relay.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

impl ChannelClient {
    /// A client for `url` (`http://host:port` or `unix:/path`). `token` is sent as a bearer
    /// token; `timeout` bounds one whole exchange (connect, send, answer).
    pub fn new(url: &str, token: Option<String>, timeout: Duration) -> Result<Self, ClientError> {
        Ok(ChannelClient {
            endpoint: Endpoint::parse(url)?,
            token,
            timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends one batch under `key` and waits for the relay's answer.
    pub async fn send(&self, key: &str, batch: &EncodedBatch) -> Result<Confirmation, ClientError> {
        match tokio::time::timeout(self.timeout, self.exchange(key, batch)).await {
            Ok(result) => result,
            Err(_) => Err(self.unreachable(format!("no answer within {:?}", self.timeout))),
        }
    }

    async fn exchange(&self, key: &str, batch: &EncodedBatch) -> Result<Confirmation, ClientError> {
        let request = Request::post(BATCHES_PATH)
            .header(hyper::header::CONTENT_ENCODING, "gzip")
            .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(IDEMPOTENCY_HEADER, key)
            .header(EVENTS_HEADER, batch.events);
        let answer = self.round_trip(request, batch.body.clone()).await?;
        if answer.status != StatusCode::OK {
            return Err(self.failure(&answer));
        }
        let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        Ok(Confirmation {
            events: json
                .get("events")
                .and_then(|v| v.as_u64())
                .unwrap_or(batch.events),
            duplicate: json
                .get("duplicate")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        })
    }

    /// Asks the relay for the caps it applies to batches (`GET /v1/limits`). A relay without
    /// the endpoint (404) applies the documented defaults, [`ChannelLimits::V1_DEFAULTS`].
    /// Errors are classified like a batch's: unreachable and busy are retryable.
    pub async fn limits(&self) -> Result<ChannelLimits, ClientError> {
        match tokio::time::timeout(self.timeout, self.fetch_limits()).await {
            Ok(result) => result,
            Err(_) => Err(self.unreachable(format!("no answer within {:?}", self.timeout))),
        }
    }

    async fn fetch_limits(&self) -> Result<ChannelLimits, ClientError> {
        let answer = self
            .round_trip(Request::get(LIMITS_PATH), Bytes::new())
            .await?;
        match answer.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(ChannelLimits::V1_DEFAULTS),
            _ => return Err(self.failure(&answer)),
        }
        let bad = |reason: String| ClientError::BadAnswer {
            endpoint: self.endpoint.to_string(),
            reason,
        };
        let limits: ChannelLimits = serde_json::from_slice(&answer.body)
            .map_err(|e| bad(format!("{LIMITS_PATH} is not a limits object: {e}")))?;
        for (name, v) in [
            ("max_body_bytes", limits.max_body_bytes),
            ("max_batch_bytes", limits.max_batch_bytes),
            ("max_event_bytes", limits.max_event_bytes),
            ("max_tag_bytes", limits.max_tag_bytes),
        ] {
            if v == 0 {
                return Err(bad(format!("{LIMITS_PATH}: {name} is 0")));
            }
        }
        Ok(limits)
    }

    /// Sends one request (host and token added) and reads its whole answer.
    async fn round_trip(
        &self,
        request: hyper::http::request::Builder,
        body: Bytes,
    ) -> Result<Answer, ClientError> {
        let mut sender = self.connection().await?;
        let host = match &self.endpoint {
            Endpoint::Tcp { authority } => authority.as_str(),
            Endpoint::Unix { .. } => "localhost",
        };
        let mut request = request.header(hyper::header::HOST, host);
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| self.unreachable(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| self.unreachable(e.to_string()))?
            .to_bytes();
        // The exchange completed: the connection can serve the next request.
        self.give_back(sender);
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    /// The error a non-200 answer stands for.
    fn failure(&self, answer: &Answer) -> ClientError {
        let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        let reason = json
            .get("error")
            .and_then(|e| e.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&answer.body)
                    .chars()
                    .take(200)
                    .collect()
            });
        let endpoint = self.endpoint.to_string();
        match answer.status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => ClientError::Busy {
                endpoint,
                status: answer.status.as_u16(),
                retry_after: answer.retry_after,
                reason,
            },
            s if s.is_client_error() => ClientError::Refused {
                endpoint,
                status: s.as_u16(),
                reason,
            },
            s => ClientError::Unreachable {
                endpoint,
                reason: format!("status {}: {reason}", s.as_u16()),
            },
        }
    }

    fn unreachable(&self, reason: String) -> ClientError {
        ClientError::Unreachable {
            endpoint: self.endpoint.to_string(),
            reason,
        }
    }

    fn give_back(&self, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    /// An idle keep-alive connection, or a new one.
    async fn connection(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        loop {
            let candidate = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match candidate {
                Some(mut sender) => {
                    if sender.ready().await.is_ok() {
                        return Ok(sender);
                    }
                }
                None => break,
            }
        }
        match &self.endpoint {
            Endpoint::Tcp { authority } => {
                let stream = tokio::net::TcpStream::connect(authority.as_str())
                    .await
                    .map_err(|e| self.unreachable(e.to_string()))?;
                let _ = stream.set_nodelay(true);
                self.handshake(TokioIo::new(stream)).await
            }
            Endpoint::Unix { path } => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| self.unreachable(e.to_string()))?;
                self.handshake(TokioIo::new(stream)).await
            }
        }
    }

    async fn handshake<T>(&self, io: T) -> Result<SendRequest<Full<Bytes>>, ClientError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        tokio::spawn(async move {
            // Ends when the connection closes; errors surface on the next send.
            let _ = connection.await;
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:7700").unwrap(),
            Endpoint::Tcp {
                authority: "127.0.0.1:7700".into()
            }
        );
        assert_eq!(
            Endpoint::parse("unix:/run/x.sock").unwrap(),
            Endpoint::Unix {
                path: "/run/x.sock".into()
            }
        );
        assert!(Endpoint::parse("https://x").is_err());
        assert!(Endpoint::parse("unix:").is_err());
    }

    /// A one-shot HTTP server on 127.0.0.1:0 giving `answer` (status line onwards) to every
    /// request; returns its URL.
    async fn answering(answer: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    // A GET has no body: the head ends the request.
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn limits_of_a_relay_without_the_endpoint_are_the_v1_defaults() {
        let url =
            answering("HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                .await;
        let client = ChannelClient::new(&url, None, Duration::from_secs(5)).unwrap();
        assert_eq!(client.limits().await.unwrap(), ChannelLimits::V1_DEFAULTS);
    }

    #[tokio::test]
    async fn limits_answers_that_are_no_limits_are_refused_not_guessed() {
        let url =
            answering("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello")
                .await;
        let client = ChannelClient::new(&url, None, Duration::from_secs(5)).unwrap();
        let e = client.limits().await.unwrap_err();
        assert!(matches!(e, ClientError::BadAnswer { .. }), "{e}");
        assert!(!e.is_retryable());
        let url = answering(
            "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        )
        .await;
        let client = ChannelClient::new(&url, None, Duration::from_secs(5)).unwrap();
        assert!(client.limits().await.unwrap_err().is_retryable());
        let url = answering(
            "HTTP/1.1 200 OK\r\ncontent-length: 20\r\nconnection: close\r\n\r\n{\"max_body_bytes\":0}",
        )
        .await;
        let client = ChannelClient::new(&url, None, Duration::from_secs(5)).unwrap();
        assert!(matches!(
            client.limits().await.unwrap_err(),
            ClientError::BadAnswer { .. }
        ));
    }
}
