//! Certificates for the benchmark's mutual TLS, made at start with rcgen: a CA, a server
//! certificate for `localhost` / 127.0.0.1 and a client certificate, all signed by the CA and
//! written as PEM files the relay's `devo` output reads (`chain_filename`, `cert_filename`,
//! `key_filename`).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// PEM files of one PKI.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    /// The file names inside `dir` (whether or not they exist yet).
    pub fn paths(dir: &Path) -> Pki {
        Pki {
            ca: dir.join("chain.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        }
    }

    /// Generates a fresh CA and both certificates into `dir`.
    pub fn generate(dir: &Path) -> anyhow::Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let p = Pki::paths(dir);
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "sluice-bench CA");
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |names: Vec<String>, cn: &str| -> anyhow::Result<(String, String)> {
            let mut params = CertificateParams::new(names)?;
            params.distinguished_name.push(DnType::CommonName, cn);
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &issuer)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (server_cert, server_key) = leaf(
            vec!["localhost".to_string(), "127.0.0.1".to_string()],
            "localhost",
        )?;
        let (client_cert, client_key) = leaf(vec!["sluice-relay".to_string()], "sluice-relay")?;
        std::fs::write(&p.ca, ca_cert.pem())?;
        std::fs::write(&p.server_cert, server_cert)?;
        std::fs::write(&p.server_key, server_key)?;
        std::fs::write(&p.client_cert, client_cert)?;
        std::fs::write(&p.client_key, client_key)?;
        Ok(p)
    }
}
