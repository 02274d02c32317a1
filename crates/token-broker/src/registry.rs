//! The link registry, seen from the broker: one long-lived gRPC channel carrying the broker key,
//! and one question, `Authorize`. Every call has a deadline derived from the caller's (capped).
//! The registry's "no" answers become the matching broker errors; anything else (unreachable,
//! slow, refusing our key, or answering garbage) is REGISTRY_UNAVAILABLE, and never a token.

use std::{collections::BTreeMap, time::Duration};

use connect_proto::registry::v1::{self as pb, registry_runtime_client::RegistryRuntimeClient};
use connect_runtime::BearerAuth;
use connect_types::Reason;
use secrecy::{ExposeSecret, SecretString};
use tonic::{
    Code, Request, Status,
    service::interceptor::InterceptedService,
    transport::{Channel, ClientTlsConfig, Endpoint},
};
use tonic_types::StatusExt;

use crate::{
    auth::Identity,
    error::{BrokerError, Cause, FieldViolation, Result},
};

/// The connector a link allows, with what issuing needs.
#[derive(Clone)]
pub struct Authorization {
    pub connector_id: String,
    pub connector_uid: String,
    pub connector_type: String,
    pub config: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, SecretString>,
    /// The installation the token is for (the asked one, or the connector's default).
    pub installation: Option<InstallationGrant>,
}

/// An installation of the connector, with its config and opened secrets.
#[derive(Clone)]
pub struct InstallationGrant {
    pub id: String,
    pub config: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, SecretString>,
}

impl std::fmt::Debug for InstallationGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallationGrant")
            .field("id", &self.id)
            .field("config", &self.config)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorization")
            .field("connector_id", &self.connector_id)
            .field("connector_uid", &self.connector_uid)
            .field("connector_type", &self.connector_type)
            .field("config", &self.config)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("installation", &self.installation.as_ref().map(|i| &i.id))
            .finish()
    }
}

/// Whether two secret maps hold exactly the same.
fn same_secrets(a: &BTreeMap<String, SecretString>, b: &BTreeMap<String, SecretString>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((k1, v1), (k2, v2))| k1 == k2 && v1.expose_secret() == v2.expose_secret())
}

impl Authorization {
    /// Whether both say exactly the same, secrets included.
    pub fn same_as(&self, other: &Self) -> bool {
        self.connector_id == other.connector_id
            && self.connector_uid == other.connector_uid
            && self.connector_type == other.connector_type
            && self.config == other.config
            && same_secrets(&self.secrets, &other.secrets)
            && match (&self.installation, &other.installation) {
                (None, None) => true,
                (Some(a), Some(b)) => {
                    a.id == b.id && a.config == b.config && same_secrets(&a.secrets, &b.secrets)
                }
                _ => false,
            }
    }

    /// The installation's id, if the token is for one.
    pub fn installation_id(&self) -> Option<&str> {
        self.installation.as_ref().map(|i| i.id.as_str())
    }

    /// A config value of the installation, else of the connector.
    pub fn setting(&self, name: &str) -> Option<&String> {
        self.installation
            .as_ref()
            .and_then(|i| i.config.get(name))
            .or_else(|| self.config.get(name))
    }

    /// A secret of the installation, else of the connector.
    pub fn secret(&self, name: &str) -> Option<&SecretString> {
        self.installation
            .as_ref()
            .and_then(|i| i.secrets.get(name))
            .or_else(|| self.secrets.get(name))
    }
}

#[derive(Clone)]
pub struct RegistryClient {
    channel: Channel,
    client: RegistryRuntimeClient<InterceptedService<Channel, BearerAuth>>,
    max_timeout: Duration,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("max_timeout", &self.max_timeout)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client that connects on first use and reconnects by itself; over TLS with `tls` (for an
    /// `https://` URL).
    pub fn new(
        url: &str,
        key: &SecretString,
        max_timeout: Duration,
        tls: Option<ClientTlsConfig>,
    ) -> Result<Self> {
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| BrokerError::internal("registry URL", e))?;
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| BrokerError::internal("registry TLS", e))?;
        }
        let endpoint = endpoint
            .connect_timeout(max_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let auth = BearerAuth::new(key.expose_secret())
            .map_err(|_| BrokerError::internal("registry key", Cause("not ASCII".into())))?;
        let channel = endpoint.connect_lazy();
        Ok(Self {
            client: RegistryRuntimeClient::with_interceptor(channel.clone(), auth),
            channel,
            max_timeout,
        })
    }

    /// A health client over the same connection, to know when the registry is ready.
    pub fn health_client(&self) -> tonic_health::pb::health_client::HealthClient<Channel> {
        tonic_health::pb::health_client::HealthClient::new(self.channel.clone())
    }

    /// Follows the registry's change feed from `from_revision` (0: from now).
    pub async fn watch_changes(
        &self,
        from_revision: i64,
    ) -> std::result::Result<tonic::Streaming<pb::ChangeEvent>, Status> {
        let request = Request::new(pb::WatchChangesRequest { from_revision });
        Ok(self
            .client
            .clone()
            .watch_changes(request)
            .await?
            .into_inner())
    }

    /// Records a credential in the registry's issuance ledger; whether it was new there.
    pub async fn record_issuance(&self, issuance: pb::Issuance) -> Result<bool> {
        let mut request = Request::new(pb::RecordIssuanceRequest {
            issuance: Some(issuance),
        });
        request.set_timeout(self.max_timeout);
        self.client
            .clone()
            .record_issuance(request)
            .await
            .map(|answer| answer.into_inner().recorded)
            .map_err(|status| {
                BrokerError::RegistryUnavailable(Box::new(Cause(format!(
                    "RecordIssuance answered {:?}: {}",
                    status.code(),
                    status.message()
                ))))
            })
    }

    /// A call of the grant RPCs under the client's deadline; the registry's "no user grant" is
    /// `UserAuthorizationRequired`, a lost lease `LeaseLost`, anything else unavailable.
    fn grant_failure(what: &'static str) -> impl Fn(Status) -> BrokerError {
        move |status| {
            let reason = status
                .get_details_error_info()
                .filter(|i| i.domain == connect_types::ERROR_DOMAIN)
                .and_then(|i| Reason::parse(&i.reason));
            match (status.code(), reason) {
                (Code::FailedPrecondition, Some(Reason::UserAuthorizationRequired)) => {
                    BrokerError::UserAuthorizationRequired(
                        status
                            .message()
                            .trim_start_matches("UserAuthorizationRequiredError: ")
                            .to_owned(),
                    )
                }
                (Code::Aborted, Some(Reason::LeaseLost)) => BrokerError::LeaseLost,
                (code, _) => BrokerError::RegistryUnavailable(Box::new(Cause(format!(
                    "{what} answered {code:?}: {}",
                    status.message()
                )))),
            }
        }
    }

    /// The grant's access token when fresh enough, else the refresh lease or "busy".
    pub async fn lease_grant(
        &self,
        request: pb::LeaseGrantRequest,
    ) -> Result<pb::lease_grant_response::Answer> {
        let mut request = Request::new(request);
        request.set_timeout(self.max_timeout);
        let answer = self
            .client
            .clone()
            .lease_grant(request)
            .await
            .map_err(Self::grant_failure("LeaseGrant"))?
            .into_inner();
        answer.answer.ok_or_else(|| {
            BrokerError::RegistryUnavailable(Box::new(Cause("LeaseGrant answered nothing".into())))
        })
    }

    /// Ends a refresh under a lease; the new access token after a refresh.
    pub async fn commit_grant(
        &self,
        request: pb::CommitGrantRequest,
    ) -> Result<Option<pb::GrantAccess>> {
        let mut request = Request::new(request);
        request.set_timeout(self.max_timeout);
        Ok(self
            .client
            .clone()
            .commit_grant(request)
            .await
            .map_err(Self::grant_failure("CommitGrant"))?
            .into_inner()
            .access)
    }

    /// Starts a consent: the registry keeps the verifier and answers with the `state`.
    pub async fn begin_authorization(
        &self,
        request: pb::BeginAuthorizationRequest,
    ) -> Result<pb::BeginAuthorizationResponse> {
        let mut request = Request::new(request);
        request.set_timeout(self.max_timeout);
        self.client
            .clone()
            .begin_authorization(request)
            .await
            .map(|r| r.into_inner())
            .map_err(Self::grant_failure("BeginAuthorization"))
    }

    /// Takes the consent of `state`, once; `None` for an unknown, used or expired state.
    pub async fn complete_authorization(
        &self,
        state: &str,
    ) -> Result<Option<pb::CompleteAuthorizationResponse>> {
        let mut request = Request::new(pb::CompleteAuthorizationRequest {
            state: state.to_owned(),
        });
        request.set_timeout(self.max_timeout);
        match self.client.clone().complete_authorization(request).await {
            Ok(answer) => Ok(Some(answer.into_inner())),
            Err(status)
                if matches!(
                    status.code(),
                    Code::FailedPrecondition | Code::InvalidArgument
                ) =>
            {
                Ok(None)
            }
            Err(status) => Err(Self::grant_failure("CompleteAuthorization")(status)),
        }
    }

    /// Takes the refresh tokens of the connector's revoked grants, to revoke at the provider.
    pub async fn claim_grant_revocations(
        &self,
        owner_id: &str,
        connector_id: &str,
    ) -> Result<pb::ClaimGrantRevocationsResponse> {
        let mut request = Request::new(pb::ClaimGrantRevocationsRequest {
            owner_id: owner_id.to_owned(),
            connector_id: connector_id.to_owned(),
        });
        request.set_timeout(self.max_timeout);
        self.client
            .clone()
            .claim_grant_revocations(request)
            .await
            .map(|r| r.into_inner())
            .map_err(Self::grant_failure("ClaimGrantRevocations"))
    }

    /// Says that claimed refresh tokens were taken to the provider.
    pub async fn finish_grant_revocations(
        &self,
        owner_id: &str,
        connector_id: &str,
        ids: Vec<i64>,
    ) -> Result<()> {
        let mut request = Request::new(pb::FinishGrantRevocationsRequest {
            owner_id: owner_id.to_owned(),
            connector_id: connector_id.to_owned(),
            ids,
        });
        request.set_timeout(self.max_timeout);
        self.client
            .clone()
            .finish_grant_revocations(request)
            .await
            .map(|_| ())
            .map_err(Self::grant_failure("FinishGrantRevocations"))
    }

    /// Stores a consent's grant.
    pub async fn store_grant(&self, request: pb::StoreGrantRequest) -> Result<pb::Grant> {
        let mut request = Request::new(request);
        request.set_timeout(self.max_timeout);
        self.client
            .clone()
            .store_grant(request)
            .await
            .map(|r| r.into_inner())
            .map_err(Self::grant_failure("StoreGrant"))
    }

    /// Reports what the provider answered to revocations of the connector's credentials.
    pub async fn report_revocations(&self, report: pb::ReportRevocationsRequest) -> Result<()> {
        let mut request = Request::new(report);
        request.set_timeout(self.max_timeout);
        self.client
            .clone()
            .report_revocations(request)
            .await
            .map(|_| ())
            .map_err(|status| {
                BrokerError::RegistryUnavailable(Box::new(Cause(format!(
                    "ReportRevocations answered {:?}: {}",
                    status.code(),
                    status.message()
                ))))
            })
    }

    /// Asks whether `identity` may use `connector` (for `installation`: empty for the default,
    /// `*` for every one).
    pub async fn ask(
        &self,
        identity: &Identity,
        connector: &str,
        installation: &str,
        caller_timeout: Option<Duration>,
    ) -> Result<Authorization> {
        let timeout = caller_timeout.map_or(self.max_timeout, |t| t.min(self.max_timeout));
        let mut request = Request::new(pb::AuthorizeRequest {
            owner_id: identity.owner_id.to_string(),
            project_id: identity.project_id.to_string(),
            environment: identity.environment.to_string(),
            issuer: identity.issuer.to_string(),
            connector: connector.to_owned(),
            installation_id: installation.to_owned(),
        });
        request.set_timeout(timeout);
        let answer = self
            .client
            .clone()
            .authorize(request)
            .await
            .map_err(|status| decision(status, identity, connector, installation))?
            .into_inner();
        check_answer(answer, identity, connector, installation)
    }
}

/// The registry's "no" as a broker error.
fn decision(
    status: Status,
    identity: &Identity,
    connector: &str,
    installation: &str,
) -> BrokerError {
    let info = status.get_details_error_info();
    let reason = info
        .as_ref()
        .filter(|i| i.domain == connect_types::ERROR_DOMAIN)
        .and_then(|i| Reason::parse(&i.reason));
    match (status.code(), reason) {
        (Code::Unauthenticated, Some(Reason::IssuerNotTrusted)) => {
            BrokerError::IssuerNotTrusted("the token's issuer is not the issuer of its team".into())
        }
        (Code::NotFound, Some(Reason::ConnectorNotFound)) => {
            BrokerError::ConnectorNotFound(connector.to_owned())
        }
        (Code::PermissionDenied, Some(Reason::ClientNotLinkedToProject)) => {
            BrokerError::ClientNotLinkedToProject {
                connector: connector.to_owned(),
                project_id: identity.project_id.to_string(),
            }
        }
        (Code::PermissionDenied, Some(Reason::ClientNotEnabledForEnvironment)) => {
            BrokerError::ClientNotEnabledForEnvironment {
                connector: connector.to_owned(),
                project_id: identity.project_id.to_string(),
                environment: identity.environment.to_string(),
            }
        }
        (Code::FailedPrecondition, Some(Reason::ConnectorSuspended)) => {
            BrokerError::ConnectorSuspended(connector.to_owned())
        }
        (Code::NotFound, Some(Reason::InstallationNotFound)) => BrokerError::InstallationNotFound {
            connector: connector.to_owned(),
            installation: if installation.is_empty() {
                "(default)".to_owned()
            } else {
                installation.to_owned()
            },
        },
        (Code::InvalidArgument, Some(Reason::InvalidArgument)) => {
            let violations = status
                .get_details_bad_request()
                .map(|b| {
                    b.field_violations
                        .into_iter()
                        .map(|v| FieldViolation::new(v.field, v.description))
                        .collect()
                })
                .unwrap_or_default();
            BrokerError::InvalidArgument(violations)
        }
        (code, reason) => BrokerError::RegistryUnavailable(Box::new(Cause(format!(
            "Authorize answered {code:?} ({})",
            reason.map_or("no reason", Reason::as_str)
        )))),
    }
}

/// A yes must be a whole, consistent answer about the asked-for connector (by id or uid), team,
/// project and environment.
fn check_answer(
    answer: pb::AuthorizeResponse,
    identity: &Identity,
    asked: &str,
    installation: &str,
) -> Result<Authorization> {
    let garbled = |what: &str| {
        BrokerError::RegistryUnavailable(Box::new(Cause(format!(
            "garbled Authorize answer: {what}"
        ))))
    };
    let connector = answer.connector.ok_or_else(|| garbled("no connector"))?;
    let link = answer.link.ok_or_else(|| garbled("no link"))?;
    if connector.id.is_empty() || connector.r#type.is_empty() {
        return Err(garbled("connector without id or type"));
    }
    if connector.id != asked && connector.uid != asked {
        return Err(garbled("another connector than the one asked about"));
    }
    if connector.owner_id != identity.owner_id.as_str() {
        return Err(garbled("a connector of another team"));
    }
    if link.connector_id != connector.id
        || link.project_id != identity.project_id.as_str()
        || link.owner_id != identity.owner_id.as_str()
        || !link
            .environments
            .iter()
            .any(|e| e == identity.environment.as_str())
    {
        return Err(garbled(
            "the link does not allow this project and environment",
        ));
    }
    let granted = match answer.installation {
        Some(i) if i.connector_id != connector.id || i.installation_id.is_empty() => {
            return Err(garbled("an installation of another connector"));
        }
        Some(i) => Some(InstallationGrant {
            id: i.installation_id,
            config: i.config.into_iter().collect(),
            secrets: answer
                .installation_secrets
                .into_iter()
                .map(|(k, v)| (k, SecretString::from(v)))
                .collect(),
        }),
        None => None,
    };
    let expected = match installation {
        "" | "*" => None,
        id => Some(id),
    };
    if expected.is_some() && expected != granted.as_ref().map(|i| i.id.as_str()) {
        return Err(garbled("another installation than the one asked about"));
    }
    Ok(Authorization {
        installation: granted,
        connector_id: connector.id,
        connector_uid: connector.uid,
        connector_type: connector.r#type,
        config: connector.config.into_iter().collect(),
        secrets: answer
            .secrets
            .into_iter()
            .map(|(k, v)| (k, SecretString::from(v)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            issuer: IssuerUrl::parse("https://issuer.example").unwrap(),
            owner_id: TeamId::parse("team_a").unwrap(),
            project_id: ProjectId::parse("prj_a").unwrap(),
            environment: Environment::Preview,
        }
    }

    fn answer() -> pb::AuthorizeResponse {
        pb::AuthorizeResponse {
            connector: Some(pb::Connector {
                id: "conn_1".into(),
                uid: "api-key/x".into(),
                r#type: "api-key".into(),
                owner_id: "team_a".into(),
                ..Default::default()
            }),
            link: Some(pb::ProjectLink {
                connector_id: "conn_1".into(),
                project_id: "prj_a".into(),
                owner_id: "team_a".into(),
                environments: vec!["preview".into()],
                ..Default::default()
            }),
            secrets: [("api_key".to_owned(), "k".to_owned())].into(),
            ..Default::default()
        }
    }

    use connect_types::{Environment, IssuerUrl, ProjectId, TeamId};

    #[test]
    fn a_whole_consistent_answer_is_accepted() {
        let authorization = check_answer(answer(), &identity(), "api-key/x", "").unwrap();
        assert!(check_answer(answer(), &identity(), "conn_1", "").is_ok());
        assert_eq!(authorization.connector_type, "api-key");
        assert!(!format!("{authorization:?}").contains("\"k\""));
    }

    #[test]
    fn an_answer_must_be_about_the_installation_asked_for() {
        let mut a = answer();
        a.installation = Some(pb::Installation {
            connector_id: "conn_1".into(),
            installation_id: "42".into(),
            ..Default::default()
        });
        let granted = check_answer(a.clone(), &identity(), "conn_1", "42").unwrap();
        assert_eq!(granted.installation_id(), Some("42"));
        assert!(check_answer(a.clone(), &identity(), "conn_1", "").is_ok());
        assert!(matches!(
            check_answer(a.clone(), &identity(), "conn_1", "43"),
            Err(BrokerError::RegistryUnavailable(_))
        ));
        a.installation.as_mut().unwrap().connector_id = "conn_2".into();
        assert!(matches!(
            check_answer(a, &identity(), "conn_1", "42"),
            Err(BrokerError::RegistryUnavailable(_))
        ));
        assert!(matches!(
            check_answer(answer(), &identity(), "conn_1", "42"),
            Err(BrokerError::RegistryUnavailable(_))
        ));
    }

    #[test]
    fn garbled_answers_are_registry_unavailable_never_a_yes() {
        type Garble = Box<dyn Fn(&mut pb::AuthorizeResponse)>;
        let garbled: Vec<Garble> = vec![
            Box::new(|a| a.connector = None),
            Box::new(|a| a.link = None),
            Box::new(|a| a.connector.as_mut().unwrap().r#type.clear()),
            Box::new(|a| a.link.as_mut().unwrap().project_id = "prj_other".into()),
            Box::new(|a| a.link.as_mut().unwrap().owner_id = "team_other".into()),
            Box::new(|a| a.link.as_mut().unwrap().connector_id = "conn_2".into()),
            Box::new(|a| a.link.as_mut().unwrap().environments = vec!["production".into()]),
            Box::new(|a| a.link.as_mut().unwrap().owner_id.clear()),
            Box::new(|a| a.connector.as_mut().unwrap().owner_id = "team_other".into()),
            Box::new(|a| {
                let c = a.connector.as_mut().unwrap();
                c.uid = "api-key/other".into();
            }),
        ];
        for garble in garbled {
            let mut a = answer();
            garble(&mut a);
            assert!(matches!(
                check_answer(a, &identity(), "api-key/x", ""),
                Err(BrokerError::RegistryUnavailable(_))
            ));
        }
    }

    #[test]
    fn the_registrys_no_becomes_the_matching_broker_error() {
        use tonic_types::{ErrorDetails, StatusExt};
        let status = |code, reason: &str| {
            let mut details = ErrorDetails::new();
            details.set_error_info(reason, "connect", []);
            Status::with_error_details(code, "x", details)
        };
        let id = identity();
        assert!(matches!(
            decision(
                status(Code::PermissionDenied, "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT"),
                &id,
                "c",
                ""
            ),
            BrokerError::ClientNotEnabledForEnvironment { .. }
        ));
        assert!(matches!(
            decision(status(Code::NotFound, "CONNECTOR_NOT_FOUND"), &id, "c", ""),
            BrokerError::ConnectorNotFound(_)
        ));
        assert!(matches!(
            decision(
                status(Code::NotFound, "INSTALLATION_NOT_FOUND"),
                &id,
                "c",
                "42"
            ),
            BrokerError::InstallationNotFound { .. }
        ));
        // Our own key refused, or anything unexpected: unavailable, not a decision.
        for (code, reason) in [
            (Code::Unauthenticated, "INVALID_KEY"),
            (Code::PermissionDenied, "ROLE_NOT_ALLOWED"),
            (Code::Internal, "INTERNAL"),
            (Code::NotFound, "PROJECT_NOT_FOUND"),
        ] {
            assert!(matches!(
                decision(status(code, reason), &id, "c", ""),
                BrokerError::RegistryUnavailable(_)
            ));
        }
        assert!(matches!(
            decision(Status::unavailable("down"), &id, "c", ""),
            BrokerError::RegistryUnavailable(_)
        ));
    }
}
