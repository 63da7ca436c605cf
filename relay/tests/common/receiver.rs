//! A test receiver standing in for Devo or an in-house relay: TCP on 127.0.0.1, optionally
//! TLS with a required client certificate, collecting every byte it is sent. It runs on its
//! own thread and runtime, so tests may block while it works.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// PEM files of one certificate authority and what it signed.
pub struct Pki {
    pub chain: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

impl Pki {
    /// A CA named `ca_name`, a server certificate for `server_names`, a client certificate.
    pub fn generate(dir: &Path, prefix: &str, ca_name: &str, server_names: &[&str]) -> Pki {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |names: Vec<String>, cn: &str| {
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            let k = KeyPair::generate().unwrap();
            let c = p.signed_by(&k, &issuer).unwrap();
            (c.pem(), k.serialize_pem())
        };
        let (server_pem, server_key) = leaf(
            server_names.iter().map(|s| s.to_string()).collect(),
            server_names.first().copied().unwrap_or("server"),
        );
        let (client_pem, client_key) = leaf(vec!["client.example".into()], "my-domain");
        Pki {
            chain: write(dir, &format!("{prefix}chain.crt"), &ca_cert.pem()),
            server_cert: write(dir, &format!("{prefix}server.crt"), &server_pem),
            server_key: write(dir, &format!("{prefix}server.key"), &server_key),
            client_cert: write(dir, &format!("{prefix}domain.crt"), &client_pem),
            client_key: write(dir, &format!("{prefix}domain.key"), &client_key),
        }
    }
}

/// TLS settings of the receiver: its certificate, and the CA its clients must be signed by.
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// What the receiver saw.
#[derive(Default)]
pub struct Seen {
    pub data: Mutex<Vec<u8>>,
    pub connections: AtomicU64,
    pub clean_closes: AtomicU64,
    pub errors: Mutex<Vec<String>>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn server_config(tls: &ServerTls) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&tls.client_ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let certs: Vec<_> = CertificateDer::pem_file_iter(&tls.cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&tls.key).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap(),
    )
}

impl Receiver {
    /// Listens on `addr` (port 0 for any).
    pub fn start(addr: &str, tls: Option<ServerTls>) -> Receiver {
        Self::start_with(addr, tls, Arc::new(Seen::default()))
    }

    /// Listens again, keeping what was seen before.
    pub fn start_with(addr: &str, tls: Option<ServerTls>, seen: Arc<Seen>) -> Receiver {
        let std_listener = {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match std::net::TcpListener::bind(addr) {
                    Ok(l) => break l,
                    Err(e) => {
                        assert!(Instant::now() < deadline, "bind {addr}: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        };
        std_listener.set_nonblocking(true).unwrap();
        let local = std_listener.local_addr().unwrap();
        let config = tls.as_ref().map(server_config);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let seen = seen.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                    let mut tasks = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let accepted =
                            tokio::time::timeout(Duration::from_millis(50), listener.accept())
                                .await;
                        let Ok(Ok((tcp, _))) = accepted else { continue };
                        seen.connections.fetch_add(1, Ordering::Relaxed);
                        let seen = seen.clone();
                        let config = config.clone();
                        let stop = stop.clone();
                        tasks.push(tokio::spawn(async move {
                            match config {
                                None => serve(tcp, &seen, &stop).await,
                                Some(c) => {
                                    let acceptor = tokio_rustls::TlsAcceptor::from(c);
                                    match acceptor.accept(tcp).await {
                                        Ok(s) => serve(s, &seen, &stop).await,
                                        Err(e) => seen.errors.lock().unwrap().push(e.to_string()),
                                    }
                                }
                            }
                        }));
                    }
                    drop(listener);
                    for t in tasks {
                        t.abort();
                    }
                });
            })
        };
        Receiver {
            addr: local,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops listening and drops every connection.
    pub fn stop(mut self) -> Arc<Seen> {
        self.halt();
        self.seen.clone()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn data(&self) -> Vec<u8> {
        self.seen.data.lock().unwrap().clone()
    }

    pub fn lines(&self) -> Vec<Vec<u8>> {
        split_lines(&self.data())
    }

    /// Waits until at least `n` lines arrived.
    pub fn wait_lines(&self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} lines arrived; receiver errors: {:?}",
                lines.len(),
                self.seen.errors.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.halt();
    }
}

pub fn split_lines(data: &[u8]) -> Vec<Vec<u8>> {
    data.split_inclusive(|&b| b == b'\n')
        .filter(|l| l.ends_with(b"\n"))
        .map(|l| l.to_vec())
        .collect()
}

async fn serve<S>(mut s: S, seen: &Seen, stop: &AtomicBool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) => {
                // The client's close_notify (TLS) or FIN (TCP): answer in kind.
                seen.clean_closes.fetch_add(1, Ordering::Relaxed);
                let _ = s.shutdown().await;
                return;
            }
            Ok(Ok(n)) => seen.data.lock().unwrap().extend_from_slice(&buf[..n]),
            Ok(Err(e)) => {
                seen.errors.lock().unwrap().push(e.to_string());
                return;
            }
        }
    }
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
