//! Secrets at rest, API key digests and random identifiers.
//!
//! Each connector secret is sealed on its own with AES-256-GCM under a random 96-bit nonce. The
//! associated data binds the ciphertext to its team, connector, secret name and destination (a
//! digest of the connector's `*_url` config), so a ciphertext copied into another row (or another
//! team) fails to open instead of leaking there, and so does a secret whose connector was pointed
//! at another endpoint by editing the database. Values sealed before the destination was bound
//! (no `v2:` prefix) open only for the upgrade the registry runs at start, which re-seals them;
//! no other path opens them. Audit rows never see a secret: they get a keyed fingerprint (HMAC-SHA-256 under a key derived from the
//! master key), which tells that a value changed without offering a dictionary attack to whoever
//! reads the database.

use std::{
    fmt,
    io::Write,
    path::{Path, PathBuf},
};

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, AeadCore, OsRng, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use rand::{Rng, distr::Alphanumeric};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read secret key file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create secret key file {path}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret key file {path} must hold 32 bytes, base64-encoded")]
    Format { path: PathBuf },
}

/// Raised when a stored ciphertext does not open: the wrong master key, or a tampered row.
#[derive(Debug, thiserror::Error)]
#[error("a stored secret could not be decrypted (wrong secret key, or the row was altered)")]
pub struct OpenError;

/// The master key and the ciphers derived from it.
#[derive(Clone)]
pub struct SecretCipher {
    aead: Aes256Gcm,
    fingerprint_key: [u8; 32],
}

impl fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretCipher(<redacted>)")
    }
}

impl SecretCipher {
    pub fn from_key(key: &[u8; 32]) -> Self {
        let fingerprint_key: [u8; 32] = Sha256::new()
            .chain_update(b"connect.v1 secret fingerprint key\0")
            .chain_update(key)
            .finalize()
            .into();
        Self {
            aead: Aes256Gcm::new(key.into()),
            fingerprint_key,
        }
    }

    /// A cipher under a fresh random key that lives only in memory (for in-memory databases).
    pub fn ephemeral() -> Self {
        Self::from_key(&random_key())
    }

    /// Reads the base64 key in `path`; with `create_if_missing`, writes a new random key there
    /// first (mode 0600) when the file does not exist.
    pub fn from_key_file(path: &Path, create_if_missing: bool) -> Result<Self, KeyFileError> {
        if create_if_missing && !path.exists() {
            create_key_file(path)?;
        }
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| KeyFileError::Format {
                path: path.to_owned(),
            })?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| KeyFileError::Format {
            path: path.to_owned(),
        })?;
        Ok(Self::from_key(&key))
    }

    /// Seals one secret value for one (team, connector, name, destination): `v2:` and the base64
    /// of nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, aad: &SecretAad<'_>, value: &SecretString) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .aead
            .encrypt(
                &nonce,
                Payload {
                    msg: value.expose_secret().as_bytes(),
                    aad: aad.bytes(true).as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a bounded buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        format!("{SEALED_V2}{}", STANDARD.encode(out))
    }

    /// Whether a sealed value predates the destination binding.
    pub fn is_legacy(sealed: &str) -> bool {
        !sealed.starts_with(SEALED_V2)
    }

    /// Opens a value sealed by [`SecretCipher::seal`] for the same (team, connector, name,
    /// destination). A value sealed before the destination binding does not open here: only the
    /// upgrade at start reads those ([`SecretCipher::open_legacy`]) and re-seals them.
    pub fn open(&self, aad: &SecretAad<'_>, sealed: &str) -> Result<SecretString, OpenError> {
        let encoded = sealed.strip_prefix(SEALED_V2).ok_or(OpenError)?;
        self.open_encoded(aad, true, encoded)
    }

    /// Opens a value sealed before the destination binding (no `v2:` prefix), for re-sealing.
    pub fn open_legacy(
        &self,
        aad: &SecretAad<'_>,
        sealed: &str,
    ) -> Result<SecretString, OpenError> {
        if !Self::is_legacy(sealed) {
            return Err(OpenError);
        }
        self.open_encoded(aad, false, sealed)
    }

    fn open_encoded(
        &self,
        aad: &SecretAad<'_>,
        bound: bool,
        encoded: &str,
    ) -> Result<SecretString, OpenError> {
        let bytes = STANDARD.decode(encoded).map_err(|_| OpenError)?;
        if bytes.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let plaintext = self
            .aead
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.bytes(bound).as_bytes(),
                },
            )
            .map_err(|_| OpenError)?;
        String::from_utf8(plaintext)
            .map(SecretString::from)
            .map_err(|_| OpenError)
    }

    /// The database's key check: a constant sealed under this key, which only this key opens.
    pub fn key_check(&self) -> String {
        self.seal_internal(KEY_CHECK, KEY_CHECK_AAD)
    }

    /// Whether `sealed` is a key check this key wrote.
    pub fn opens_key_check(&self, sealed: &str) -> bool {
        self.open_internal(sealed, KEY_CHECK_AAD)
            .is_ok_and(|plain| plain == KEY_CHECK)
    }

    /// Seals the key `token_id`s are computed under.
    pub fn seal_token_id_key(&self, key: &[u8; 32]) -> String {
        self.seal_internal(key, TOKEN_ID_KEY_AAD)
    }

    /// Opens what [`Self::seal_token_id_key`] sealed.
    pub fn open_token_id_key(&self, sealed: &str) -> Result<[u8; 32], OpenError> {
        self.open_internal(sealed, TOKEN_ID_KEY_AAD)?
            .try_into()
            .map_err(|_| OpenError)
    }

    /// Seals a signing key's private half (PKCS#8), bound to its `kid`.
    pub fn seal_signing_key(&self, kid: &str, pkcs8: &[u8]) -> String {
        self.seal_internal(pkcs8, &signing_key_aad(kid))
    }

    /// Opens what [`Self::seal_signing_key`] sealed for `kid`.
    pub fn open_signing_key(&self, kid: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        self.open_internal(sealed, &signing_key_aad(kid))
    }

    /// Seals a value of the registry's own (not a connector's) under `aad`: the base64 of
    /// nonce ‖ ciphertext ‖ tag.
    fn seal_internal(&self, msg: &[u8], aad: &[u8]) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .aead
            .encrypt(&nonce, Payload { msg, aad })
            .expect("AES-GCM encryption of a bounded buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        STANDARD.encode(out)
    }

    fn open_internal(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, OpenError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| OpenError)?;
        if bytes.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        self.aead
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| OpenError)
    }

    /// A keyed fingerprint of a secret value for audit rows: 16 hex digits of HMAC-SHA-256.
    pub fn fingerprint(&self, value: &SecretString) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.fingerprint_key)
            .expect("HMAC accepts keys of any length");
        mac.update(value.expose_secret().as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..8])
    }
}

/// What the key check seals, and under which associated data.
const KEY_CHECK: &[u8] = b"connect master key check";
const KEY_CHECK_AAD: &[u8] = b"connect.key-check";
/// The associated data of the sealed key of `token_id`s.
const TOKEN_ID_KEY_AAD: &[u8] = b"connect.token-id-key";

fn signing_key_aad(kid: &str) -> Vec<u8> {
    let mut aad = b"connect.signing-key\0".to_vec();
    aad.extend_from_slice(kid.as_bytes());
    aad
}

/// A new ES256 signing key: its PKCS#8 private half, its public JWK (with `kid`, `alg`, `use`),
/// and its `kid`, the RFC 7638 thumbprint of the public key.
pub fn new_signing_key() -> (Vec<u8>, serde_json::Value, String) {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .expect("the system's random source works");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("a key just generated parses");
    // Uncompressed point: 0x04 ‖ x ‖ y.
    let point = pair.public_key().as_ref();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let (x, y) = (b64(&point[1..33]), b64(&point[33..65]));
    // RFC 7638: the required members in lexicographic order, no whitespace.
    let thumbprint = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = b64(&Sha256::digest(thumbprint.as_bytes()));
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "x": x, "y": y,
        "kid": kid, "alg": "ES256", "use": "sig",
    });
    (pkcs8.as_ref().to_vec(), jwk, kid)
}

/// The prefix of values sealed with their destination bound.
const SEALED_V2: &str = "v2:";

/// What a sealed secret is bound to.
#[derive(Clone, Copy, Debug)]
pub struct SecretAad<'a> {
    pub team_id: &'a str,
    pub connector_id: &'a str,
    pub name: &'a str,
    /// [`destination_digest`] of the connector's config.
    pub destination: &'a str,
}

impl SecretAad<'_> {
    fn bytes(&self, with_destination: bool) -> String {
        // NUL cannot occur in any of the four (their charsets exclude it), so this is unambiguous.
        if with_destination {
            format!(
                "connect.v2.secret\0{}\0{}\0{}\0{}",
                self.team_id, self.connector_id, self.name, self.destination
            )
        } else {
            format!(
                "connect.v1.secret\0{}\0{}\0{}",
                self.team_id, self.connector_id, self.name
            )
        }
    }
}

/// The SHA-256 (hex) of a connector's destinations: every `*_url` config entry, in key order.
pub fn destination_digest<'a>(
    config: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> String {
    let mut digest = Sha256::new();
    for (key, value) in config {
        if connect_types::url_policy::is_destination_key(key) {
            digest.update(key.as_bytes());
            digest.update([0]);
            digest.update(value.as_bytes());
            digest.update([0]);
        }
    }
    hex::encode(digest.finalize())
}

pub fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::rng().fill(&mut key);
    key
}

fn create_key_file(path: &Path) -> Result<(), KeyFileError> {
    let err = |source| KeyFileError::Create {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            writeln!(file, "{}", STANDARD.encode(random_key())).map_err(err)?;
            file.sync_all().map_err(err)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// `len` random characters of `[a-z0-9]`.
pub fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .map(|b| (b as char).to_ascii_lowercase())
        .take(len)
        .collect()
}

/// A fresh random connector id.
pub fn new_connector_id() -> crate::domain::types::ConnectorId {
    crate::domain::types::ConnectorId::from_suffix(&random_token(
        crate::domain::types::ConnectorId::SUFFIX_LEN,
    ))
    .expect("random lowercase alphanumerics make a valid connector id")
}

/// A fresh random API key id.
pub fn new_key_id() -> crate::domain::types::KeyId {
    crate::domain::types::KeyId::from_suffix(&random_token(16))
        .expect("random lowercase alphanumerics make a valid key id")
}

/// A new API key: `cnk_` and 43 random characters of `[A-Za-z0-9]` (about 256 bits).
pub fn generate_api_key() -> SecretString {
    let body: String = rand::rng()
        .sample_iter(Alphanumeric)
        .map(char::from)
        .take(43)
        .collect();
    SecretString::from(format!("cnk_{body}"))
}

/// The SHA-256 of an API key, hex-encoded: the only form in which keys are stored.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const AAD: SecretAad<'static> = SecretAad {
        team_id: "team_a",
        connector_id: "conn_1",
        name: "api_key",
        destination: "d1",
    };

    #[test]
    fn sealed_secrets_open_only_for_the_row_they_were_sealed_for() {
        let cipher = SecretCipher::ephemeral();
        let value = SecretString::from("sk_live_123");
        let sealed = cipher.seal(&AAD, &value);
        assert!(!sealed.contains("sk_live_123"));
        assert_eq!(
            cipher.open(&AAD, &sealed).unwrap().expose_secret(),
            "sk_live_123"
        );

        let other_team = SecretAad {
            team_id: "team_b",
            ..AAD
        };
        assert!(cipher.open(&other_team, &sealed).is_err());
        let other_name = SecretAad {
            name: "client_secret",
            ..AAD
        };
        assert!(cipher.open(&other_name, &sealed).is_err());
        let other_destination = SecretAad {
            destination: "d2",
            ..AAD
        };
        assert!(cipher.open(&other_destination, &sealed).is_err());
        assert!(SecretCipher::ephemeral().open(&AAD, &sealed).is_err());
        assert!(cipher.open(&AAD, "AAAA").is_err());
    }

    #[test]
    fn values_sealed_before_the_destination_binding_open_only_for_the_upgrade() {
        let cipher = SecretCipher::ephemeral();
        let value = SecretString::from("sk_live_123");
        let sealed = cipher.seal(&AAD, &value);
        assert!(!SecretCipher::is_legacy(&sealed));
        // The legacy form: the same AEAD without the prefix and without the destination.
        let bytes = STANDARD
            .decode(sealed.strip_prefix(SEALED_V2).unwrap())
            .unwrap();
        let (nonce, _) = bytes.split_at(NONCE_LEN);
        let legacy_ct = cipher
            .aead
            .encrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: b"sk_live_123",
                    aad: AAD.bytes(false).as_bytes(),
                },
            )
            .unwrap();
        let legacy = STANDARD.encode([nonce, &legacy_ct].concat());
        assert!(SecretCipher::is_legacy(&legacy));
        let other_destination = SecretAad {
            destination: "anything",
            ..AAD
        };
        assert_eq!(
            cipher
                .open_legacy(&other_destination, &legacy)
                .unwrap()
                .expose_secret(),
            "sk_live_123"
        );
        // Only the upgrade opens them: everywhere else a legacy value does not open, and a
        // current one does not open as legacy.
        assert!(cipher.open(&AAD, &legacy).is_err());
        assert!(cipher.open_legacy(&AAD, &sealed).is_err());
    }

    #[test]
    fn the_destination_digest_covers_url_entries_only() {
        let config = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let a = config(&[("token_url", "https://a.example/token"), ("scopes", "x")]);
        let b = config(&[("token_url", "https://a.example/token"), ("scopes", "y")]);
        let c = config(&[("token_url", "https://b.example/token"), ("scopes", "x")]);
        assert_eq!(destination_digest(&a), destination_digest(&b));
        assert_ne!(destination_digest(&a), destination_digest(&c));
    }

    #[test]
    fn sealing_twice_gives_different_ciphertexts_but_one_fingerprint() {
        let cipher = SecretCipher::ephemeral();
        let value = SecretString::from("v");
        assert_ne!(cipher.seal(&AAD, &value), cipher.seal(&AAD, &value));
        assert_eq!(cipher.fingerprint(&value), cipher.fingerprint(&value));
        assert_ne!(
            cipher.fingerprint(&value),
            cipher.fingerprint(&SecretString::from("w"))
        );
    }

    #[test]
    fn key_files_are_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/registry.db.key");
        let a = SecretCipher::from_key_file(&path, true).unwrap();
        let sealed = a.seal(&AAD, &SecretString::from("x"));
        let b = SecretCipher::from_key_file(&path, true).unwrap();
        assert_eq!(b.open(&AAD, &sealed).unwrap().expose_secret(), "x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(
            SecretCipher::from_key_file(&path, false),
            Err(KeyFileError::Format { .. })
        ));
        assert!(matches!(
            SecretCipher::from_key_file(&dir.path().join("missing"), false),
            Err(KeyFileError::Read { .. })
        ));
    }

    #[test]
    fn api_keys_are_long_random_and_hashed() {
        let key = generate_api_key();
        assert!(key.expose_secret().starts_with("cnk_"));
        assert_eq!(key.expose_secret().len(), 47);
        assert_ne!(key.expose_secret(), generate_api_key().expose_secret());
        assert_eq!(hash_api_key("abc").len(), 64);
    }
}
