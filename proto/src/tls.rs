//! Mutual TLS between rackboot's components: certificates from
//! `rackboot certs` (PEM), read once, and a process-wide client
//! configuration so that every outgoing connection — agent to coordinator,
//! coordinator to its peers, the CLI — presents its certificate and checks
//! the other side against the cluster CA.
//!
//! Every outgoing connection goes to a coordinator, and a client checks
//! that the server's certificate is a coordinator's: it must name
//! [`COORDINATOR_SERVER_NAME`], which `rackboot certs issue coordinator`
//! writes into coordinator certificates only. An agent or admin
//! certificate of the same CA, even one naming the right address, cannot
//! pose as a coordinator.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// The DNS name (subject alternative name) only coordinator certificates
/// carry; clients verify the server against it.
pub const COORDINATOR_SERVER_NAME: &str = "coordinator.rackboot.invalid";

/// The three files of a component: the cluster CA, its certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Cluster CA certificate (`ca.pem`).
    pub ca: PathBuf,
    /// This component's certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl TlsFiles {
    /// All three or none: `Ok(None)` when none is given.
    pub fn from_parts(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Option<TlsFiles>, String> {
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles { ca, cert, key })),
            _ => Err("TLS needs all three of the CA, the certificate and the key".to_string()),
        }
    }

    /// Server side: present the certificate, require a client certificate
    /// signed by the CA.
    pub fn server(&self) -> std::io::Result<ServerTlsConfig> {
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
            .client_ca_root(Certificate::from_pem(read(&self.ca)?)))
    }

    /// Client side: present the certificate, trust only the CA, and accept
    /// only a server certificate naming [`COORDINATOR_SERVER_NAME`].
    pub fn client(&self) -> std::io::Result<ClientTlsConfig> {
        Ok(ClientTlsConfig::new()
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .domain_name(COORDINATOR_SERVER_NAME))
    }
}

static CLIENT: OnceLock<ClientTlsConfig> = OnceLock::new();

/// Make every [`endpoint`] of this process use TLS with this configuration
/// (once; later calls are ignored and return false).
pub fn install_client(config: ClientTlsConfig) -> bool {
    CLIENT.set(config).is_ok()
}

/// Whether this process's connections use TLS.
pub fn enabled() -> bool {
    CLIENT.get().is_some()
}

/// An endpoint for `url` (`http://` or `https://`, or bare `HOST:PORT`):
/// with TLS installed, `https` and the client configuration; else plaintext.
pub fn endpoint(url: &str) -> Result<Endpoint, tonic::transport::Error> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    match CLIENT.get() {
        Some(cfg) => Endpoint::from_shared(format!("https://{rest}"))?.tls_config(cfg.clone()),
        None => Endpoint::from_shared(format!("http://{rest}")),
    }
}
