//! rustls configurations for the sink (server, client certificate required) and for the
//! benchmark's own clients (the roofline's TLS write and the sink check), with the ring
//! provider chosen explicitly rather than a process-wide default.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::pki::Pki;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &std::path::Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    Ok(CertificateDer::pem_file_iter(path)?.collect::<Result<Vec<_>, _>>()?)
}

fn roots(pki: &Pki) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&pki.ca)? {
        roots.add(c)?;
    }
    Ok(roots)
}

/// The sink's side: server certificate, client certificates signed by the CA required.
pub fn server_config(pki: &Pki) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(pki)?),
        provider.clone(),
    )
    .build()?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&pki.server_cert)?,
            PrivateKeyDer::from_pem_file(&pki.server_key)?,
        )?;
    Ok(Arc::new(config))
}

/// A client presenting the client certificate and trusting only the CA.
pub fn client_config(pki: &Pki) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(pki)?)
        .with_client_auth_cert(
            certs(&pki.client_cert)?,
            PrivateKeyDer::from_pem_file(&pki.client_key)?,
        )?;
    Ok(Arc::new(config))
}
