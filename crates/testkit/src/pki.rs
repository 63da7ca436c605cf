//! Certificates for mutual TLS, made with rcgen: a CA, a server certificate for the given
//! names and a client certificate, both signed by the CA, written as PEM files of the names
//! the relay's `devo` output reads (`chain_filename`, `cert_filename`, `key_filename`).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::tls::ServerTls;
use crate::Error;

/// PEM files of one certificate authority and what it signed.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate (Devo calls it the domain's `chain.crt`).
    pub chain: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    /// The file names inside `dir`, each starting with `prefix` (whether or not they exist).
    pub fn paths(dir: &Path, prefix: &str) -> Pki {
        let file = |name: &str| dir.join(format!("{prefix}{name}"));
        Pki {
            chain: file("chain.crt"),
            server_cert: file("server.crt"),
            server_key: file("server.key"),
            client_cert: file("client.crt"),
            client_key: file("client.key"),
        }
    }

    /// A fresh CA named `ca_name`, a server certificate for `server_names` (the first is its
    /// common name) and a client certificate, written into `dir` as [`Pki::paths`] names them.
    pub fn generate(
        dir: &Path,
        prefix: &str,
        ca_name: &str,
        server_names: &[&str],
    ) -> Result<Pki, Error> {
        std::fs::create_dir_all(dir)?;
        let p = Pki::paths(dir, prefix);
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |names: Vec<String>, cn: &str| -> Result<(String, String), Error> {
            let mut params = CertificateParams::new(names)?;
            params.distinguished_name.push(DnType::CommonName, cn);
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &issuer)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (server_cert, server_key) = leaf(
            server_names.iter().map(|s| s.to_string()).collect(),
            server_names.first().copied().unwrap_or("server"),
        )?;
        let (client_cert, client_key) = leaf(vec!["sluice-relay".into()], "sluice-relay")?;
        std::fs::write(&p.chain, ca_cert.pem())?;
        std::fs::write(&p.server_cert, server_cert)?;
        std::fs::write(&p.server_key, server_key)?;
        std::fs::write(&p.client_cert, client_cert)?;
        std::fs::write(&p.client_key, client_key)?;
        Ok(p)
    }

    /// A server presenting this PKI's server certificate and requiring clients signed by
    /// `clients_of`'s CA (usually this one; another to test a refusal).
    pub fn server_tls(&self, clients_of: &Pki) -> ServerTls {
        ServerTls {
            cert: self.server_cert.clone(),
            key: self.server_key.clone(),
            client_ca: clients_of.chain.clone(),
        }
    }
}
