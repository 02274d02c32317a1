//! The Connect link registry: the source of truth for which project may use which connector in
//! which environment.
//!
//! Admin tools manage a team's projects, connectors (with secrets sealed at rest) and project
//! links over `connect.registry.v1.LinkRegistry`; the token broker asks `Authorize` on every token
//! request. Layers: [`grpc`] (the edge: convert, call, map errors) → [`domain`] (types, rules,
//! the service) → [`store`] (sea-orm on SQLite or PostgreSQL).

pub mod app;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod grpc;
pub mod operators;
pub mod store;

pub use app::{App, AppError};
pub use config::ServeConfig;
