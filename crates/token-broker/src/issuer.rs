//! Connect as an OIDC issuer: the broker publishes the registry's signing keys (discovery and
//! JWKS on `--issuer-listen`) and signs the tokens Connect mints with them, for providers that
//! trust federated OIDC tokens instead of stored secrets.
//!
//! Keys come from the registry (`GetSigningKeys`, fetched every `--signing-keys-refresh`). A key is
//! published as soon as it is fetched, used for signing once it is older than the publish delay
//! (so verifiers that cached the JWKS before it existed have refetched it by then), and published
//! until the tokens it signed have expired: [`MAX_MINTED_LIFETIME`] after a newer key took over.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::{Json, Router, extract::State, http::header, response::IntoResponse, routing::get};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::error::{BrokerError, Result};

/// The longest a token Connect mints lives.
pub const MAX_MINTED_LIFETIME: Duration = Duration::from_secs(300);

/// How long verifiers may cache the JWKS (`Cache-Control: max-age`); the publish delay must be
/// longer than this plus the refresh interval.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);

/// One key, ready to sign: parsed once, its JWS header encoded once.
struct RingKey {
    kid: String,
    created_at: DateTime<Utc>,
    pair: ring::signature::EcdsaKeyPair,
    /// base64url of `{"alg":"ES256","kid":…,"typ":"JWT"}`.
    header: String,
    jwk: Value,
}

/// A key as the registry answers it (`Debug` shows no private key).
#[derive(Debug)]
pub struct KeyMaterial {
    pub kid: String,
    pub alg: String,
    /// PKCS#8 (DER).
    pub pkcs8: secrecy::SecretSlice<u8>,
    pub public_jwk: Value,
    pub created_at: DateTime<Utc>,
}

/// The signing keys a broker holds.
pub struct KeyRing {
    keys: RwLock<Arc<Vec<Arc<RingKey>>>>,
    publish_delay: Duration,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.snapshot();
        f.debug_struct("KeyRing")
            .field("kids", &keys.iter().map(|k| &k.kid).collect::<Vec<_>>())
            .field("publish_delay", &self.publish_delay)
            .finish()
    }
}

impl KeyRing {
    pub fn new(publish_delay: Duration) -> Self {
        Self {
            keys: RwLock::new(Arc::new(Vec::new())),
            publish_delay,
        }
    }

    fn snapshot(&self) -> Arc<Vec<Arc<RingKey>>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the keys with `keys` (any order); a key of another algorithm, or one that does not
    /// parse, is left out and logged.
    pub fn replace(&self, keys: Vec<KeyMaterial>) {
        use base64::Engine;
        use secrecy::ExposeSecret;
        let mut ring: Vec<Arc<RingKey>> = keys
            .into_iter()
            .filter_map(|k| {
                if k.alg != "ES256" {
                    tracing::warn!(kid = %k.kid, alg = %k.alg, "a signing key of an algorithm this broker does not sign with: left out");
                    return None;
                }
                let pair = match ring::signature::EcdsaKeyPair::from_pkcs8(
                    &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    k.pkcs8.expose_secret(),
                    &ring::rand::SystemRandom::new(),
                ) {
                    Ok(pair) => pair,
                    Err(_) => {
                        tracing::warn!(kid = %k.kid, "a signing key that does not parse as a P-256 PKCS#8 key: left out");
                        return None;
                    }
                };
                let header = json!({ "alg": "ES256", "kid": k.kid, "typ": "JWT" });
                Some(Arc::new(RingKey {
                    header: base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(header.to_string()),
                    pair,
                    kid: k.kid,
                    created_at: k.created_at,
                    jwk: k.public_jwk,
                }))
            })
            .collect();
        ring.sort_by_key(|k| k.created_at);
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
    }

    /// When each key took over signing: its creation plus the publish delay, except the oldest,
    /// which signs from its creation when nothing older can.
    fn active_from(&self, index: usize, key: &RingKey) -> DateTime<Utc> {
        if index == 0 {
            key.created_at
        } else {
            key.created_at
                + chrono::Duration::from_std(self.publish_delay).unwrap_or(chrono::Duration::MAX)
        }
    }

    /// The key that signs at `now`: the newest that has taken over.
    fn signing_key(&self, keys: &[Arc<RingKey>], now: DateTime<Utc>) -> Option<Arc<RingKey>> {
        keys.iter()
            .enumerate()
            .filter(|(i, k)| self.active_from(*i, k) <= now)
            .map(|(_, k)| k.clone())
            .next_back()
    }

    /// The kid that signs at `now`, if any key does.
    pub fn signing_kid(&self, now: DateTime<Utc>) -> Option<String> {
        self.signing_key(&self.snapshot(), now)
            .map(|k| k.kid.clone())
    }

    /// The JWKS at `now`: every key except those a newer key replaced more than
    /// [`MAX_MINTED_LIFETIME`] ago.
    pub fn jwks(&self, now: DateTime<Utc>) -> Value {
        let keys = self.snapshot();
        let lifetime = chrono::Duration::from_std(MAX_MINTED_LIFETIME).unwrap_or_default();
        let published: Vec<&Value> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                !keys
                    .iter()
                    .enumerate()
                    .skip(i + 1)
                    .any(|(j, newer)| self.active_from(j, newer) + lifetime <= now)
            })
            .map(|(_, k)| &k.jwk)
            .collect();
        json!({ "keys": published })
    }

    /// Signs `claims` (the caller sets every claim, `exp` at most [`MAX_MINTED_LIFETIME`] away)
    /// with the key that signs now: a JWS compact serialization (RFC 7515), ES256 by `ring`,
    /// whose fixed-size signature is the `r ‖ s` JWS asks for (RFC 7518 §3.4).
    pub fn sign(&self, claims: &Value) -> Result<String> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let key = self
            .signing_key(&self.snapshot(), Utc::now())
            .ok_or_else(|| {
                BrokerError::NoValidToken(
                    "Connect has no signing key yet: add one with `link-registry signing-keys rotate`"
                        .into(),
                )
            })?;
        let payload = serde_json::to_vec(claims).map_err(|e| BrokerError::Internal {
            context: "encoding a token's claims",
            source: Box::new(e),
        })?;
        let mut token = String::with_capacity(key.header.len() + payload.len() * 4 / 3 + 100);
        token.push_str(&key.header);
        token.push('.');
        b64.encode_string(&payload, &mut token);
        let signature = key
            .pair
            .sign(&ring::rand::SystemRandom::new(), token.as_bytes())
            .map_err(|_| BrokerError::Internal {
                context: "signing a token",
                source: "ECDSA signing failed".into(),
            })?;
        token.push('.');
        b64.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }
}

/// What a token Connect mints says of whom it is for: everything but its times and `jti`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MintedFor {
    pub iss: String,
    /// `owner:<team slug>:project:<project name>:environment:<env>`.
    pub sub: String,
    pub aud: String,
    pub owner_id: String,
    pub project_id: String,
    pub environment: String,
    pub connector_id: String,
}

impl MintedFor {
    /// For `identity`'s deployment and the connector of `authorization`, for `audience`; the
    /// team's slug and the project's name as the registry knows them (a project renamed changes
    /// the `sub`; the id claims stay).
    pub fn new(
        issuer: &str,
        identity: &crate::auth::Identity,
        authorization: &crate::registry::Authorization,
        audience: &str,
    ) -> Self {
        Self {
            iss: issuer.trim_end_matches('/').to_owned(),
            sub: format!(
                "owner:{}:project:{}:environment:{}",
                authorization.owner_slug, authorization.project_name, identity.environment
            ),
            aud: audience.to_owned(),
            owner_id: identity.owner_id.to_string(),
            project_id: identity.project_id.to_string(),
            environment: identity.environment.to_string(),
            connector_id: authorization.connector_id.clone(),
        }
    }

    /// The claims of a token issued now, living `lifetime` (at most [`MAX_MINTED_LIFETIME`]),
    /// with a random `jti`.
    pub fn claims(&self, lifetime: Duration) -> Value {
        let now = Utc::now().timestamp();
        let lifetime = lifetime.min(MAX_MINTED_LIFETIME).as_secs() as i64;
        let jti: [u8; 16] = rand::random();
        let mut claims = serde_json::to_value(self).unwrap_or_else(|_| json!({}));
        if let Some(map) = claims.as_object_mut() {
            map.insert("iat".into(), now.into());
            map.insert("nbf".into(), now.into());
            map.insert("exp".into(), (now + lifetime).into());
            map.insert("jti".into(), hex::encode(jti).into());
        }
        claims
    }
}

/// Mints tokens: the issuer URL they name and the keys that sign them.
#[derive(Clone, Debug)]
pub struct Minter {
    pub url: String,
    pub ring: Arc<KeyRing>,
}

impl Minter {
    /// A token for `whom`, signed now, living [`MAX_MINTED_LIFETIME`].
    pub fn mint(&self, whom: &MintedFor) -> Result<String> {
        self.ring.sign(&whom.claims(MAX_MINTED_LIFETIME))
    }
}

/// What the issuer endpoints serve.
#[derive(Clone, Debug)]
pub struct Issuer {
    pub url: url::Url,
    pub ring: Arc<KeyRing>,
}

impl Issuer {
    fn base(&self) -> String {
        self.url.as_str().trim_end_matches('/').to_owned()
    }

    /// `/.well-known/openid-configuration` and `/.well-known/jwks.json`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/.well-known/jwks.json", get(jwks))
            .with_state(self)
    }
}

async fn discovery(State(issuer): State<Issuer>) -> impl IntoResponse {
    let base = issuer.base();
    (
        [(header::CACHE_CONTROL, "public, max-age=3600")],
        Json(json!({
            "issuer": base,
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "claims_supported": [
                "iss", "sub", "aud", "exp", "iat", "nbf", "jti",
                "owner_id", "project_id", "environment", "connector_id"
            ],
        })),
    )
}

async fn jwks(State(issuer): State<Issuer>) -> impl IntoResponse {
    (
        [(
            header::CACHE_CONTROL,
            format!("public, max-age={}", JWKS_MAX_AGE.as_secs()),
        )],
        Json(issuer.ring.jwks(Utc::now())),
    )
}

/// Fetches the keys from the registry now and every `every` (a failure keeps the keys held and
/// is logged).
pub fn spawn_refresher(
    registry: Arc<crate::registry::RegistryClient>,
    ring: Arc<KeyRing>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match registry.signing_keys().await {
                Ok(keys) => {
                    let parsed = keys
                        .into_iter()
                        .filter_map(|k| {
                            let jwk = serde_json::from_str(&k.public_jwk).ok()?;
                            let created_at = k.create_time.and_then(|t| {
                                DateTime::from_timestamp(t.seconds, t.nanos as u32)
                            })?;
                            Some(KeyMaterial {
                                pkcs8: k.private_key.into(),
                                kid: k.kid,
                                alg: k.alg,
                                public_jwk: jwk,
                                created_at,
                            })
                        })
                        .collect();
                    ring.replace(parsed);
                }
                Err(e) => {
                    tracing::warn!(error = %connect_runtime::ErrorChain(&e), "fetching the signing keys failed; keeping the ones held");
                }
            }
            tokio::time::sleep(every).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material(created_at: DateTime<Utc>) -> KeyMaterial {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        let kid = format!("k{}", created_at.timestamp());
        KeyMaterial {
            public_jwk: json!({ "kid": kid }),
            kid,
            alg: "ES256".into(),
            pkcs8: pkcs8.as_ref().to_vec().into(),
            created_at,
        }
    }

    fn kids(jwks: &Value) -> Vec<String> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn minted_claims_name_the_deployment_and_never_live_past_five_minutes() {
        let identity = crate::auth::Identity {
            issuer: connect_types::IssuerUrl::parse("https://oidc.vercel.com/acme").unwrap(),
            owner_id: connect_types::TeamId::parse("team_acme").unwrap(),
            project_id: connect_types::ProjectId::parse("prj_web").unwrap(),
            environment: connect_types::Environment::parse("staging").unwrap(),
        };
        let authorization = crate::registry::Authorization {
            connector_id: "conn_0123456789abcdefghijklmn".into(),
            connector_uid: "aws/prod".into(),
            connector_type: "aws".into(),
            config: Default::default(),
            secrets: Default::default(),
            installation: None,
            link_expires_at: None,
            ceilings: Default::default(),
            owner_slug: "acme".into(),
            project_name: "web".into(),
        };
        let claims = MintedFor::new(
            "https://connect.example.com/",
            &identity,
            &authorization,
            "sts.amazonaws.com",
        )
        .claims(Duration::from_secs(3600));
        assert_eq!(claims["iss"], "https://connect.example.com");
        assert_eq!(claims["sub"], "owner:acme:project:web:environment:staging");
        assert_eq!(claims["aud"], "sts.amazonaws.com");
        assert_eq!(claims["owner_id"], "team_acme");
        assert_eq!(claims["project_id"], "prj_web");
        assert_eq!(claims["environment"], "staging");
        assert_eq!(claims["connector_id"], "conn_0123456789abcdefghijklmn");
        let (iat, exp) = (
            claims["iat"].as_i64().unwrap(),
            claims["exp"].as_i64().unwrap(),
        );
        assert_eq!(exp - iat, 300);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
        let other = MintedFor::new(
            "https://connect.example.com",
            &identity,
            &authorization,
            "a",
        )
        .claims(Duration::from_secs(60));
        assert_ne!(other["jti"], claims["jti"]);
        assert_eq!(
            other["exp"].as_i64().unwrap() - other["iat"].as_i64().unwrap(),
            60
        );
    }

    #[test]
    fn what_it_signs_verifies_with_an_independent_jose_library() {
        use base64::Engine;
        use ring::signature::KeyPair;
        let t0 = Utc::now() - chrono::Duration::hours(1);
        let key = material(t0);
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            secrecy::ExposeSecret::expose_secret(&key.pkcs8),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let (x, y) = (b64(&point[1..33]), b64(&point[33..65]));
        let kid = key.kid.clone();
        let ring = KeyRing::new(Duration::from_secs(600));
        ring.replace(vec![key]);
        let claims = json!({ "iss": "https://connect.example", "sub": "s", "aud": "a",
            "exp": Utc::now().timestamp() + 300, "n": "ü" });
        let token = ring.sign(&claims).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
        assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&["a"]);
        let decoded = jsonwebtoken::decode::<Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_ec_components(&x, &y).unwrap(),
            &validation,
        )
        .unwrap();
        assert_eq!(decoded.claims, claims);
        // A flipped signature byte does not verify.
        let mut bad = token.clone().into_bytes();
        let last = bad.len() - 2;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        assert!(
            jsonwebtoken::decode::<Value>(
                std::str::from_utf8(&bad).unwrap(),
                &jsonwebtoken::DecodingKey::from_ec_components(&x, &y).unwrap(),
                &validation,
            )
            .is_err()
        );
    }

    #[test]
    fn a_new_key_is_published_at_once_signs_after_the_delay_and_the_old_one_stays_until_its_tokens_expire()
     {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let ring = KeyRing::new(Duration::from_secs(600));
        assert_eq!(ring.signing_kid(t0), None);
        assert!(ring.sign(&json!({})).is_err());
        ring.replace(vec![material(t0)]);
        // The first key signs from its creation: nothing older could.
        assert_eq!(ring.signing_kid(t0).as_deref(), Some("k1800000000"));
        let t1 = t0 + chrono::Duration::hours(1);
        ring.replace(vec![material(t1), material(t0)]);
        let at = |s| t1 + chrono::Duration::seconds(s);
        assert_eq!(kids(&ring.jwks(at(0))), ["k1800000000", "k1800003600"]);
        assert_eq!(ring.signing_kid(at(599)).as_deref(), Some("k1800000000"));
        assert_eq!(ring.signing_kid(at(600)).as_deref(), Some("k1800003600"));
        // Published until the last token the old key signed has expired.
        assert_eq!(kids(&ring.jwks(at(899))).len(), 2);
        assert_eq!(kids(&ring.jwks(at(900))), ["k1800003600"]);
        // A key of another algorithm is not taken.
        let mut other = material(t1 + chrono::Duration::hours(1));
        other.alg = "RS256".into();
        ring.replace(vec![material(t0), other]);
        assert_eq!(kids(&ring.jwks(at(0))), ["k1800000000"]);
        assert!(format!("{ring:?}").contains("k1800000000"));
    }
}
