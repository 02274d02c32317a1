//! What each fuzz target checks, as plain functions: the libFuzzer targets call them, and the
//! product's stable tests replay every kept crash and seed through the same functions
//! (`tests/e2e/fuzz_regressions.rs`), so a fixed crash stays fixed without nightly.
//!
//! Every function must return for any input without panicking; the assertions in them are the
//! properties the fuzzer looks for violations of.

use std::{collections::BTreeMap, sync::LazyLock};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use connect_oidc::{jws, keys::PreparedKey};
use connect_proto::registry::v1 as pb;
use link_registry::{
    crypto::{SecretAad, SecretCipher},
    domain::{
        page::{AuditKey, GrantPageKey, InstallationKey, IssuanceKey, LinkKey, PageRequest},
        types::{
            ConfigMap, ConnectorId, ConnectorRef, ConnectorUid, Environment, EnvironmentSet,
            IssuerUrl, ProjectId, ProjectName, SecretInput, TeamId,
        },
    },
};
use openidconnect::{JsonWebKey, core::CoreJwsSigningAlgorithm};
use prost::Message;
use secrecy::{ExposeSecret, SecretString};

/// `jws_parse`: any text through the strict compact-JWS parser.
pub fn jws_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = jws::parse::<serde_json::Value>(text) {
        // What parses is three segments whose claims are a JSON object.
        assert_eq!(token.raw.split('.').count(), 3);
        assert!(token.claims.is_object());
        assert!(!token.header.kid.is_empty());
    }
    let _ = jws::parse::<BTreeMap<String, serde_json::Value>>(text);
}

/// A valid ES256 token and the key that verifies it, made once.
struct Signed {
    token: String,
    key: PreparedKey,
}

static SIGNED: LazyLock<Signed> = LazyLock::new(|| {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let public = pair.public_key().as_ref();
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
    });
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(
        br#"{"iss":"https://oidc.example.test","sub":"owner:acme:project:web:environment:production","aud":"https://vercel.com/acme","exp":4102444800,"iat":1700000000,"owner_id":"team_acme","project_id":"prj_web","environment":"production"}"#,
    );
    let input = format!("{header}.{claims}");
    let signature = pair.sign(&rng, input.as_bytes()).unwrap();
    Signed {
        token: format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref())),
        key: PreparedKey::from_jwk(jwk).unwrap(),
    }
});

/// Whether `token` parses and its signature verifies under the fixture's key.
fn verifies(token: &str) -> bool {
    let Ok(parsed) = jws::parse::<serde_json::Value>(token) else {
        return false;
    };
    let Some((input, signature)) = parsed.raw.rsplit_once('.') else {
        return false;
    };
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
        return false;
    };
    let alg = match parsed.header.alg {
        jws::Alg::Es256 => CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        jws::Alg::Rs256 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    };
    SIGNED
        .key
        .verify_signature(&alg, input.as_bytes(), &signature)
        .is_ok()
}

/// `verify_mutated`: the fixture token with bytes changed (pairs of position and XOR mask),
/// some removed or appended, never verifies unless it is the original text.
pub fn verify_mutated(data: &[u8]) {
    assert!(verifies(&SIGNED.token), "the fixture verifies");
    let mut bytes = SIGNED.token.as_bytes().to_vec();
    let (edits, tail) = data.split_at(data.len() - data.len() % 3);
    for edit in edits.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([edit[0], edit[1]]));
        match edit[2] {
            0 if !bytes.is_empty() => {
                bytes.remove(at % bytes.len());
            }
            mask if !bytes.is_empty() => {
                let i = at % bytes.len();
                bytes[i] ^= mask;
            }
            _ => {}
        }
    }
    bytes.extend_from_slice(tail);
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return;
    };
    if text != SIGNED.token {
        assert!(!verifies(text), "a changed token verified: {text}");
    }
}

/// `jwks_json`: any JSON document as a JWKS; every key parses or is refused, and garbage never
/// verifies under a parsed key.
pub fn jwks_json(data: &[u8]) {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let keys = match doc.get("keys") {
        Some(serde_json::Value::Array(keys)) => keys.clone(),
        _ => vec![doc],
    };
    for value in keys {
        if let Ok(key) = PreparedKey::from_jwk(value) {
            let _ = key.kid();
            for alg in [
                CoreJwsSigningAlgorithm::EcdsaP256Sha256,
                CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
                CoreJwsSigningAlgorithm::HmacSha256,
            ] {
                assert!(
                    key.verify_signature(&alg, b"message", data).is_err(),
                    "the document verified as its own signature"
                );
            }
        }
    }
}

/// `registry_inputs`: identifiers, environments, config and secret maps and page tokens as the
/// registry parses them; what parses prints back as itself.
pub fn registry_inputs(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{1f}');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    if let Ok(uid) = ConnectorUid::parse(first) {
        assert_eq!(uid.to_string(), first);
    }
    if let Ok(id) = ConnectorId::parse(first) {
        assert_eq!(id.to_string(), first);
    }
    if let Ok(id) = ProjectId::parse(first) {
        assert_eq!(id.to_string(), first);
    }
    if let Ok(team) = TeamId::parse(first) {
        assert_eq!(team.to_string(), first);
    }
    let _ = ProjectName::parse(first);
    let _ = IssuerUrl::parse(first);
    match ConnectorRef::parse(first) {
        Ok(ConnectorRef::Id(id)) => assert_eq!(id.to_string(), first),
        Ok(ConnectorRef::Uid(uid)) => assert_eq!(uid.to_string(), first),
        Err(_) => {}
    }
    if let Ok(env) = Environment::parse(first) {
        assert_eq!(env.as_str(), first);
    }
    if let Ok(set) = EnvironmentSet::parse(&rest) {
        // A set holds each environment it was given, and nothing else.
        for env in set.iter() {
            assert!(rest.contains(&env.as_str()));
        }
    }
    let pairs: Vec<(String, String)> = rest
        .chunks(2)
        .map(|c| {
            (
                c[0].to_owned(),
                c.get(1).copied().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let map: BTreeMap<String, String> = pairs.iter().cloned().collect();
    if let Ok(config) = ConfigMap::parse(&map) {
        assert_eq!(config.as_map(), &map);
    }
    let _ = SecretInput::parse(pairs);
    let _ = PageRequest::<ProjectId>::parse_token(first);
    let _ = PageRequest::<ConnectorId>::parse_token(first);
    let _ = PageRequest::<LinkKey>::parse_token(first);
    let _ = PageRequest::<AuditKey>::parse_token(first);
    let _ = PageRequest::<IssuanceKey>::parse_token(first);
    let _ = PageRequest::<InstallationKey>::parse_token(first);
    let _ = PageRequest::<GrantPageKey>::parse_token(first);
}

static CIPHER: LazyLock<SecretCipher> = LazyLock::new(|| SecretCipher::from_key(&[7; 32]));

/// `secret_open`: any text opened as a sealed secret fails cleanly; a value sealed and opened
/// comes back, and sealed under one binding opens under no other.
pub fn secret_open(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let aad = SecretAad {
        team_id: "team_acme",
        connector_id: "conn_000000000000000000000000",
        name: "api_key",
        destination: "",
    };
    if let Ok(opened) = CIPHER.open(&aad, &text) {
        // Only what was sealed opens: the fuzzer cannot forge AES-GCM.
        panic!(
            "opened a value nobody sealed: {}",
            opened.expose_secret().len()
        );
    }
    let secret = SecretString::from(text.to_string());
    let sealed = CIPHER.seal(&aad, &secret);
    assert_eq!(
        CIPHER.open(&aad, &sealed).unwrap().expose_secret(),
        text.as_ref()
    );
    let other = SecretAad {
        name: "client_secret",
        ..aad
    };
    assert!(CIPHER.open(&other, &sealed).is_err());
}

/// `proto_requests`: bytes decoded as one of the admin and runtime requests (chosen by the first
/// byte), then converted into the registry's domain types, never panic.
pub fn proto_requests(data: &[u8]) {
    use link_registry::grpc::convert as c;
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    macro_rules! convert {
        (by_ref $message:ty, $domain:ty) => {
            if let Ok(request) = <$message>::decode(bytes) {
                let _ = <$domain>::try_from(&request);
            }
        };
        ($message:ty, $domain:ty) => {
            if let Ok(request) = <$message>::decode(bytes) {
                let _ = <$domain>::try_from(request);
            }
        };
    }
    match which % 12 {
        0 => convert!(
            pb::CreateConnectorRequest,
            link_registry::domain::service::NewConnector
        ),
        1 => convert!(pb::UpdateConnectorRequest, c::ConnectorEdit),
        2 => convert!(pb::AttachProjectRequest, c::Attachment),
        3 => convert!(by_ref pb::DetachProjectRequest, c::LinkRefs),
        4 => convert!(pb::CreateInstallationRequest, c::InstallationRequest),
        5 => convert!(pb::ImportGrantsRequest, c::GrantImport),
        6 => convert!(pb::ListGrantsRequest, c::GrantQuery),
        7 => convert!(pb::RevokeTokensRequest, c::TokenRevocation),
        8 => convert!(by_ref pb::ListIssuancesRequest, c::IssuanceQuery),
        9 => convert!(
            by_ref pb::ListAuditEventsRequest,
            link_registry::domain::store::AuditFilter
        ),
        10 => convert!(
            pb::RecordIssuanceRequest,
            link_registry::domain::service::NewIssuance
        ),
        _ => convert!(
            pb::CreateRoleBindingRequest,
            link_registry::domain::service::NewRoleBinding
        ),
    }
}
