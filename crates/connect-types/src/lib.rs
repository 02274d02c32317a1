//! The vocabulary of the Connect contract, stated once. The registry, the broker and the clients
//! all speak it: identifiers and environments ([`ids`]), the error reasons and their documented
//! names ([`reason`]), the bearer-header rule ([`bearer`]), the outbound-URL policy
//! ([`url_policy`]) and what each connector type can do ([`capabilities`]). Nothing here does I/O, so every rule can be tested on its own and a new
//! reason or identifier rule is added in exactly one place.

pub mod bearer;
pub mod capabilities;
pub mod ceilings;
pub mod ids;
pub mod reason;
pub mod url_policy;

pub use bearer::{BearerError, bearer_token};
pub use capabilities::{
    CONNECTOR_TYPES, Capabilities, Installations, Key, Revocation, RowAsk, RowRefusal, Scopes,
    SubjectKind, capabilities, is_scope_token, known_types, permission,
};
pub use ceilings::{CeilingAsk, CeilingRefusal, Ceilings, MAX_CEILING_VALUES};
pub use ids::{
    ConnectorId, ConnectorRef, ConnectorType, ConnectorUid, CustomEnvironment,
    ENVIRONMENT_ID_PREFIX, Environment, EnvironmentSet, Invalid, IssuerUrl, KeyId, ProjectId,
    ProjectName, TeamId, TeamSlug, check_environment_slug, is_environment_id, truncate,
};
pub use reason::{ERROR_DOMAIN, FieldViolation, GrpcCode, Reason};
pub use url_policy::{HostRule, UrlPolicy, UrlRefusal, is_destination_key, is_loopback_http};
