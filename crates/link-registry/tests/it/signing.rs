//! The keys brokers sign Connect's own tokens with: added by `signing-keys rotate`, sealed like
//! secrets, served with their private halves to broker keys only, kept through a master key
//! rotation.

use connect_proto::registry::v1 as pb;
use link_registry::crypto::SecretCipher;
use tonic::Code;

use crate::harness::{Runtime, TestApp, TestDb, assert_error};

crate::on_every_backend!(
    signing_keys_are_sealed_served_to_brokers_only_and_survive_a_master_key_rotation,
);

async fn served(broker: &mut Runtime) -> Vec<pb::SigningKey> {
    broker
        .get_signing_keys(pb::GetSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys
}

/// The key's private half signs what its published public half verifies.
fn assert_pair(key: &pb::SigningKey) {
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(&key.public_jwk).unwrap();
    assert_eq!(jwk.common.key_id.as_deref(), Some(key.kid.as_str()));
    let encoding = jsonwebtoken::EncodingKey::from_ec_der(&key.private_key);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    let claims = serde_json::json!({ "sub": "x", "exp": 4_000_000_000u64 });
    let token = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
    let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap();
}

async fn signing_keys_are_sealed_served_to_brokers_only_and_survive_a_master_key_rotation(
    db: TestDb,
) {
    let app = TestApp::spawn(db).await;
    let mut broker = app.broker();
    assert!(served(&mut broker).await.is_empty());
    let first = app.registry.rotate_signing_key().await.unwrap();
    let second = app.registry.rotate_signing_key().await.unwrap();
    assert_ne!(first.kid, second.kid);
    // RFC 7638 thumbprints: 43 base64url characters of SHA-256.
    assert_eq!(first.kid.len(), 43);
    let keys = served(&mut broker).await;
    let kids: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, [first.kid.as_str(), second.kid.as_str()]);
    for key in &keys {
        assert_eq!(key.alg, "ES256");
        assert_pair(key);
        // Stored sealed: the private half is not in the row as it is.
        let stored = app
            .registry
            .signing_keys()
            .await
            .unwrap()
            .into_iter()
            .find(|k| k.kid == key.kid)
            .unwrap();
        use base64::Engine;
        let plain = base64::engine::general_purpose::STANDARD.encode(&key.private_key);
        assert!(!stored.sealed_private_key.contains(&plain[8..40]));
    }
    // Only brokers of every team get them: a tenant's broker could otherwise sign as Connect
    // for another team.
    assert_error(
        app.runtime(&app.acme.admin)
            .get_signing_keys(pb::GetSigningKeysRequest {})
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    {
        use secrecy::ExposeSecret;
        let (_, limited) = app
            .registry
            .create_expiring_api_key(
                &[link_registry::domain::types::TeamId::parse("team_acme").unwrap()],
                link_registry::domain::model::Role::Broker,
                None,
            )
            .await
            .unwrap();
        assert_error(
            app.runtime(limited.expose_secret())
                .get_signing_keys(pb::GetSigningKeysRequest {})
                .await,
            Code::PermissionDenied,
            "ROLE_NOT_ALLOWED",
        );
    }

    // A master key rotation re-seals them; they open under the new key only.
    let registry = app.registry.clone();
    let new_key = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    std::fs::remove_file(&new_key).unwrap();
    let new = SecretCipher::from_key_file(&new_key, true).unwrap();
    assert_eq!(registry.rotate_master_key(&new).await.unwrap(), 2);
    let db = app.stop().await;
    let mut config = db.serve_config();
    config.secret_key_file = Some(new_key.to_path_buf());
    let app = TestApp::start_with_config(db, config).await;
    use secrecy::ExposeSecret;
    let (_, key) = app
        .registry
        .create_api_key(None, link_registry::domain::model::Role::Broker)
        .await
        .unwrap();
    let again = served(&mut app.runtime(key.expose_secret())).await;
    assert_eq!(again, keys);
}
