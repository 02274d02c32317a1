//! Signing keys parsed once, when the JWKS is fetched, so that the hot path never parses a key.
//!
//! [`PreparedKey`] is an `openidconnect` JSON Web Key: it wraps the crate's `CoreJsonWebKey` for
//! everything the verifier asks of a key (id, type, use, algorithm), and holds its public key,
//! decoded and checked, for the signature check, which `ring` does (constant-time, optimized;
//! `cargo bench --bench verify` shows the cost). Each key verifies exactly one algorithm: RSA keys
//! (2048 to 8192 bits) RS256, P-256 keys ES256.

use std::{fmt, sync::Arc};

use openidconnect::{
    JsonWebKey, JsonWebKeyId, SignatureVerificationError,
    core::{CoreJsonWebKey, CoreJsonWebKeyType, CoreJsonWebKeyUse, CoreJwsSigningAlgorithm},
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Smallest and largest RSA modulus accepted, in bits (ring's RS256 range).
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;

enum Verifying {
    Rs256(ring::signature::RsaPublicKeyComponents<Vec<u8>>),
    /// The uncompressed SEC1 point, checked to be on the curve.
    Es256(ring::signature::UnparsedPublicKey<Vec<u8>>),
    /// A key of a type or curve the broker does not verify with.
    Unusable,
}

#[derive(Clone)]
pub struct PreparedKey {
    jwk: CoreJsonWebKey,
    verifying: Arc<Verifying>,
}

impl fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match *self.verifying {
            Verifying::Rs256(_) => "RS256",
            Verifying::Es256(_) => "ES256",
            Verifying::Unusable => "unusable",
        };
        f.debug_struct("PreparedKey")
            .field("kid", &self.jwk.key_id().map(|k| k.as_str()))
            .field("verifies", &kind)
            .finish()
    }
}

/// The public parameters of a JWK, as published.
#[derive(Deserialize)]
struct PublicParams {
    kty: String,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

fn b64(value: &Option<String>, name: &str) -> Result<Vec<u8>, String> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let value = value
        .as_deref()
        .ok_or_else(|| format!("missing '{name}'"))?;
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| format!("'{name}' is not base64url"))
}

fn prepare(params: &PublicParams) -> Result<Verifying, String> {
    match (params.kty.as_str(), params.crv.as_deref()) {
        ("RSA", _) => {
            let strip = |bytes: Vec<u8>| -> Vec<u8> {
                let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
                bytes[first..].to_vec()
            };
            let n = strip(b64(&params.n, "n")?);
            let e = strip(b64(&params.e, "e")?);
            if n.len() * 8 < MIN_RSA_BITS {
                return Err(format!("RSA key shorter than {MIN_RSA_BITS} bits"));
            }
            if n.len() * 8 > MAX_RSA_BITS {
                return Err(format!("RSA key longer than {MAX_RSA_BITS} bits"));
            }
            if e.is_empty() || e.len() > 4 || e.last().is_some_and(|b| b % 2 == 0) {
                return Err("RSA exponent must be odd and at most 32 bits".into());
            }
            Ok(Verifying::Rs256(ring::signature::RsaPublicKeyComponents {
                n,
                e,
            }))
        }
        ("EC", Some("P-256")) => {
            let (x, y) = (b64(&params.x, "x")?, b64(&params.y, "y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates must be 32 bytes".into());
            }
            let mut sec1 = Vec::with_capacity(65);
            sec1.push(0x04);
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                .map_err(|_| "P-256 point is not on the curve")?;
            Ok(Verifying::Es256(ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                sec1,
            )))
        }
        _ => Ok(Verifying::Unusable),
    }
}

impl PreparedKey {
    /// Parses one published JWK. Keys of other types parse but verify nothing.
    pub fn from_jwk(value: serde_json::Value) -> Result<Self, String> {
        let params: PublicParams =
            serde_json::from_value(value.clone()).map_err(|e| format!("JWK: {e}"))?;
        let jwk: CoreJsonWebKey = serde_json::from_value(value).map_err(|e| format!("JWK: {e}"))?;
        Ok(Self {
            verifying: Arc::new(prepare(&params)?),
            jwk,
        })
    }

    pub fn kid(&self) -> Option<&str> {
        self.jwk.key_id().map(|k| k.as_str())
    }

    pub fn is_usable(&self) -> bool {
        !matches!(*self.verifying, Verifying::Unusable)
    }
}

impl Serialize for PreparedKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.jwk.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PreparedKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Self::from_jwk(value).map_err(serde::de::Error::custom)
    }
}

impl JsonWebKey for PreparedKey {
    type KeyUse = CoreJsonWebKeyUse;
    type SigningAlgorithm = CoreJwsSigningAlgorithm;

    fn key_id(&self) -> Option<&JsonWebKeyId> {
        self.jwk.key_id()
    }

    fn key_type(&self) -> &CoreJsonWebKeyType {
        self.jwk.key_type()
    }

    fn key_use(&self) -> Option<&CoreJsonWebKeyUse> {
        self.jwk.key_use()
    }

    fn signing_alg(&self) -> openidconnect::JsonWebKeyAlgorithm<&CoreJwsSigningAlgorithm> {
        self.jwk.signing_alg()
    }

    fn new_symmetric(key: Vec<u8>) -> Self {
        // Never used: the verifier is a public client, which refuses symmetric algorithms.
        Self {
            jwk: CoreJsonWebKey::new_symmetric(key),
            verifying: Arc::new(Verifying::Unusable),
        }
    }

    fn verify_signature(
        &self,
        signature_alg: &CoreJwsSigningAlgorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureVerificationError> {
        let bad = |_| SignatureVerificationError::CryptoError("bad signature".into());
        match (&*self.verifying, signature_alg) {
            (Verifying::Rs256(key), CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256) => key
                .verify(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    message,
                    signature,
                )
                .map_err(bad),
            (Verifying::Es256(key), CoreJwsSigningAlgorithm::EcdsaP256Sha256) => {
                // ring refuses r or s of zero or out of range, and a signature of another length.
                key.verify(message, signature).map_err(bad)
            }
            _ => Err(SignatureVerificationError::InvalidKey(
                "the key does not verify this algorithm".into(),
            )),
        }
    }

    fn hash_bytes(&self, bytes: &[u8], alg: &CoreJwsSigningAlgorithm) -> Result<Vec<u8>, String> {
        self.jwk.hash_bytes(bytes, alg)
    }
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use serde_json::json;

    use super::*;

    fn rsa(n_bytes: usize, e: &[u8]) -> Result<PreparedKey, String> {
        let mut n = vec![0xc5; n_bytes];
        n[n_bytes - 1] |= 1;
        PreparedKey::from_jwk(json!({
            "kty": "RSA", "kid": "k", "alg": "RS256", "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(&n), "e": URL_SAFE_NO_PAD.encode(e),
        }))
    }

    #[test]
    fn rsa_keys_outside_ring_rs256_range_or_with_an_even_exponent_are_refused() {
        assert!(rsa(256, &[1, 0, 1]).is_ok_and(|k| k.is_usable()));
        assert!(rsa(128, &[1, 0, 1]).is_err(), "1024 bits");
        assert!(rsa(1025, &[1, 0, 1]).is_err(), "8200 bits");
        assert!(rsa(256, &[1, 0, 0]).is_err(), "even exponent");
        assert!(rsa(256, &[]).is_err(), "no exponent");
    }

    #[test]
    fn ec_points_off_the_curve_are_refused_and_other_curves_verify_nothing() {
        let coordinate = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let off_curve = PreparedKey::from_jwk(json!({
            "kty": "EC", "crv": "P-256", "kid": "k", "x": coordinate, "y": coordinate,
        }));
        assert!(off_curve.is_err());
        let p384 = PreparedKey::from_jwk(json!({
            "kty": "EC", "crv": "P-384", "kid": "k", "x": coordinate, "y": coordinate,
        }))
        .unwrap();
        assert!(!p384.is_usable());
        assert!(
            p384.verify_signature(&CoreJwsSigningAlgorithm::EcdsaP256Sha256, b"m", &[0; 64])
                .is_err()
        );
    }
}
