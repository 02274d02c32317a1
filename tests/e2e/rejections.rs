//! One test per way a bearer token is refused. Each asserts the code, the `ErrorInfo` reason and
//! the documented message prefix, and that no token left the broker.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use connect_proto::broker::v1 as bpb;
use dev_issuer::Alg;
use serde_json::{Value, json};
use tonic::Code;

use crate::harness::{Stack, assert_denied};

/// Valid claims of Acme's `prj_web` in `preview`.
fn claims(stack: &Stack) -> Value {
    stack.acme.issuer.claims(
        &stack.acme.deployment("prj_web", "web", "preview"),
        Duration::from_secs(600),
    )
}

fn header(stack: &Stack, alg: Alg) -> Value {
    let name = match alg {
        Alg::RS256 => "RS256",
        Alg::ES256 => "ES256",
    };
    json!({ "alg": name, "typ": "JWT", "kid": stack.acme.issuer.kid(alg) })
}

fn sign(stack: &Stack, header: Value, claims: Value) -> String {
    let alg = if header["alg"] == "ES256" {
        Alg::ES256
    } else {
        Alg::RS256
    };
    stack.acme.issuer.sign(&header, &claims, alg)
}

fn with_header(stack: &Stack, member: &str, value: Value) -> String {
    let mut h = header(stack, Alg::RS256);
    h[member] = value;
    sign(stack, h, claims(stack))
}

fn with_claim(stack: &Stack, claim: &str, value: Value) -> String {
    let mut c = claims(stack);
    c[claim] = value;
    sign(stack, header(stack, Alg::RS256), c)
}

fn without_claim(stack: &Stack, claim: &str) -> String {
    let mut c = claims(stack);
    c.as_object_mut().unwrap().remove(claim);
    sign(stack, header(stack, Alg::RS256), c)
}

/// Signs claims whose JSON text has `claim` twice.
fn duplicated_claim(stack: &Stack, claim: &str, second: &str) -> String {
    let text = claims(stack).to_string();
    let duplicated = format!("{},\"{claim}\":{second}}}", &text[..text.len() - 1]);
    let header = header(stack, Alg::RS256).to_string();
    stack
        .acme
        .issuer
        .sign_text(&header, &duplicated, Alg::RS256)
}

async fn refused(stack: &Stack, token: &str, reason: &str) {
    let prefix = match reason {
        "INVALID_TOKEN" => "InvalidTokenError",
        "TOKEN_EXPIRED" => "TokenExpiredError",
        "TOKEN_NOT_YET_VALID" => "TokenNotYetValidError",
        "ISSUER_NOT_TRUSTED" => "IssuerNotTrustedError",
        other => panic!("unexpected reason {other}"),
    };
    assert_denied(
        stack.get_token(token, "api-key/stripe").await,
        Code::Unauthenticated,
        reason,
        prefix,
    );
}

macro_rules! refused {
    ($($name:ident: |$stack:ident| $token:expr => $reason:literal;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let $stack = Stack::start().await;
                let token: String = $token;
                refused(&$stack, &token, $reason).await;
                // The same stack still serves a good token: the refusal was about this token.
                let good = $stack.acme.token("prj_web", "preview");
                assert!($stack.get_token(&good, "api-key/stripe").await.is_ok());
                $stack.stop().await;
            }
        )*
    };
}

refused! {
    a_token_over_8_kib_is_refused: |s| {
        let mut c = claims(&s);
        c["padding"] = json!("x".repeat(9000));
        sign(&s, header(&s, Alg::RS256), c)
    } => "INVALID_TOKEN";
    a_token_of_two_segments_is_refused: |s| {
        let t = s.acme.token("prj_web", "preview");
        t.rsplit_once('.').unwrap().0.to_owned()
    } => "INVALID_TOKEN";
    a_token_of_four_segments_is_refused: |s| format!("{}.x", s.acme.token("prj_web", "preview")) => "INVALID_TOKEN";
    a_token_with_padding_is_refused: |s| {
        let t = s.acme.token("prj_web", "preview");
        let (h, rest) = t.split_once('.').unwrap();
        format!("{h}==.{rest}")
    } => "INVALID_TOKEN";
    garbage_is_refused: |_s| "not-a-jwt".to_owned() => "INVALID_TOKEN";
    alg_none_is_refused: |s| {
        let c = claims(&s);
        format!("{}.{}.", URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": s.acme.issuer.kid(Alg::RS256)}).to_string()), URL_SAFE_NO_PAD.encode(c.to_string()))
    } => "INVALID_TOKEN";
    alg_hs256_is_refused: |s| with_header(&s, "alg", json!("HS256")) => "INVALID_TOKEN";
    an_alg_the_key_is_not_for_is_refused: |s| {
        // ES256 in the header, naming the RSA key.
        let mut h = header(&s, Alg::ES256);
        h["kid"] = json!(s.acme.issuer.kid(Alg::RS256));
        sign(&s, h, claims(&s))
    } => "INVALID_TOKEN";
    a_crit_header_is_refused: |s| with_header(&s, "crit", json!(["exp"])) => "INVALID_TOKEN";
    a_jku_header_is_refused: |s| with_header(&s, "jku", json!("https://attacker.example/jwks")) => "INVALID_TOKEN";
    a_jwk_header_is_refused: |s| with_header(&s, "jwk", json!({"kty": "RSA"})) => "INVALID_TOKEN";
    an_x5u_header_is_refused: |s| with_header(&s, "x5u", json!("https://attacker.example/cert")) => "INVALID_TOKEN";
    an_x5c_header_is_refused: |s| with_header(&s, "x5c", json!(["MIIB"])) => "INVALID_TOKEN";
    a_cty_header_is_refused: |s| with_header(&s, "cty", json!("JWT")) => "INVALID_TOKEN";
    a_missing_kid_is_refused: |s| {
        let mut h = header(&s, Alg::RS256);
        h.as_object_mut().unwrap().remove("kid");
        sign(&s, h, claims(&s))
    } => "INVALID_TOKEN";
    an_unknown_kid_is_refused: |s| with_header(&s, "kid", json!("no-such-key")) => "INVALID_TOKEN";
    a_bad_rsa_signature_is_refused: |s| {
        let t = s.acme.token("prj_web", "preview");
        let (input, sig) = t.rsplit_once('.').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
        bytes[10] ^= 1;
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(bytes))
    } => "INVALID_TOKEN";
    a_signature_over_other_claims_is_refused: |s| {
        let a = s.acme.token("prj_web", "preview");
        let b = s.acme.token("prj_web", "production");
        let (h, _) = a.split_once('.').unwrap();
        let payload = b.split('.').nth(1).unwrap();
        let sig = a.rsplit_once('.').unwrap().1;
        format!("{h}.{payload}.{sig}")
    } => "INVALID_TOKEN";
    an_ecdsa_signature_of_zeros_is_refused: |s| {
        let t = s.acme.token_with("prj_web", "preview", Alg::ES256);
        let (input, _) = t.rsplit_once('.').unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]))
    } => "INVALID_TOKEN";
    a_missing_aud_is_refused: |s| without_claim(&s, "aud") => "INVALID_TOKEN";
    another_audience_is_refused: |s| with_claim(&s, "aud", json!("https://vercel.com/someone-else")) => "INVALID_TOKEN";
    an_expired_token_is_refused: |s| {
        let now = claims(&s)["iat"].as_i64().unwrap();
        let mut c = claims(&s);
        c["iat"] = json!(now - 7200);
        c["nbf"] = json!(now - 7200);
        c["exp"] = json!(now - 3600);
        sign(&s, header(&s, Alg::RS256), c)
    } => "TOKEN_EXPIRED";
    a_token_used_before_nbf_is_refused: |s| {
        let now = claims(&s)["iat"].as_i64().unwrap();
        with_claim(&s, "nbf", json!(now + 600))
    } => "TOKEN_NOT_YET_VALID";
    a_token_issued_in_the_future_is_refused: |s| {
        let now = claims(&s)["iat"].as_i64().unwrap();
        with_claim(&s, "iat", json!(now + 600))
    } => "TOKEN_NOT_YET_VALID";
    a_missing_exp_is_refused: |s| without_claim(&s, "exp") => "INVALID_TOKEN";
    a_missing_nbf_is_refused: |s| without_claim(&s, "nbf") => "INVALID_TOKEN";
    a_missing_iat_is_refused: |s| without_claim(&s, "iat") => "INVALID_TOKEN";
    an_exp_of_the_wrong_type_is_refused: |s| {
        let exp = claims(&s)["exp"].as_i64().unwrap();
        with_claim(&s, "exp", json!(exp.to_string()))
    } => "INVALID_TOKEN";
    an_iat_of_the_wrong_type_is_refused: |s| with_claim(&s, "iat", json!(true)) => "INVALID_TOKEN";
    a_missing_owner_id_is_refused: |s| without_claim(&s, "owner_id") => "INVALID_TOKEN";
    a_missing_project_id_is_refused: |s| without_claim(&s, "project_id") => "INVALID_TOKEN";
    a_missing_environment_is_refused: |s| without_claim(&s, "environment") => "INVALID_TOKEN";
    an_owner_id_that_is_not_a_string_is_refused: |s| with_claim(&s, "owner_id", json!(42)) => "INVALID_TOKEN";
    a_project_id_that_is_not_a_string_is_refused: |s| with_claim(&s, "project_id", json!(["prj_web"])) => "INVALID_TOKEN";
    an_environment_that_is_not_a_string_is_refused: |s| with_claim(&s, "environment", json!({"name": "preview"})) => "INVALID_TOKEN";
    an_unknown_environment_is_refused: |s| with_claim(&s, "environment", json!("staging")) => "INVALID_TOKEN";
    a_duplicated_environment_is_refused: |s| duplicated_claim(&s, "environment", "\"production\"") => "INVALID_TOKEN";
    a_duplicated_owner_id_is_refused: |s| duplicated_claim(&s, "owner_id", "\"team_globex\"") => "INVALID_TOKEN";
    a_duplicated_project_id_is_refused: |s| duplicated_claim(&s, "project_id", "\"prj_docs\"") => "INVALID_TOKEN";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_issuer_is_refused_without_any_request_to_it() {
    let stack = Stack::start().await;
    let stranger = dev_issuer::DevIssuer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let token = stranger.mint(
        &stack.acme.deployment("prj_web", "web", "preview"),
        Duration::from_secs(600),
        Alg::RS256,
    );
    refused(&stack, &token, "ISSUER_NOT_TRUSTED").await;
    assert_eq!(
        (stranger.discovery_fetches(), stranger.jwks_fetches()),
        (0, 0)
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_metadata_must_be_one_bearer_value() {
    let stack = Stack::start().await;
    let token = stack.acme.token("prj_web", "preview");
    let request = || {
        tonic::Request::new(bpb::GetTokenRequest {
            connector: "api-key/stripe".into(),
            ..Default::default()
        })
    };

    let none = request();
    assert_denied(
        stack.broker().get_token(none).await,
        Code::Unauthenticated,
        "INVALID_TOKEN",
        "InvalidTokenError",
    );

    let mut two = request();
    two.metadata_mut()
        .append("authorization", format!("Bearer {token}").parse().unwrap());
    two.metadata_mut()
        .append("authorization", format!("Bearer {token}").parse().unwrap());
    assert_denied(
        stack.broker().get_token(two).await,
        Code::Unauthenticated,
        "INVALID_TOKEN",
        "InvalidTokenError",
    );

    let mut basic = request();
    basic
        .metadata_mut()
        .insert("authorization", format!("Basic {token}").parse().unwrap());
    assert_denied(
        stack.broker().get_token(basic).await,
        Code::Unauthenticated,
        "INVALID_TOKEN",
        "InvalidTokenError",
    );

    let mut ok = request();
    ok.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    assert!(stack.broker().get_token(ok).await.is_ok());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_token_is_refused_before_any_key_fetch() {
    let stack = Stack::start().await;
    let before = stack.acme.issuer.jwks_fetches();
    let huge = format!(
        "{}.{}.{}",
        "a".repeat(5000),
        "b".repeat(5000),
        "c".repeat(10)
    );
    refused(&stack, &huge, "INVALID_TOKEN").await;
    assert_eq!(stack.acme.issuer.jwks_fetches(), before);
    stack.stop().await;
}
