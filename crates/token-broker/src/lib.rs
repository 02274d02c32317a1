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
pub mod issuers;
pub mod ledger;
pub mod metrics;
pub mod outbound;
pub mod registry;
pub mod service;

pub use app::{App, AppError};
pub use config::BrokerConfig;
