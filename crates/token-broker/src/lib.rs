//! The Connect token broker: trades a deployment's OIDC token for a short-lived provider token.
//!
//! `GetToken` verifies the caller's token ([`auth`]), asks the link registry whether the token's
//! project and environment are linked to the connector ([`registry`]: the port the core asks
//! through, its gRPC adapter and the authorization cache), and only then issues a token through
//! the connector type's issuer ([`issuers`]), recorded first in the ledger ([`ledger`]). Users'
//! consents are [`consent`]; [`feed`] follows the registry's changes. [`service`] runs those
//! steps and logs each decision; [`grpc`] is the edge.

pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub mod consent;
pub mod error;
pub mod feed;
pub mod grpc;
pub mod issuer;
pub mod issuers;
pub mod ledger;
pub mod metrics;
pub mod proxy;
pub use connect_runtime::outbound;
pub mod registry;
pub mod service;

pub use app::{App, AppError};
pub use config::BrokerConfig;

#[cfg(test)]
mod tests {
    /// The registry's wire types stay behind the port: only `registry/` names them.
    #[test]
    fn no_module_outside_the_registry_port_names_the_registrys_protobuf_types() {
        fn walk(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    found.push(path);
                }
            }
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&src, &mut files);
        let port = src.join("registry");
        let mut checked = 0;
        for file in files.iter().filter(|f| !f.starts_with(&port)) {
            let text = std::fs::read_to_string(file).unwrap();
            // Spelled in pieces so that this file does not match itself.
            for needle in [
                concat!("connect_proto::", "registry"),
                concat!("registry::", "v1"),
            ] {
                assert!(!text.contains(needle), "{} names {needle}", file.display());
            }
            checked += 1;
        }
        assert!(checked > 20, "only {checked} files checked");
        let adapter = std::fs::read_to_string(port.join("grpc.rs")).unwrap();
        assert!(adapter.contains(concat!("connect_proto::", "registry")));
    }
}
