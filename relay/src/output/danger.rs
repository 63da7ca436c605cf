//! DANGER: a server certificate verifier that checks the chain against the configured CA but
//! NOT the host name. It exists only for `verify_hostname = false`, the documented switch for
//! Devo setups whose collector certificate does not name the address used (Devo's own tools
//! run this way). Chain, validity dates and signatures are still verified by webpki; only the
//! name mismatch is forgiven.
//!
//! Nothing else in the relay may use it.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};

/// Verifies everything webpki verifies except that the certificate names the server.
#[derive(Debug)]
pub(crate) struct SkipHostnameVerification {
    inner: Arc<WebPkiServerVerifier>,
}

impl SkipHostnameVerification {
    pub(crate) fn new(inner: Arc<WebPkiServerVerifier>) -> Arc<Self> {
        Arc::new(SkipHostnameVerification { inner })
    }
}

impl ServerCertVerifier for SkipHostnameVerification {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        // webpki checks the chain first and the name last, so a name error means the chain,
        // dates and signatures were all good.
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
