//! Connect as an OIDC issuer: a broker publishes the registry's signing keys (discovery and JWKS
//! over HTTP, with cache headers), a token it signs verifies through what it publishes, and a
//! rotation is published before it signs while the old key stays published.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::Stack;

async fn get(url: &str) -> (reqwest::header::HeaderMap, Value) {
    let answer = reqwest::get(url).await.unwrap().error_for_status().unwrap();
    let headers = answer.headers().clone();
    (
        headers,
        serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap(),
    )
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Verifies `token` as a relying party would: the kid's key from the JWKS the discovery names.
async fn verify(issuer: &str, token: &str) -> Value {
    let (_, discovery) = get(&format!("{issuer}/.well-known/openid-configuration")).await;
    assert_eq!(discovery["issuer"], issuer);
    let (_, jwks) = get(discovery["jwks_uri"].as_str().unwrap()).await;
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let jwk = jwks.find(&kid).expect("the signing key is published");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&["sts.amazonaws.com"]);
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap()
    .claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_publishes_its_signing_keys_and_what_it_signs_verifies_through_them() {
    let stack = Stack::start().await;
    let registry = stack.local().registry().clone();
    let first = registry.rotate_signing_key().await.unwrap();
    let broker = stack
        .second_broker(|c| {
            c.issuer_listen = Some("127.0.0.1:0".parse().unwrap());
            c.signing_key_publish_delay = Duration::from_secs(2);
            c.signing_keys_refresh = Duration::from_millis(100);
        })
        .await;
    let issuer = format!("http://{}", broker.issuer_addr.unwrap());
    let ring = broker.key_ring.clone().unwrap();

    let (headers, discovery) = get(&format!("{issuer}/.well-known/openid-configuration")).await;
    assert_eq!(discovery["issuer"], issuer.as_str());
    assert_eq!(
        discovery["jwks_uri"],
        format!("{issuer}/.well-known/jwks.json").as_str()
    );
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
    assert!(
        headers["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("public")
    );
    let mut published = Vec::new();
    for _ in 0..100 {
        let (headers, jwks) = get(&format!("{issuer}/.well-known/jwks.json")).await;
        assert_eq!(headers["cache-control"], "public, max-age=300");
        published = kids(&jwks);
        if !published.is_empty() {
            // Public halves only.
            assert!(jwks["keys"][0].get("d").is_none(), "{jwks}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(published, std::slice::from_ref(&first.kid));

    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": issuer, "sub": "owner:acme:project:web:environment:preview",
        "aud": "sts.amazonaws.com", "iat": now, "exp": now + 300,
    });
    let token = ring.sign(&claims).unwrap();
    assert_eq!(verify(&issuer, &token).await["sub"], claims["sub"]);
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(),
        Some(first.kid.as_str())
    );

    // A new key: published at once, signing only after the delay; the old one stays published.
    let second = registry.rotate_signing_key().await.unwrap();
    let mut both = false;
    for _ in 0..100 {
        let (_, jwks) = get(&format!("{issuer}/.well-known/jwks.json")).await;
        if kids(&jwks) == [first.kid.clone(), second.kid.clone()] {
            both = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(both, "the new key is published");
    let before = ring.sign(&claims).unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&before).unwrap().kid.as_deref(),
        Some(first.kid.as_str()),
        "not signed with a key verifiers may not have yet"
    );
    let left = (second.created_at + chrono::Duration::seconds(2) - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(100)).await;
    let after = ring.sign(&claims).unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&after).unwrap().kid.as_deref(),
        Some(second.kid.as_str())
    );
    // Both verify: the token signed before the rotation is still good until it expires.
    verify(&issuer, &before).await;
    verify(&issuer, &after).await;
    broker.stop().await;
    stack.stop().await;
}
