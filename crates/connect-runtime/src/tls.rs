//! TLS for the Connect services and their clients, from PEM files (rustls through tonic).
//!
//! A server given a certificate and key serves gRPC over TLS; given a client CA as well, it
//! requires client certificates signed by that CA (mTLS). A client trusts the CA it is given, or
//! the system's roots, and presents its own certificate when an mTLS server asks for one. Files
//! are read once, at start, so a typo fails the start with the file's name instead of the first
//! call.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

#[derive(Debug, thiserror::Error)]
#[error("cannot read the TLS {what} file {path}")]
pub struct TlsFileError {
    what: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError {
        what,
        path: path.to_owned(),
        source,
    })
}

/// A server's TLS files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require client certificates signed by this CA.
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    pub fn load(&self) -> Result<ServerTlsConfig, TlsFileError> {
        let identity = Identity::from_pem(
            read("certificate", &self.cert)?,
            read("private key", &self.key)?,
        );
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read("client CA", ca)?));
        }
        Ok(config)
    }
}

/// What a client trusts and presents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA the server's certificate must chain to; `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// The client certificate and key, for servers that require one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    pub fn load(&self) -> Result<ClientTlsConfig, TlsFileError> {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read("CA", ca)?)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(
                read("client certificate", cert)?,
                read("client key", key)?,
            ));
        }
        Ok(config)
    }
}
