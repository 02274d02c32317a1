//! The cheap, offline first half of token verification: the size cap, the strict compact-JWS
//! shape, the header policy, and the typed claims. Nothing here touches the network or a key; a
//! token that fails here costs no more than a base64 decode and a JSON parse.
//!
//! JSON is read strictly: duplicate member names anywhere in the header or the claims reject the
//! token (two parsers disagreeing about which duplicate wins is a classic confusion attack), and
//! every claim must have its JSON type (`exp` a whole number, `owner_id` a string, …).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{
    Deserialize,
    de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor},
};
use serde_json::{Map, Value};

use crate::{OidcError, Result};

/// The largest token accepted, checked before anything is decoded.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Header members that are refused outright: they ask the verifier to fetch keys from, or trust
/// keys embedded by, whoever made the token, or to process extensions or nested content.
const FORBIDDEN_HEADER_MEMBERS: [&str; 6] = ["crit", "jku", "jwk", "x5u", "x5c", "cty"];

/// The signature algorithms accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
}

impl Alg {
    fn parse(value: &str) -> Result<Self> {
        match value {
            "RS256" => Ok(Self::Rs256),
            "ES256" => Ok(Self::Es256),
            "none" => Err(OidcError::invalid_token(
                "unsigned tokens (alg none) are refused",
            )),
            a if a.starts_with("HS") => Err(OidcError::invalid_token(
                "symmetric signatures (HS*) are refused",
            )),
            _ => Err(OidcError::invalid_token("alg is not one of RS256, ES256")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub alg: Alg,
    pub kid: String,
}

/// `aud` may be one string or a list of strings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Self::One(a) => a == audience,
            Self::Many(list) => list.iter().any(|a| a == audience),
        }
    }
}

/// A token whose shape, header and claims (typed as `C`, the service's own claims) passed the
/// offline checks; its signature is unchecked.
#[derive(Clone, Debug)]
pub struct UnverifiedToken<'a, C> {
    pub raw: &'a str,
    pub header: Header,
    pub claims: C,
}

/// Parses a compact JWS without trusting anything in it yet, its claims as `C` (every member
/// with its JSON type, no duplicate anywhere).
pub fn parse<C: serde::de::DeserializeOwned>(raw: &str) -> Result<UnverifiedToken<'_, C>> {
    if raw.len() > MAX_TOKEN_BYTES {
        return Err(OidcError::invalid_token(format!(
            "token is larger than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    let segments: Vec<&str> = raw.split('.').collect();
    let [header, payload, signature] = segments[..] else {
        return Err(OidcError::invalid_token(
            "token is not a compact JWS of three base64url segments",
        ));
    };
    let header = decode_segment(header, "header")?;
    let payload = decode_segment(payload, "payload")?;
    let signature = decode_segment(signature, "signature")?;

    let header = strict_object(&header, "header")?;
    if let Some(member) = FORBIDDEN_HEADER_MEMBERS
        .iter()
        .find(|m| header.contains_key(**m))
    {
        return Err(OidcError::invalid_token(format!(
            "header member '{member}' is refused"
        )));
    }
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => Alg::parse(alg)?,
        _ => return Err(OidcError::invalid_token("header has no alg string")),
    };
    let kid = match header.get("kid") {
        Some(Value::String(kid)) if !kid.is_empty() && kid.len() <= 256 => kid.clone(),
        _ => return Err(OidcError::invalid_token("header has no kid")),
    };
    // After the header policy, so that `alg: none` is named as such.
    if signature.is_empty() {
        return Err(OidcError::invalid_token("token has no signature"));
    }
    // RFC 7519 §5.1: "JWT", or its media type spelled out.
    if let Some(typ) = header.get("typ")
        && !typ.as_str().is_some_and(|t| {
            t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("application/jwt")
        })
    {
        return Err(OidcError::invalid_token("header typ must be JWT"));
    }

    let claims = strict_object(&payload, "claims")?;
    let claims: C = serde_json::from_value(Value::Object(claims))
        .map_err(|e| OidcError::invalid_token(format!("claims: {e}")))?;
    Ok(UnverifiedToken {
        raw,
        header: Header { alg, kid },
        claims,
    })
}

fn decode_segment(segment: &str, what: &str) -> Result<Vec<u8>> {
    if segment.is_empty() && what != "signature" {
        return Err(OidcError::invalid_token(format!("token {what} is empty")));
    }
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| OidcError::invalid_token(format!("token {what} is not base64url")))
}

/// Parses a JSON object, refusing duplicate member names at any depth.
fn strict_object(bytes: &[u8], what: &str) -> Result<Map<String, Value>> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue
        .deserialize(&mut deserializer)
        .and_then(|v| deserializer.end().map(|()| v))
        .map_err(|e| OidcError::invalid_token(format!("{what} is not valid JSON: {e}")))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(OidcError::invalid_token(format!(
            "{what} is not a JSON object"
        ))),
    }
}

/// A `serde_json::Value` seed that errors on duplicate object keys.
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate member '{key}'")));
            }
            let value = map.next_value_seed(StrictValue)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Claims as a service would type them (a deployment token's).
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Claims {
        iss: String,
        sub: String,
        aud: Audience,
        exp: i64,
        iat: i64,
        nbf: i64,
        owner_id: String,
        project_id: String,
        environment: String,
    }

    fn parse(raw: &str) -> Result<UnverifiedToken<'_, Claims>> {
        super::parse(raw)
    }

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    fn token(header: &str, claims: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(claims), b64("sig"))
    }

    const HEADER: &str = r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#;
    const CLAIMS: &str = r#"{"iss":"https://i","sub":"owner:a:project:b:environment:preview","aud":"x","exp":2,"iat":1,"nbf":1,"owner_id":"team_1","project_id":"prj_1","environment":"preview"}"#;

    fn invalid(raw: &str) -> String {
        match parse(raw) {
            Err(OidcError::InvalidToken(why)) => why,
            other => panic!("expected InvalidToken, got {other:?}"),
        }
    }

    #[test]
    fn a_well_formed_token_parses() {
        let raw = token(HEADER, CLAIMS);
        let parsed = parse(&raw).unwrap();
        assert_eq!(
            parsed.header,
            Header {
                alg: Alg::Rs256,
                kid: "k1".into()
            }
        );
        assert_eq!(parsed.claims.owner_id, "team_1");
        assert!(parsed.claims.aud.contains("x"));
    }

    #[test]
    fn shape_violations_are_invalid_tokens() {
        assert!(invalid(&"a".repeat(MAX_TOKEN_BYTES + 1)).contains("larger"));
        assert!(invalid("a.b").contains("three"));
        assert!(invalid("a.b.c.d").contains("three"));
        assert!(
            invalid(&format!("{}=.{}.{}", b64(HEADER), b64(CLAIMS), b64("s")))
                .contains("base64url")
        );
        assert!(invalid(&format!("{}.{}.", b64(HEADER), b64(CLAIMS))).contains("signature"));
        assert!(
            invalid(&format!("{}.{}.{}", b64("[1]"), b64(CLAIMS), b64("s"))).contains("object")
        );
    }

    #[test]
    fn the_header_policy_holds() {
        for (header, expect) in [
            (r#"{"alg":"none","kid":"k"}"#, "alg none"),
            (r#"{"alg":"none"}"#, "alg none"),
            (r#"{"alg":"HS256","kid":"k"}"#, "HS"),
            (r#"{"alg":"PS256","kid":"k"}"#, "RS256, ES256"),
            (r#"{"alg":"RS256"}"#, "kid"),
            (r#"{"alg":"RS256","kid":""}"#, "kid"),
            (r#"{"alg":"RS256","kid":7}"#, "kid"),
            (r#"{"alg":"RS256","kid":"k","crit":["exp"]}"#, "crit"),
            (r#"{"alg":"RS256","kid":"k","jku":"https://evil"}"#, "jku"),
            (r#"{"alg":"RS256","kid":"k","jwk":{}}"#, "jwk"),
            (r#"{"alg":"RS256","kid":"k","x5u":"https://evil"}"#, "x5u"),
            (r#"{"alg":"RS256","kid":"k","x5c":[]}"#, "x5c"),
            (r#"{"alg":"RS256","kid":"k","cty":"JWT"}"#, "cty"),
            (r#"{"alg":"RS256","kid":"k","typ":"JWE"}"#, "typ"),
            (r#"{"alg":"RS256","alg":"ES256","kid":"k"}"#, "duplicate"),
        ] {
            let why = invalid(&token(header, CLAIMS));
            assert!(why.contains(expect), "{header}: {why}");
        }
    }

    #[test]
    fn claims_must_be_present_unique_and_typed() {
        let with = |from: &str, to: &str| token(HEADER, &CLAIMS.replace(from, to));
        assert!(invalid(&with(r#""exp":2,"#, "")).contains("exp"));
        assert!(invalid(&with(r#""exp":2"#, r#""exp":"2""#)).contains("invalid type"));
        assert!(invalid(&with(r#""exp":2"#, r#""exp":2.5"#)).contains("invalid type"));
        assert!(invalid(&with(r#""nbf":1,"#, "")).contains("nbf"));
        assert!(
            invalid(&with(r#""owner_id":"team_1""#, r#""owner_id":7"#)).contains("invalid type")
        );
        assert!(
            invalid(&with(r#""project_id":"prj_1""#, r#""project_id":null"#))
                .contains("invalid type")
        );
        assert!(
            invalid(&with(
                r#""environment":"preview""#,
                r#""environment":"preview","environment":"production""#
            ))
            .contains("duplicate")
        );
        assert!(invalid(&with(r#""aud":"x""#, r#""aud":{"x":1}"#)).contains("Audience"));
    }
}
