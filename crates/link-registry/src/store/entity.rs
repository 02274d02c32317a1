//! sea-orm entities, one module per table. They mirror the migrations exactly; conversion to
//! domain records lives in `store::rows`.

pub mod team {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "teams")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub slug: String,
        pub issuer: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod api_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub team_id: Option<String>,
        pub role: String,
        pub key_hash: String,
        pub created_at: DateTimeUtc,
        pub expires_at: Option<DateTimeUtc>,
        pub revoked_at: Option<DateTimeUtc>,
        pub last_used_at: Option<DateTimeUtc>,
        /// A `broker` key's teams (JSON array of ids); `None`: every team.
        pub broker_teams: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod project {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "projects")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub team_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod connector {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "connectors")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub team_id: String,
        pub uid: String,
        pub kind: String,
        pub name: String,
        /// JSON object of strings.
        pub config: String,
        /// JSON object: secret name → `{ sealed, fingerprint }`.
        pub secrets: String,
        pub suspended: bool,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub default_installation_id: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod project_link {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "project_links")]
    pub struct Model {
        pub team_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub connector_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub project_id: String,
        /// Bit mask: development 1, preview 2, production 4; never 0.
        pub environments: i32,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        /// From then on the link no longer authorizes; `None`: never.
        pub expires_at: Option<DateTimeUtc>,
        /// Ceilings and quota (JSON); `None`: none.
        pub limits: Option<String>,
        /// When a credential was last recorded for the link; `None`: never.
        pub last_issued_at: Option<DateTimeUtc>,
        /// Ids of the custom environments it enables, space-separated, sorted.
        pub custom_environments: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit_event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub team_id: Option<String>,
        pub actor: String,
        pub action: String,
        pub target: String,
        /// JSON, absent for creations.
        pub before: Option<String>,
        /// JSON, absent for deletions.
        pub after: Option<String>,
        pub created_at: DateTimeUtc,
        /// For a person's change: the issuer of their ID token.
        pub actor_issuer: Option<String>,
        /// The hash chain (see `domain::audit::chain_hash`).
        pub prev_hash: Option<String>,
        pub hash: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod change {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "changes")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub revision: i64,
        pub action: String,
        pub team_id: String,
        pub connector_id: Option<String>,
        pub connector_uid: Option<String>,
        pub project_id: Option<String>,
        pub created_at: DateTimeUtc,
        pub installation_id: Option<String>,
        pub subject: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod issuance {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "issuances")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub team_id: String,
        pub token_id: String,
        pub project_id: String,
        pub environment: String,
        pub connector_id: String,
        pub connector_uid: String,
        pub subject: String,
        pub installation_id: String,
        /// Space-separated.
        pub scopes: String,
        pub issued_at: DateTimeUtc,
        pub expires_at: Option<DateTimeUtc>,
        pub revoked: bool,
        /// `revoked`, `failed` or `skipped` once the provider side of a revocation is known.
        pub provider_revocation: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod installation {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "installations")]
    pub struct Model {
        pub team_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub connector_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub installation_id: String,
        pub display_name: String,
        /// JSON object of strings.
        pub config: String,
        /// JSON object: secret name → `{ sealed, fingerprint }`.
        pub secrets: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod grant {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "grants")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub team_id: String,
        /// Empty: shared by the team's linked projects (`grant_sharing=team`).
        pub project_id: String,
        pub connector_id: String,
        pub user_id: String,
        pub environment: String,
        /// Empty when the grant is for no installation.
        pub installation_id: String,
        /// JSON `{ sealed, fingerprint }`.
        pub access_token: String,
        pub refresh_token: Option<String>,
        pub expires_at: Option<DateTimeUtc>,
        /// Space-separated.
        pub scopes: String,
        pub state: String,
        pub version: i64,
        pub lease_id: Option<String>,
        pub lease_expires_at: Option<DateTimeUtc>,
        pub last_error: Option<String>,
        pub last_refresh_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        /// The provider account it acts as, when the provider named one.
        pub provider_subject: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod authorization_request {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "authorization_requests")]
    pub struct Model {
        /// SHA-256 (hex) of the `state` handed to the provider; the state itself is not kept.
        #[sea_orm(primary_key, auto_increment = false)]
        pub state_hash: String,
        pub team_id: String,
        /// The deployment that asked: its project and token issuer (the callback checks its link
        /// again).
        pub project_id: String,
        pub issuer: String,
        pub connector_id: String,
        pub user_id: String,
        pub environment: String,
        pub installation_id: String,
        pub scopes: String,
        pub return_url: String,
        pub redirect_uri: String,
        /// JSON `{ sealed, fingerprint }` of the PKCE verifier.
        pub code_verifier: String,
        pub expires_at: DateTimeUtc,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod key_check {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "key_checks")]
    pub struct Model {
        /// Always 1: one check per database.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub sealed: String,
        pub created_at: DateTimeUtc,
        /// The key `token_id`s are computed under, sealed; written when first needed.
        pub token_id_key: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod held_consent {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "held_consents")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub request_id: String,
        /// SHA-256 (hex) of the one-time completion secret; the secret itself is not kept.
        pub completion_hash: String,
        pub team_id: String,
        pub project_id: String,
        pub issuer: String,
        pub connector_id: String,
        pub user_id: String,
        pub environment: String,
        pub installation_id: String,
        /// JSON `{ sealed, fingerprint }` of each token.
        pub access_token: String,
        pub refresh_token: Option<String>,
        pub token_expires_at: Option<DateTimeUtc>,
        pub scopes: String,
        pub expires_at: DateTimeUtc,
        pub created_at: DateTimeUtc,
        /// The provider account the consent signed in as, when the provider named one.
        pub provider_subject: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod grant_revocation {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "grant_revocations")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub team_id: String,
        pub connector_id: String,
        /// JSON `{ sealed, fingerprint }`, sealed as the grant's was.
        pub refresh_token: String,
        /// The associated-data name it was sealed under.
        pub sealing_name: String,
        /// A broker is revoking it until then (it is deleted when that broker is done).
        pub claimed_until: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A deleted connector's row, kept while refresh tokens it held wait for revocation.
pub mod departed_connector {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "departed_connectors")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub team_id: String,
        pub uid: String,
        pub kind: String,
        pub name: String,
        pub config: String,
        pub secrets: String,
        pub suspended: bool,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub default_installation_id: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl From<super::connector::Model> for Model {
        fn from(c: super::connector::Model) -> Self {
            Self {
                id: c.id,
                team_id: c.team_id,
                uid: c.uid,
                kind: c.kind,
                name: c.name,
                config: c.config,
                secrets: c.secrets,
                suspended: c.suspended,
                created_at: c.created_at,
                updated_at: c.updated_at,
                default_installation_id: c.default_installation_id,
            }
        }
    }

    impl From<Model> for super::connector::Model {
        fn from(c: Model) -> Self {
            Self {
                id: c.id,
                team_id: c.team_id,
                uid: c.uid,
                kind: c.kind,
                name: c.name,
                config: c.config,
                secrets: c.secrets,
                suspended: c.suspended,
                created_at: c.created_at,
                updated_at: c.updated_at,
                default_installation_id: c.default_installation_id,
            }
        }
    }
}

/// A refresh token a deleted connector held, until a broker has revoked it at the provider.
pub mod departed_revocation {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "departed_revocations")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub connector_id: String,
        /// JSON `{ sealed, fingerprint }`, sealed as it was while the connector lived.
        pub refresh_token: String,
        pub sealing_name: String,
        pub claimed_until: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// What a person of an operator issuer may do in a team (see the migration).
pub mod role_binding {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "role_bindings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub team_id: String,
        pub issuer: String,
        /// Empty for a binding by group.
        pub subject: String,
        /// Empty for a binding by subject.
        pub group_name: String,
        pub role: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Where the kept audit chain starts once retention deleted its beginning: the last deleted
/// event's id and hash (one row, id 1).
pub mod audit_chain {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_chain")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub after_id: i64,
        pub hash: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod environment {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "environments")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub team_id: String,
        pub project_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub slug: String,
        pub name: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod signing_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "signing_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub kid: String,
        pub alg: String,
        /// PKCS#8, sealed under the master key (bound to the kid).
        pub private_key: String,
        /// The public key as a JWK (JSON).
        pub public_jwk: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
