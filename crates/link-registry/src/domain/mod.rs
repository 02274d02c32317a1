//! The registry's domain: validated types, records, rules and the storage boundary. Nothing here
//! names gRPC or a database library; the `grpc` layer converts into these types and the `store`
//! layer implements [`store::Store`].

pub mod audit;
pub mod changes;
pub mod clock;
pub mod error;
pub mod model;
pub mod page;
pub mod service;
pub mod store;
pub mod types;

pub use error::{FieldViolation, RegistryError, Resource, Result};
pub use service::{Caller, Registry};
