//! What each connector type can do, stated once: one row per type in [`CONNECTOR_TYPES`]. The
//! registry reads it to validate what admins store (installation ids, whether a credential can
//! be revoked at the provider) and answers it in `LinkRegistry.ListConnectorTypes`; the broker
//! reads it to apply a type's rules before its issuer runs (subjects, installations, `*`,
//! resources) and to know which types take user consents. Neither service matches on type
//! names: a new connector type is one issuer in the broker and one row here.

use std::fmt;

/// On whose behalf a token may be asked for (`GetTokenRequest.subject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    /// The connector's own credential.
    App,
    /// A user's stored grant (consented through `StartAuthorization`).
    User,
    /// RFC 7523: an assertion the broker signs.
    JwtBearer,
    /// RFC 8693: the caller's token, exchanged.
    Token,
}

impl SubjectKind {
    pub const ALL: &'static [SubjectKind] = &[
        SubjectKind::App,
        SubjectKind::User,
        SubjectKind::JwtBearer,
        SubjectKind::Token,
    ];

    /// The wire form, as `ListConnectorTypes` names it and `GetTokenRequest.subject` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::User => "user",
            Self::JwtBearer => "jwt_bearer",
            Self::Token => "token",
        }
    }
}

impl fmt::Display for SubjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a type treats installations (tenants inside one connector).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installations {
    /// The type has no installations.
    None,
    /// Tokens are for an installation or for none; an installation's config and secrets add to
    /// the connector's.
    Optional,
    /// Every token is for one installation (the asked one, or the connector's default).
    Required,
}

impl Installations {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }
}

/// What an installation id of a type looks like, beyond the common rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallationIds {
    /// Any id of the common rule.
    Any,
    /// The provider numbers its installations (GitHub).
    Digits,
}

/// What scopes of a type look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scopes {
    /// The type's tokens have no scopes.
    None,
    /// RFC 6749 §3.3 scope tokens.
    OAuth,
    /// `name:level` permissions (GitHub: levels `read`, `write`, `admin`).
    Permissions,
}

/// An RFC 6749 §3.3 scope token (%x21 / %x23-5B / %x5D-7E), at most 256 bytes.
pub fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope.len() <= 256
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// A `name:level` permission: its name and level.
pub fn permission(scope: &str) -> Option<(&str, &str)> {
    scope.split_once(':').filter(|(name, level)| {
        !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            && matches!(*level, "read" | "write" | "admin")
    })
}

/// Whether a type's credentials can be revoked at the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// Never: revoking drops Connect's copies only.
    None,
    /// Always (GitHub's `DELETE /installation/token`).
    Always,
    /// When the connector's config has this key (RFC 7009's `revocation_url`).
    WhenConfigured(&'static str),
}

/// One config value or secret a type reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    /// Issuing needs it (from the connector or, for types with installations, the installation).
    pub required: bool,
    pub description: &'static str,
}

const fn required(name: &'static str, description: &'static str) -> Key {
    Key {
        name,
        required: true,
        description,
    }
}

const fn optional(name: &'static str, description: &'static str) -> Key {
    Key {
        name,
        required: false,
        description,
    }
}

/// One connector type's row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The type, as a connector's uid starts with it (`api-key` in `api-key/stripe`).
    pub connector_type: &'static str,
    pub description: &'static str,
    pub subjects: &'static [SubjectKind],
    pub installations: Installations,
    pub installation_ids: InstallationIds,
    /// Whether `installation_id = "*"` (every installation at once) is allowed.
    pub cross_installation: bool,
    /// Whether tokens can be narrowed to `resources`.
    pub resources: bool,
    pub scopes: Scopes,
    pub revocation: Revocation,
    /// The type trades a token Connect mints (it signs as an OIDC issuer) for the provider's
    /// credential: no stored secret. Only a broker serving its issuer (`--issuer-listen`) can.
    pub mints: bool,
    /// Its credential is a bearer token or a header value: the credential-injecting proxy can
    /// send it (`proxy_base_url`, `proxy_auth`).
    pub proxy: bool,
    pub config_keys: &'static [Key],
    pub secret_keys: &'static [Key],
}

/// Every connector type Connect issues for.
pub const CONNECTOR_TYPES: &[Capabilities] = &[
    Capabilities {
        connector_type: "api-key",
        description: "a long-lived API key, handed out as it is stored",
        subjects: &[SubjectKind::App],
        installations: Installations::Optional,
        installation_ids: InstallationIds::Any,
        cross_installation: false,
        resources: false,
        scopes: Scopes::None,
        revocation: Revocation::None,
        mints: false,
        proxy: true,
        config_keys: &[PROXY_BASE_URL, PROXY_AUTH, PROXY_BASIC_USER],
        secret_keys: &[required("api_key", "the key itself")],
    },
    Capabilities {
        connector_type: "oauth2",
        description: "an OAuth 2.0 client: client credentials, user grants (authorization code \
                      with PKCE), RFC 8693 token exchange, RFC 7523 JWT bearer",
        subjects: &[
            SubjectKind::App,
            SubjectKind::User,
            SubjectKind::JwtBearer,
            SubjectKind::Token,
        ],
        installations: Installations::Optional,
        installation_ids: InstallationIds::Any,
        cross_installation: false,
        resources: false,
        scopes: Scopes::OAuth,
        revocation: Revocation::WhenConfigured("revocation_url"),
        mints: false,
        proxy: true,
        config_keys: &[
            PROXY_BASE_URL,
            PROXY_AUTH,
            PROXY_BASIC_USER,
            required("token_url", "the provider's token endpoint"),
            optional(
                "authorize_url",
                "the provider's authorization endpoint, for user consents",
            ),
            optional("revocation_url", "RFC 7009 token revocation endpoint"),
            optional(
                "userinfo_url",
                "where a consent learns the provider account it signed in as (sub or id), when the token endpoint returns no OpenID id_token",
            ),
            optional(
                "scopes",
                "scopes asked for when a caller names none (space-separated)",
            ),
            optional(
                "allowed_scopes",
                "the only scopes callers may ask for (space-separated)",
            ),
            optional(
                "user_scopes",
                "scopes a user consent asks for when the caller names none",
            ),
            optional(
                "grant_sharing",
                "team: one user grant for all the team's linked projects (default: each project its own)",
            ),
            optional(
                "assertion_alg",
                "JWT bearer assertion algorithm: ES256 (default) or RS256",
            ),
            optional(
                "jwt_bearer_subjects",
                "the JWT bearer subjects callers may ask for: comma-separated `sub` values, each \
                 exact or ending in `*` (a prefix); none: no JWT bearer grants",
            ),
            optional(
                "assertion_iss",
                "the JWT bearer assertion's `iss` (default: the client_id secret)",
            ),
            optional(
                "assertion_aud",
                "the JWT bearer assertion's `aud` (default: the token_url)",
            ),
        ],
        secret_keys: &[
            optional(
                "client_id",
                "the client's id (required except for bare JWT bearer grants)",
            ),
            optional("client_secret", "the client's secret"),
            optional(
                "assertion_key",
                "PEM private key that signs JWT bearer assertions",
            ),
        ],
    },
    Capabilities {
        connector_type: "github",
        description: "a GitHub App: installation access tokens, narrowed to repositories and \
                      permissions",
        subjects: &[SubjectKind::App],
        installations: Installations::Required,
        installation_ids: InstallationIds::Digits,
        cross_installation: false,
        resources: true,
        scopes: Scopes::Permissions,
        revocation: Revocation::Always,
        mints: false,
        proxy: true,
        config_keys: &[
            PROXY_BASE_URL,
            PROXY_AUTH,
            PROXY_BASIC_USER,
            required("app_id", "the GitHub App's id"),
            optional("api_url", "GitHub's API (default https://api.github.com)"),
        ],
        secret_keys: &[required(
            "private_key",
            "the App's PEM private key, which signs App JWTs",
        )],
    },
    Capabilities {
        connector_type: "aws",
        description: "AWS: STS AssumeRoleWithWebIdentity with a token Connect mints; temporary \
                      credentials (access key id, secret access key, session token), no stored \
                      secret",
        subjects: &[SubjectKind::App],
        installations: Installations::Optional,
        installation_ids: InstallationIds::Any,
        cross_installation: false,
        resources: false,
        scopes: Scopes::None,
        revocation: Revocation::None,
        mints: true,
        proxy: false,
        config_keys: &[
            required(
                "role_arn",
                "the IAM role to assume (arn:aws:iam::<account>:role/<name>)",
            ),
            optional(
                "sts_url",
                "the STS endpoint (default https://sts.amazonaws.com/)",
            ),
            optional(
                "audience",
                "the minted token's aud, an audience of the IAM OIDC provider (default sts.amazonaws.com)",
            ),
            optional(
                "duration_secs",
                "how long the credentials live, 900 to 43200 (default 3600)",
            ),
        ],
        secret_keys: &[],
    },
    Capabilities {
        connector_type: "gcp",
        description: "Google Cloud: workload identity federation (STS token exchange of a token \
                      Connect mints), optionally impersonating a service account; no stored secret",
        subjects: &[SubjectKind::App],
        installations: Installations::Optional,
        installation_ids: InstallationIds::Any,
        cross_installation: false,
        resources: false,
        scopes: Scopes::OAuth,
        revocation: Revocation::None,
        mints: true,
        proxy: true,
        config_keys: &[
            PROXY_BASE_URL,
            PROXY_AUTH,
            PROXY_BASIC_USER,
            required(
                "audience",
                "the workload identity provider's resource name (//iam.googleapis.com/projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>)",
            ),
            optional(
                "sts_url",
                "Google's STS (default https://sts.googleapis.com/v1/token)",
            ),
            optional(
                "service_account",
                "the service account to impersonate (generateAccessToken); none: the federated token itself",
            ),
            optional(
                "iam_url",
                "the IAM Credentials API (default https://iamcredentials.googleapis.com)",
            ),
            optional(
                "scopes",
                "scopes asked for when a caller names none (default https://www.googleapis.com/auth/cloud-platform)",
            ),
            optional(
                "duration_secs",
                "a service account token's lifetime, 1 to 3600 (default 3600)",
            ),
        ],
        secret_keys: &[],
    },
    Capabilities {
        connector_type: "azure",
        description: "Microsoft Entra ID: client credentials with a token Connect mints as the \
                      client assertion (a federated identity credential); no stored secret",
        subjects: &[SubjectKind::App],
        installations: Installations::Optional,
        installation_ids: InstallationIds::Any,
        cross_installation: false,
        resources: false,
        scopes: Scopes::OAuth,
        revocation: Revocation::None,
        mints: true,
        proxy: true,
        config_keys: &[
            PROXY_BASE_URL,
            PROXY_AUTH,
            PROXY_BASIC_USER,
            required("tenant_id", "the Entra tenant (directory) id"),
            required(
                "client_id",
                "the application (client) id of the app registration",
            ),
            optional(
                "authority_url",
                "the Entra authority (default https://login.microsoftonline.com)",
            ),
            optional(
                "audience",
                "the minted token's aud, as the federated credential names it (default api://AzureADTokenExchange)",
            ),
            optional(
                "scopes",
                "scopes asked for when a caller names none (default https://management.azure.com/.default)",
            ),
        ],
        secret_keys: &[],
    },
];

/// Where the proxy sends a connector's requests (`{proxy}/{connector}/{path}` →
/// `{proxy_base_url}/{path}`).
const PROXY_BASE_URL: Key = optional(
    "proxy_base_url",
    "the provider API the proxy forwards to (checked by the URL policy like every *_url)",
);

/// The user name of `proxy_auth = basic`.
const PROXY_BASIC_USER: Key = optional(
    "proxy_basic_user",
    "the user name sent with proxy_auth = basic (default: empty)",
);

/// How the proxy injects the credential.
const PROXY_AUTH: Key = optional(
    "proxy_auth",
    "how the proxy injects the credential: bearer (Authorization: Bearer, the default), header:<Name>, or basic (as the password)",
);

/// The row of a connector type, if Connect knows it.
pub fn capabilities(connector_type: &str) -> Option<&'static Capabilities> {
    CONNECTOR_TYPES
        .iter()
        .find(|c| c.connector_type == connector_type)
}

/// The known types, comma-separated, for messages that list them.
pub fn known_types() -> String {
    CONNECTOR_TYPES
        .iter()
        .map(|c| c.connector_type)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A request a type's row refuses before its issuer runs. The broker answers it as an error;
/// `ExplainAccess` shows it as the failed `type_rules` check: both ask [`Capabilities::refusal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowRefusal {
    /// `*` (every installation) from a type that issues for one at a time.
    EveryInstallation,
    /// No installation asked and no default, from a type that requires one.
    InstallationRequired,
    /// Resources from a type that cannot narrow tokens to them.
    Resources,
    /// A subject kind the type does not issue for.
    Subject(SubjectKind),
}

/// What a `GetToken` asks of a type's row, beyond the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowAsk {
    /// `*` was asked.
    pub every_installation: bool,
    /// An installation was asked, or the connector has a default one.
    pub has_installation: bool,
    /// Resources were asked.
    pub resources: bool,
    pub subject: SubjectKind,
}

impl Capabilities {
    pub fn accepts(&self, subject: SubjectKind) -> bool {
        self.subjects.contains(&subject)
    }

    /// The first rule of the row that `ask` breaks, in the broker's order.
    pub fn refusal(&self, ask: RowAsk) -> Option<RowRefusal> {
        if ask.every_installation && !self.cross_installation {
            Some(RowRefusal::EveryInstallation)
        } else if self.installations == Installations::Required && !ask.has_installation {
            Some(RowRefusal::InstallationRequired)
        } else if ask.resources && !self.resources {
            Some(RowRefusal::Resources)
        } else if !self.accepts(ask.subject) {
            Some(RowRefusal::Subject(ask.subject))
        } else {
            None
        }
    }

    /// Whether `scope` is one of the type's scopes.
    pub fn is_scope(&self, scope: &str) -> bool {
        match self.scopes {
            Scopes::None => false,
            Scopes::OAuth => is_scope_token(scope),
            Scopes::Permissions => permission(scope).is_some(),
        }
    }

    /// Whether credentials of a connector with `config` can be revoked at the provider.
    pub fn can_revoke<'a>(&self, mut config: impl FnMut(&str) -> Option<&'a str>) -> bool {
        match self.revocation {
            Revocation::None => false,
            Revocation::Always => true,
            Revocation::WhenConfigured(key) => config(key).is_some_and(|v| !v.is_empty()),
        }
    }

    /// Checks an installation id against the type's own rule (after the common one).
    pub fn check_installation_id(&self, id: &str) -> Result<(), String> {
        match self.installation_ids {
            InstallationIds::Any => Ok(()),
            InstallationIds::Digits if id.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
            InstallationIds::Digits => Err(format!(
                "installation_id of a {} connector is the provider's installation number",
                self.connector_type
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConnectorType;

    #[test]
    fn every_row_is_a_valid_distinct_type_with_sound_rules() {
        let mut seen = std::collections::HashSet::new();
        for row in CONNECTOR_TYPES {
            let kind = row.connector_type;
            assert!(ConnectorType::parse(kind).is_ok(), "{kind}");
            assert!(seen.insert(kind), "{kind} twice");
            assert_eq!(capabilities(kind), Some(row));
            assert!(!row.description.is_empty(), "{kind}");
            assert!(!row.subjects.is_empty(), "{kind} issues for nobody");
            if row.installations == Installations::None {
                assert!(!row.cross_installation, "{kind}: `*` without installations");
                assert_eq!(row.installation_ids, InstallationIds::Any, "{kind}");
            }
            if let Revocation::WhenConfigured(key) = row.revocation {
                assert!(
                    row.config_keys.iter().any(|k| k.name == key && !k.required),
                    "{kind}: revocation depends on an undeclared config key"
                );
            }
            for keys in [row.config_keys, row.secret_keys] {
                let mut names: Vec<&str> = keys.iter().map(|k| k.name).collect();
                names.sort_unstable();
                names.dedup();
                assert_eq!(names.len(), keys.len(), "{kind}: a key twice");
                assert!(keys.iter().all(|k| !k.description.is_empty()), "{kind}");
            }
            // Destinations are `*_url` keys, which the URL policy checks; nothing else is one.
            assert!(
                row.secret_keys
                    .iter()
                    .all(|k| !crate::is_destination_key(k.name)),
                "{kind}: a secret named like a destination"
            );
        }
        assert_eq!(capabilities("slack"), None);
        assert_eq!(known_types(), "api-key, oauth2, github, aws, gcp, azure");
    }

    #[test]
    fn revocation_and_installation_rules_read_the_row() {
        let oauth2 = capabilities("oauth2").unwrap();
        assert!(!oauth2.can_revoke(|_| None));
        assert!(!oauth2.can_revoke(|_| Some("")));
        assert!(oauth2.can_revoke(|k| (k == "revocation_url").then_some("https://idp/revoke")));
        let github = capabilities("github").unwrap();
        assert!(github.can_revoke(|_| None));
        assert!(!capabilities("api-key").unwrap().can_revoke(|_| Some("x")));

        assert!(github.check_installation_id("42").is_ok());
        assert!(github.check_installation_id("acme").is_err());
        assert!(oauth2.check_installation_id("acme").is_ok());
        assert!(oauth2.accepts(SubjectKind::User) && !github.accepts(SubjectKind::User));
        assert_eq!(
            SubjectKind::ALL
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
            ["app", "user", "jwt_bearer", "token"]
        );
    }
}
