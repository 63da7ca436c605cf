//! rustls configurations for the receivers (server, client certificate required) and for
//! clients in tests and the benchmark, with the ring provider chosen explicitly rather than a
//! process-wide default.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::pki::Pki;
use crate::Error;

/// TLS settings of a receiver: its certificate, and the CA its clients must be signed by.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    Ok(CertificateDer::pem_file_iter(path)?.collect::<Result<Vec<_>, _>>()?)
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca)? {
        roots.add(c)?;
    }
    Ok(roots)
}

/// A server's side: its certificate, client certificates signed by `client_ca` required.
pub fn server_config(tls: &ServerTls) -> Result<Arc<rustls::ServerConfig>, Error> {
    let provider = provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(&tls.client_ca)?),
        provider.clone(),
    )
    .build()?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&tls.cert)?, PrivateKeyDer::from_pem_file(&tls.key)?)?;
    Ok(Arc::new(config))
}

/// A client presenting `pki`'s client certificate and trusting only its CA.
pub fn client_config(pki: &Pki) -> Result<Arc<rustls::ClientConfig>, Error> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(&pki.chain)?)
        .with_client_auth_cert(
            certs(&pki.client_cert)?,
            PrivateKeyDer::from_pem_file(&pki.client_key)?,
        )?;
    Ok(Arc::new(config))
}

/// A blocking mutual-TLS client stream to `addr` for the server name `localhost`, with
/// `pki`'s client certificate (TCP_NODELAY set; the handshake happens on first use).
pub fn connect(
    pki: &Pki,
    addr: impl std::net::ToSocketAddrs,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>, Error> {
    let tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("localhost")
        .map_err(|e| Error::Harness(e.to_string()))?;
    let conn = rustls::ClientConnection::new(client_config(pki)?, name)?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}
