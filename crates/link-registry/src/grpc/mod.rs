//! The registry's gRPC edge: two services over one [`Registry`]. `LinkRegistry` (`admin`) is the
//! admin API for `admin` and `viewer` keys; `RegistryRuntime` (`runtime`) is what token brokers
//! ask, for `broker` keys only. Each service checks the caller's role once, on the way in, before
//! anything else is read; each handler then converts the request (`convert`), makes one call to
//! the domain service and converts the answer; every error leaves through `status::to_status`.

pub mod admin;
pub mod convert;
pub mod runtime;
pub mod status;

pub use admin::LinkRegistryService;
pub use runtime::RegistryRuntimeService;

use connect_proto::registry::v1::{link_registry_server, registry_runtime_server};
use tonic::{Response, Status, metadata::MetadataMap};

use crate::{
    domain::{Caller, Registry, RegistryError, model::Role, types::TeamId},
    operators::Operators,
};
use status::to_status;

/// The key of exactly one `authorization: Bearer <key>` value (the shared bearer rule).
fn bearer(metadata: &MetadataMap) -> Option<&str> {
    bearer_within(metadata, MAX_KEY_BYTES)
}

/// The bearer credential, an API key or a person's ID token, of at most `max` bytes.
fn bearer_within(metadata: &MetadataMap, max: usize) -> Option<&str> {
    let values = metadata
        .get_all("authorization")
        .iter()
        .map(|v| v.as_bytes());
    connect_types::bearer_token(values, max).ok()
}

/// The bearer of the admin API: an API key, or (when operator issuers are configured) an ID
/// token, which may be longer.
fn admin_bearer<'m>(metadata: &'m MetadataMap, operators: Option<&Operators>) -> &'m str {
    let max = if operators.is_some() {
        connect_oidc::jws::MAX_TOKEN_BYTES
    } else {
        MAX_KEY_BYTES
    };
    bearer_within(metadata, max).unwrap_or_default()
}

/// Longest API key looked at; longer ones are refused before hashing.
const MAX_KEY_BYTES: usize = 256;

/// One of the registry's two services, and who may call it.
#[derive(Clone, Copy, Debug)]
struct Service {
    name: &'static str,
    roles: &'static [Role],
}

/// The metadata a person bound in several teams names the team with.
const TEAM_METADATA: &str = "connect-team";

/// The team a request names in `connect-team`, if any.
fn named_team(metadata: &MetadataMap) -> Result<Option<TeamId>, Status> {
    let Some(value) = metadata.get(TEAM_METADATA) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| TeamId::parse(v).ok())
        .map(Some)
        .ok_or_else(|| {
            to_status(RegistryError::invalid(
                TEAM_METADATA,
                "connect-team must be a team id",
            ))
        })
}

/// A person's ID token, when the bearer is one and operator issuers are configured.
async fn person(
    operators: Option<&Operators>,
    bearer: &str,
) -> Option<Result<crate::domain::model::Person, Status>> {
    let operators = operators?;
    if !Operators::looks_like_token(bearer) {
        return None;
    }
    Some(
        operators
            .verify(bearer)
            .await
            .map_err(|e| to_status(RegistryError::from(e))),
    )
}

const ADMIN_API: Service = Service {
    name: link_registry_server::SERVICE_NAME,
    roles: &[Role::Admin, Role::Viewer],
};

const RUNTIME_API: Service = Service {
    name: registry_runtime_server::SERVICE_NAME,
    roles: &[Role::Broker],
};

/// The caller a request's credential stands for, whatever its role (`INVALID_KEY` otherwise).
async fn authenticated(registry: &Registry, metadata: &MetadataMap) -> Result<Caller, Status> {
    let key = bearer(metadata).ok_or_else(|| to_status(RegistryError::InvalidKey))?;
    registry.authenticate(key).await.map_err(to_status)
}

impl Service {
    /// The caller of a request to this service: an unknown key is `INVALID_KEY`, a known key of
    /// a role the service does not admit `ROLE_NOT_ALLOWED`, naming the service it belongs on.
    async fn caller(self, registry: &Registry, metadata: &MetadataMap) -> Result<Caller, Status> {
        let caller = authenticated(registry, metadata).await?;
        if self.roles.contains(&caller.role) {
            return Ok(caller);
        }
        let instead = [ADMIN_API, RUNTIME_API]
            .into_iter()
            .find(|s| s.roles.contains(&caller.role))
            .map_or("no service", |s| s.name);
        Err(to_status(RegistryError::WrongService {
            role: caller.role.as_str(),
            service: self.name,
            instead,
        }))
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn reply<T, U: From<T>>(result: Result<T, RegistryError>) -> Reply<U> {
    result.map(|v| Response::new(v.into())).map_err(to_status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(values: &[&str]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for v in values {
            map.append("authorization", v.parse().unwrap());
        }
        map
    }

    #[test]
    fn exactly_one_bearer_value_is_accepted() {
        assert_eq!(bearer(&metadata(&["Bearer abc"])), Some("abc"));
        assert_eq!(bearer(&metadata(&["bearer abc"])), Some("abc"));
        assert_eq!(bearer(&metadata(&[])), None);
        assert_eq!(bearer(&metadata(&["Basic abc"])), None);
        assert_eq!(bearer(&metadata(&["abc"])), None);
        assert_eq!(bearer(&metadata(&["Bearer a", "Bearer b"])), None);
    }
}
