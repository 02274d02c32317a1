//! `aws`, `gcp` and `azure` connectors: no stored secret. The broker mints a short-lived OIDC
//! token for the calling deployment (see [`crate::issuer`]) and trades it at the cloud, which
//! trusts Connect's issuer and checks the token against the keys it publishes:
//!
//! - `aws`: STS `AssumeRoleWithWebIdentity` (the query API, answered in XML) for the connector's
//!   `role_arn`: the temporary key id, secret key and session token.
//! - `gcp`: Google's STS (RFC 8693 token exchange, as Google's client libraries send it) for a
//!   federated access token of the workload identity provider `audience`; with
//!   `service_account`, IAM Credentials `generateAccessToken` impersonating it.
//! - `azure`: Entra ID's v2 token endpoint, client credentials with the minted token as the
//!   `client_assertion` of the app registration's federated credential.
//!
//! Credentials are cached per (team, project, environment, connector, installation, config,
//! scopes) until shortly before they expire, like every provider token. A refusal is
//! `NO_VALID_TOKEN` with the cloud's own code; no answer, a 5xx or throttling is
//! `PROVIDER_UNAVAILABLE`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use secrecy::SecretString;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{
    Credential, Grant, IssuedToken, TokenIssuer,
    provider::{CachedToken, ProviderFailure, TokenCache, Unreachable, form, post_grant_as, send},
};
use crate::{
    error::{BrokerError, Result, provider_text},
    issuer::{MintedFor, Minter},
    metrics::BrokerMetrics,
    outbound::Outbound,
};

/// The cloud a connector type trades with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cloud {
    Aws,
    Gcp,
    Azure,
}

impl Cloud {
    pub fn kind(self) -> &'static str {
        match self {
            Self::Aws => "aws",
            Self::Gcp => "gcp",
            Self::Azure => "azure",
        }
    }

    /// The minted token's `aud`: the connector's `audience`, or the cloud's default. (For
    /// Google that is the workload identity provider's resource name, which a provider without
    /// allowed audiences accepts with or without an `https:` prefix.)
    fn token_audience(self, grant: &Grant<'_>) -> String {
        let configured = grant.config("audience").filter(|a| !a.is_empty());
        match (self, configured) {
            (_, Some(audience)) => audience.clone(),
            (Self::Aws, None) => "sts.amazonaws.com".into(),
            (Self::Gcp, None) => String::new(),
            (Self::Azure, None) => "api://AzureADTokenExchange".into(),
        }
    }
}

/// Issues the credentials of one cloud's connectors.
pub struct CloudIssuer {
    cloud: Cloud,
    outbound: Outbound,
    max_cache: Duration,
    cache: TokenCache,
    /// `None` on a broker that is not an OIDC issuer: it cannot mint.
    minter: Option<Minter>,
}

impl std::fmt::Debug for CloudIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudIssuer")
            .field("cloud", &self.cloud)
            .field("cache", &self.cache)
            .field("mints", &self.minter.is_some())
            .finish_non_exhaustive()
    }
}

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const CLIENT_ASSERTION_JWT: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const AZURE_MANAGEMENT: &str = "https://management.azure.com/.default";

impl CloudIssuer {
    pub fn new(
        cloud: Cloud,
        outbound: Outbound,
        max_cache: Duration,
        metrics: BrokerMetrics,
        minter: Option<Minter>,
    ) -> Self {
        Self {
            cache: TokenCache::new(cloud.kind(), outbound.http().clone(), metrics),
            cloud,
            outbound,
            max_cache,
            minter,
        }
    }

    /// A config URL, after the broker's destination policy.
    fn url(&self, grant: &Grant<'_>, key: &str, default: &str) -> Result<url::Url> {
        let value = grant.config(key).map_or(default, String::as_str);
        self.outbound.check(value).map_err(|refusal| {
            tracing::warn!(connector = %grant.authorization.connector_uid, %refusal,
                "refusing the connector's {key}");
            BrokerError::NoValidToken(format!(
                "the connector's {key} is not an allowed destination"
            ))
        })
    }

    /// What one fetch does, with everything it needs owned.
    fn plan(&self, grant: &Grant<'_>) -> Result<Plan> {
        let config = |key: &str| grant.config(key).filter(|v| !v.is_empty());
        let required = |key: &str| {
            config(key).cloned().ok_or_else(|| {
                BrokerError::NoValidToken(format!("the connector has no config.{key}"))
            })
        };
        let configured_scopes = || -> Vec<String> {
            config("scopes")
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let scopes = |default: &str| -> Vec<String> {
            let mut scopes = if !grant.scopes.is_empty() {
                grant.scopes.to_vec()
            } else if !configured_scopes().is_empty() {
                configured_scopes()
            } else {
                vec![default.to_owned()]
            };
            scopes.sort();
            scopes.dedup();
            scopes
        };
        Ok(match self.cloud {
            Cloud::Aws => {
                if !grant.scopes.is_empty() {
                    return Err(BrokerError::invalid(
                        "scopes",
                        "aws connectors have no scopes: the role's policies decide",
                    ));
                }
                let role_arn = required("role_arn")?;
                if !role_arn.starts_with("arn:") || role_arn.len() > 2048 {
                    return Err(BrokerError::NoValidToken(
                        "the connector's role_arn is not an IAM role ARN".into(),
                    ));
                }
                let duration = duration_secs(grant, 900..=43_200)?;
                Plan::Aws {
                    sts_url: self.url(grant, "sts_url", "https://sts.amazonaws.com/")?,
                    role_arn,
                    duration,
                    session_name: session_name(grant),
                }
            }
            Cloud::Gcp => {
                let audience = required("audience")?;
                let service_account = config("service_account").cloned();
                let lifetime = duration_secs(grant, 1..=3600)?;
                let iam = match &service_account {
                    Some(account) => {
                        if account.is_empty()
                            || account.len() > 320
                            || !account
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"@.-_".contains(&b))
                        {
                            return Err(BrokerError::NoValidToken(
                                "the connector's service_account is not a service account email"
                                    .into(),
                            ));
                        }
                        let mut url =
                            self.url(grant, "iam_url", "https://iamcredentials.googleapis.com")?;
                        url.path_segments_mut()
                            .map_err(|_| {
                                BrokerError::NoValidToken(
                                    "the connector's iam_url cannot take a path".into(),
                                )
                            })?
                            .pop_if_empty()
                            .extend([
                                "v1",
                                "projects",
                                "-",
                                "serviceAccounts",
                                &format!("{account}:generateAccessToken"),
                            ]);
                        Some((url, lifetime))
                    }
                    None => None,
                };
                Plan::Gcp {
                    sts_url: self.url(grant, "sts_url", "https://sts.googleapis.com/v1/token")?,
                    audience,
                    scopes: scopes(CLOUD_PLATFORM),
                    iam,
                }
            }
            Cloud::Azure => {
                let tenant = required("tenant_id")?;
                if tenant.len() > 128
                    || !tenant
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                {
                    return Err(BrokerError::NoValidToken(
                        "the connector's tenant_id is not a tenant id or domain".into(),
                    ));
                }
                let mut token_url =
                    self.url(grant, "authority_url", "https://login.microsoftonline.com")?;
                token_url
                    .path_segments_mut()
                    .map_err(|_| {
                        BrokerError::NoValidToken(
                            "the connector's authority_url cannot take a path".into(),
                        )
                    })?
                    .pop_if_empty()
                    .extend([tenant.as_str(), "oauth2", "v2.0", "token"]);
                Plan::Azure {
                    token_url,
                    client_id: required("client_id")?,
                    scopes: scopes(AZURE_MANAGEMENT),
                }
            }
        })
    }
}

/// The connector's `duration_secs` (default an hour), which must lie in `range`.
fn duration_secs(grant: &Grant<'_>, range: std::ops::RangeInclusive<u32>) -> Result<u32> {
    let Some(value) = grant.config("duration_secs").filter(|v| !v.is_empty()) else {
        return Ok(3600);
    };
    value
        .parse::<u32>()
        .ok()
        .filter(|d| range.contains(d))
        .ok_or_else(|| {
            BrokerError::NoValidToken(format!(
                "the connector's duration_secs is not a number from {} to {}",
                range.start(),
                range.end()
            ))
        })
}

/// One fetch, planned.
#[derive(Clone, Debug)]
enum Plan {
    Aws {
        sts_url: url::Url,
        role_arn: String,
        duration: u32,
        session_name: String,
    },
    Gcp {
        sts_url: url::Url,
        audience: String,
        scopes: Vec<String>,
        /// `generateAccessToken`'s URL and the lifetime asked, when impersonating.
        iam: Option<(url::Url, u32)>,
    },
    Azure {
        token_url: url::Url,
        client_id: String,
        scopes: Vec<String>,
    },
}

/// AWS's `RoleSessionName` (`[\w+=,.@-]{2,64}`): the project and environment, so CloudTrail shows
/// which deployment acted.
fn session_name(grant: &Grant<'_>) -> String {
    let raw = format!(
        "connect-{}-{}",
        grant.identity.project_id, grant.identity.environment
    );
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}

/// What STS answers (the query API's XML).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AssumeRoleWithWebIdentityResponse {
    assume_role_with_web_identity_result: AssumeRoleResult,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AssumeRoleResult {
    credentials: StsCredentials,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

#[derive(Deserialize)]
struct StsErrorResponse {
    #[serde(rename = "Error")]
    error: StsError,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsError {
    code: String,
    #[serde(default)]
    message: String,
}

/// STS codes that say "try again later", not "no".
const AWS_TRANSIENT: &[&str] = &[
    "IDPCommunicationError",
    "Throttling",
    "ThrottlingException",
    "ServiceUnavailable",
];

async fn aws(
    http: reqwest::Client,
    max_cache: Duration,
    (sts_url, role_arn, duration, session_name): (url::Url, String, u32, String),
    web_identity_token: String,
) -> Result<CachedToken, ProviderFailure> {
    let body = form(
        &[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", &role_arn),
            ("RoleSessionName", &session_name),
            ("WebIdentityToken", &web_identity_token),
            ("DurationSeconds", &duration.to_string()),
        ],
        &[],
    );
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(sts_url.as_str())
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(body)
        .map_err(|e| ProviderFailure::Rejected(format!("STS request: {e}")))?;
    let response = send(&http, request)
        .await
        .map_err(|Unreachable(why)| ProviderFailure::Unavailable(why))?;
    let text = String::from_utf8_lossy(response.body());
    if !response.status().is_success() {
        let Ok(answer) = quick_xml::de::from_str::<StsErrorResponse>(&text) else {
            return Err(ProviderFailure::Rejected(format!(
                "AWS STS refused the web identity token (HTTP {})",
                response.status()
            )));
        };
        let why = format!(
            "AWS STS refused the web identity token ({}: {})",
            provider_text(&answer.error.code),
            provider_text(&answer.error.message)
        );
        return Err(if AWS_TRANSIENT.contains(&answer.error.code.as_str()) {
            ProviderFailure::Unavailable(why)
        } else {
            ProviderFailure::Rejected(why)
        });
    }
    let answer = quick_xml::de::from_str::<AssumeRoleWithWebIdentityResponse>(&text)
        .map_err(|_| ProviderFailure::Rejected("AWS STS's answer is unreadable".into()))?;
    let credentials = answer.assume_role_with_web_identity_result.credentials;
    let expires_at = DateTime::parse_from_rfc3339(credentials.expiration.trim())
        .map_err(|_| ProviderFailure::Rejected("AWS STS's Expiration is unreadable".into()))?
        .with_timezone(&Utc);
    let session_token = SecretString::from(credentials.session_token);
    let mut token = CachedToken::until(
        session_token.clone(),
        Some(expires_at),
        Vec::new(),
        max_cache,
    );
    token.credential = Credential(
        [
            (
                "access_key_id".to_owned(),
                SecretString::from(credentials.access_key_id),
            ),
            (
                "secret_access_key".to_owned(),
                SecretString::from(credentials.secret_access_key),
            ),
            ("session_token".to_owned(), session_token),
        ]
        .into_iter()
        .collect(),
    );
    Ok(token)
}

/// An RFC 6749/8693 token answer (Google's STS, Entra ID).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
}

impl TokenAnswer {
    fn cached(self, asked: Vec<String>, max_cache: Duration) -> CachedToken {
        let scopes = self
            .scope
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or(asked);
        CachedToken::new(
            SecretString::from(self.access_token),
            self.expires_in.map(Duration::from_secs),
            scopes,
            max_cache,
        )
    }
}

/// IAM Credentials' `generateAccessToken` answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeneratedAccessToken {
    access_token: String,
    expire_time: String,
}

/// Google's JSON error envelope.
#[derive(Deserialize)]
struct GoogleError {
    error: GoogleErrorBody,
}

#[derive(Deserialize)]
struct GoogleErrorBody {
    #[serde(default)]
    status: String,
    #[serde(default)]
    message: String,
}

async fn gcp(
    http: reqwest::Client,
    max_cache: Duration,
    (sts_url, audience, scopes, iam): (url::Url, String, Vec<String>, Option<(url::Url, u32)>),
    subject_token: String,
) -> Result<CachedToken, ProviderFailure> {
    // Impersonation needs a federated token for the IAM Credentials API; the caller's scopes go
    // to the service account's token.
    let sts_scopes = if iam.is_some() {
        vec![CLOUD_PLATFORM.to_owned()]
    } else {
        scopes.clone()
    };
    let body = form(
        &[
            ("grant_type", TOKEN_EXCHANGE),
            ("audience", &audience),
            ("requested_token_type", super::ACCESS_TOKEN_TYPE),
            ("subject_token", &subject_token),
            ("subject_token_type", JWT_TOKEN_TYPE),
        ],
        &sts_scopes,
    );
    let federated: TokenAnswer = post_grant_as(
        &http,
        &sts_url,
        body,
        None,
        "workload identity token exchange",
    )
    .await?;
    let Some((iam_url, lifetime)) = iam else {
        return Ok(federated.cached(scopes, max_cache));
    };
    let body = serde_json::to_vec(&serde_json::json!({
        "scope": scopes,
        "lifetime": format!("{lifetime}s"),
    }))
    .map_err(|e| ProviderFailure::Rejected(format!("generateAccessToken request: {e}")))?;
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(iam_url.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", federated.access_token),
        )
        .body(body)
        .map_err(|e| ProviderFailure::Rejected(format!("generateAccessToken request: {e}")))?;
    let response = send(&http, request)
        .await
        .map_err(|Unreachable(why)| ProviderFailure::Unavailable(why))?;
    if !response.status().is_success() {
        let detail = serde_json::from_slice::<GoogleError>(response.body())
            .map(|e| {
                format!(
                    "{}: {}",
                    provider_text(&e.error.status),
                    provider_text(&e.error.message)
                )
            })
            .unwrap_or_else(|_| format!("HTTP {}", response.status()));
        let why = format!("Google IAM refused to impersonate the service account ({detail})");
        return Err(
            if response.status() == http::StatusCode::TOO_MANY_REQUESTS {
                ProviderFailure::Unavailable(why)
            } else {
                ProviderFailure::Rejected(why)
            },
        );
    }
    let generated: GeneratedAccessToken =
        serde_json::from_slice(response.body()).map_err(|_| {
            ProviderFailure::Rejected(
                "Google IAM's generateAccessToken answer is unreadable".into(),
            )
        })?;
    let expires_at = DateTime::parse_from_rfc3339(&generated.expire_time)
        .map_err(|_| ProviderFailure::Rejected("Google IAM's expireTime is unreadable".into()))?
        .with_timezone(&Utc);
    Ok(CachedToken::until(
        SecretString::from(generated.access_token),
        Some(expires_at),
        scopes,
        max_cache,
    ))
}

async fn azure(
    http: reqwest::Client,
    max_cache: Duration,
    (token_url, client_id, scopes): (url::Url, String, Vec<String>),
    assertion: String,
) -> Result<CachedToken, ProviderFailure> {
    let body = form(
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &client_id),
            ("client_assertion_type", CLIENT_ASSERTION_JWT),
            ("client_assertion", &assertion),
        ],
        &scopes,
    );
    let answer: TokenAnswer = post_grant_as(
        &http,
        &token_url,
        body,
        None,
        "client credentials (federated assertion)",
    )
    .await?;
    Ok(answer.cached(scopes, max_cache))
}

#[async_trait]
impl TokenIssuer for CloudIssuer {
    async fn issue(&self, grant: Grant<'_>) -> Result<IssuedToken> {
        let Some(minter) = self.minter.clone() else {
            return Err(BrokerError::FailedPrecondition(format!(
                "{} connectors trade a token Connect mints, and this broker is not an OIDC issuer: start it with --issuer-listen (and --issuer-url)",
                self.cloud.kind()
            )));
        };
        let plan = self.plan(&grant)?;
        let audience = self.cloud.token_audience(&grant);
        let whom = MintedFor::new(&minter.url, grant.identity, grant.authorization, &audience);
        if grant.authorization.project_name.is_empty() {
            return Err(BrokerError::NoValidToken(
                "the registry did not name the project, which the minted token's sub needs".into(),
            ));
        }
        // Per (team, project, environment) — the minted token names them — and everything the
        // exchange depends on.
        let installation = grant.installation();
        let mut digest = Sha256::new();
        let mut add = |part: &str| {
            digest.update(part.as_bytes());
            digest.update([0]);
        };
        add(self.cloud.kind());
        add(&whom.sub);
        add(&whom.aud);
        add(&whom.owner_id);
        add(&whom.project_id);
        add(&whom.environment);
        add(&whom.connector_id);
        add(installation.map_or("", |i| i.id.as_str()));
        add(&format!("{plan:?}"));
        let key = hex::encode(digest.finalize());
        let (http, max_cache) = (self.outbound.http().clone(), self.max_cache);
        let fetch = || {
            let (http, plan, minter, whom) =
                (http.clone(), plan.clone(), minter.clone(), whom.clone());
            Box::pin(async move {
                let token = minter.mint(&whom).map_err(|e| {
                    ProviderFailure::Rejected(format!("minting the token to trade: {e}"))
                })?;
                match plan {
                    Plan::Aws {
                        sts_url,
                        role_arn,
                        duration,
                        session_name,
                    } => {
                        aws(
                            http,
                            max_cache,
                            (sts_url, role_arn, duration, session_name),
                            token,
                        )
                        .await
                    }
                    Plan::Gcp {
                        sts_url,
                        audience,
                        scopes,
                        iam,
                    } => gcp(http, max_cache, (sts_url, audience, scopes, iam), token).await,
                    Plan::Azure {
                        token_url,
                        client_id,
                        scopes,
                    } => azure(http, max_cache, (token_url, client_id, scopes), token).await,
                }
            }) as BoxFuture<'static, _>
        };
        self.cache
            .issue(&grant, key, grant.min_ttl, None, fetch)
            .await
    }

    fn forget_all(&self) {
        self.cache.forget_all();
    }

    async fn forget(&self, scope: &crate::registry::RevokeScope) {
        self.cache.forget(scope).await;
    }

    async fn revoke(
        &self,
        scope: &crate::registry::RevokeScope,
    ) -> Vec<(SecretString, super::RevokeOutcome)> {
        // Cloud credentials cannot be revoked one by one: Connect's copies go.
        self.cache.revoke(scope).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts_answers_parse_in_their_xml() {
        let ok = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>owner:acme:project:web:environment:production</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/deploy/connect-prj-production</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:connect</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>FwoGZXIvYXdzEXAMPLE</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY</SecretAccessKey>
      <Expiration>2026-12-05T12:00:00Z</Expiration>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
    </Credentials>
    <Provider>connect.example.com</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#;
        let parsed: AssumeRoleWithWebIdentityResponse = quick_xml::de::from_str(ok).unwrap();
        let c = parsed.assume_role_with_web_identity_result.credentials;
        assert_eq!(c.access_key_id, "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(
            c.secret_access_key,
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        );
        assert_eq!(c.session_token, "FwoGZXIvYXdzEXAMPLE");
        assert_eq!(c.expiration, "2026-12-05T12:00:00Z");
        let err = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Incorrect token audience</Message></Error>
  <RequestId>1</RequestId>
</ErrorResponse>"#;
        let parsed: StsErrorResponse = quick_xml::de::from_str(err).unwrap();
        assert_eq!(parsed.error.code, "InvalidIdentityToken");
        assert_eq!(parsed.error.message, "Incorrect token audience");
    }
}
