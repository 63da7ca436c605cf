//! TLS client configuration for the `devo` and `relay` outputs: rustls with the ring provider
//! chosen explicitly (never a process-wide default, which another crate in the process may
//! have installed differently), TLS 1.3 preferred and 1.2 minimum, trust only the configured
//! `chain_filename`, present `cert_filename` + `key_filename` when given (mutual TLS), SNI on.
//!
//! Also turns rustls errors into sentences that say which side is wrong. It opens no socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};

use super::danger::SkipHostnameVerification;
use crate::config::TlsSettings;

/// Why the TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("{key} {path}: {reason}")]
    File {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("server_name {0:?} is neither a DNS name nor an IP address")]
    ServerName(String),
    #[error("TLS setup: {0}")]
    Rustls(String),
}

/// What a connection needs to start TLS.
#[derive(Clone)]
pub(crate) struct TlsClient {
    pub(crate) connector: tokio_rustls::TlsConnector,
    pub(crate) server_name: ServerName<'static>,
}

fn load_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let err = |reason: String| TlsConfigError::File {
        key,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// Builds the client side from the output's settings (reads the PEM files now, so a bad file
/// stops the relay at start, not at the first batch).
pub(crate) fn client(t: &TlsSettings) -> Result<TlsClient, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in load_certs("chain_filename", &t.chain_filename)? {
        roots.add(cert).map_err(|e| TlsConfigError::File {
            key: "chain_filename",
            path: t.chain_filename.clone(),
            reason: e.to_string(),
        })?;
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
    let builder = if t.verify_hostname {
        builder.with_webpki_verifier(verifier)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(SkipHostnameVerification::new(verifier))
    };
    let config = match (&t.cert_filename, &t.key_filename) {
        (Some(cert), Some(key)) => {
            let certs = load_certs("cert_filename", cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsConfigError::File {
                key: "key_filename",
                path: key.clone(),
                // The PEM parser's message names the problem, never the key's bytes.
                reason: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(certs, key_der)
                .map_err(|e| TlsConfigError::File {
                    key: "key_filename",
                    path: key.clone(),
                    reason: format!("does not fit cert_filename: {e}"),
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    let server_name = ServerName::try_from(t.server_name.clone())
        .map_err(|_| TlsConfigError::ServerName(t.server_name.clone()))?;
    Ok(TlsClient {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        server_name,
    })
}

/// The rustls error inside an I/O error, if any.
pub(crate) fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Says which side is wrong, for handshake errors.
pub(crate) fn explain(e: &std::io::Error, server_name: &str) -> String {
    let Some(tls) = rustls_error(e) else {
        return e.to_string();
    };
    match tls {
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => format!("server certificate is not trusted: it is not signed by chain_filename's CA ({tls})"),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "server certificate does not name {server_name:?} ({tls}); set server_name, or \
             verify_hostname = false to skip the name check"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => format!("server certificate has expired ({tls})"),
        rustls::Error::InvalidCertificate(_) => format!("server certificate refused: {tls}"),
        rustls::Error::AlertReceived(alert) if is_client_cert_alert(*alert) => format!(
            "the server refused our client certificate (cert_filename/key_filename): alert {alert:?}"
        ),
        other => other.to_string(),
    }
}

/// Alerts a server sends when it does not accept the client's certificate.
pub(crate) fn is_client_cert_alert(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateRequired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError
    )
}
