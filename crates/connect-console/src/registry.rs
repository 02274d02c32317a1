//! The registry, as the console reaches it: one lazily connected channel, and per request a
//! `LinkRegistry` client that presents the signed-in person's bearer and team.

use std::time::Duration;

use connect_proto::registry::v1::link_registry_client::LinkRegistryClient;
use tonic::{
    Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};
use tonic_types::StatusExt;

use crate::config::ConsoleConfig;

#[derive(Clone, Debug)]
pub struct RegistryClient {
    channel: Channel,
}

/// Adds `authorization` and `connect-team` to every call.
#[derive(Clone)]
pub struct Credentials {
    bearer: Option<MetadataValue<Ascii>>,
    team: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials([redacted])")
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let bearer = self
            .bearer
            .clone()
            .ok_or_else(|| Status::unauthenticated("the session holds no usable credential"))?;
        request.metadata_mut().insert("authorization", bearer);
        if let Some(team) = &self.team {
            request.metadata_mut().insert("connect-team", team.clone());
        }
        request.set_timeout(Duration::from_secs(15));
        Ok(request)
    }
}

pub type Client = LinkRegistryClient<InterceptedService<Channel, Credentials>>;

impl RegistryClient {
    pub fn connect(config: &ConsoleConfig) -> anyhow::Result<Self> {
        let mut endpoint = Endpoint::from_shared(config.registry_url.clone())
            .map_err(|e| anyhow::anyhow!("--registry-url '{}': {e}", config.registry_url))?
            .connect_timeout(Duration::from_secs(5));
        if config.registry_url.starts_with("https://") {
            let tls = match &config.registry_ca {
                Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
                None => ClientTlsConfig::new().with_native_roots(),
            };
            endpoint = endpoint.tls_config(tls)?;
        }
        Ok(Self {
            channel: endpoint.connect_lazy(),
        })
    }

    /// A client speaking as `bearer` in `team`.
    pub fn as_caller(&self, bearer: &str, team: Option<&str>) -> Client {
        let credentials = Credentials {
            bearer: format!("Bearer {bearer}").parse().ok(),
            team: team.and_then(|t| t.parse().ok()),
        };
        LinkRegistryClient::with_interceptor(self.channel.clone(), credentials)
    }
}

/// A registry refusal as a page shows it: the reason name, the message, the bad fields.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub code: tonic::Code,
    pub reason: String,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

impl From<Status> for Refusal {
    fn from(status: Status) -> Self {
        let details = status.get_error_details();
        let reason = details
            .error_info()
            .map(|i| i.reason.clone())
            .unwrap_or_else(|| match status.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                    "REGISTRY_UNAVAILABLE".into()
                }
                code => format!("{code:?}"),
            });
        let fields = details
            .bad_request()
            .map(|b| {
                b.field_violations
                    .iter()
                    .map(|v| (v.field.clone(), v.description.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let message = match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                "The registry cannot be reached right now; try again in a moment.".to_owned()
            }
            _ => status.message().to_owned(),
        };
        Self {
            code: status.code(),
            reason,
            message,
            fields,
        }
    }
}
