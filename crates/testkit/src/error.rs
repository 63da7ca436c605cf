//! The kit's error type, for the helpers `tools/bench` calls with `?`. Helpers meant only for
//! tests panic with a message instead (a failed set-up is a failed test).

/// What can go wrong setting up a harness part.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    #[error("pem: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("{call}: {detail}")]
    Aws { call: &'static str, detail: String },
    #[error("{0}")]
    Harness(String),
}

impl Error {
    /// An AWS SDK error, with its full context (the SDK's `Display` alone says little).
    pub fn aws<E: std::error::Error>(call: &'static str, e: E) -> Error {
        Error::Aws {
            call,
            detail: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
        }
    }
}
