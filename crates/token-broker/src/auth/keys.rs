//! Signing keys parsed once, when the JWKS is fetched, so that the hot path never parses a key.
//!
//! [`PreparedKey`] is an `openidconnect` JSON Web Key: it wraps the crate's `CoreJsonWebKey` for
//! everything the verifier asks of a key (id, type, use, algorithm), and holds a ready verifying key
//! (`rsa` / `p256`, the crates `openidconnect` itself uses) for the signature check. Each key
//! verifies exactly one algorithm: RSA keys RS256, P-256 keys ES256.

use std::{fmt, sync::Arc};

use openidconnect::{
    JsonWebKey, JsonWebKeyId, SignatureVerificationError,
    core::{CoreJsonWebKey, CoreJsonWebKeyType, CoreJsonWebKeyUse, CoreJwsSigningAlgorithm},
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;

enum Verifying {
    Rs256(rsa::pkcs1v15::VerifyingKey<sha2::Sha256>),
    Es256(p256::ecdsa::VerifyingKey),
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
            let n = rsa::BigUint::from_bytes_be(&b64(&params.n, "n")?);
            let e = rsa::BigUint::from_bytes_be(&b64(&params.e, "e")?);
            let key = rsa::RsaPublicKey::new(n, e).map_err(|e| format!("RSA key: {e}"))?;
            if rsa::traits::PublicKeyParts::size(&key) * 8 < MIN_RSA_BITS {
                return Err(format!("RSA key shorter than {MIN_RSA_BITS} bits"));
            }
            Ok(Verifying::Rs256(rsa::pkcs1v15::VerifyingKey::new(key)))
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
                .map(Verifying::Es256)
                .map_err(|_| "P-256 point is not on the curve".into())
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
        use p256::ecdsa::signature::Verifier as _;
        use rsa::signature::Verifier as _;
        let bad = || SignatureVerificationError::CryptoError("bad signature".into());
        match (&*self.verifying, signature_alg) {
            (Verifying::Rs256(key), CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256) => {
                let signature = rsa::pkcs1v15::Signature::try_from(signature).map_err(|_| bad())?;
                key.verify(message, &signature).map_err(|_| bad())
            }
            (Verifying::Es256(key), CoreJwsSigningAlgorithm::EcdsaP256Sha256) => {
                // Rejects r or s of zero (or out of range) before any arithmetic.
                let signature = p256::ecdsa::Signature::from_slice(signature).map_err(|_| bad())?;
                key.verify(message, &signature).map_err(|_| bad())
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
