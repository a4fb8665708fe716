//! Secrets at rest: upstream credentials (HTTP header values, environment
//! values of stdio servers, URLs with a password) are stored encrypted with
//! AES-256-GCM under `META_MCP_ENCRYPTION_KEY`, a key of its own (never
//! derived from the token signing key).
//!
//! A stored secret reads `enc:v1:<kid>:<base64(nonce || ciphertext)>`. The
//! key id lets keys rotate: the current key encrypts, the keys in
//! `META_MCP_ENCRYPTION_OLD_KEYS` still decrypt, and a value under an old key
//! moves to the current one whenever it is written again. Each value is
//! bound (as associated data) to where it belongs, so a ciphertext copied
//! into another row or field does not decrypt.
//!
//! In the embedded single-process mode (SQLite) a missing key is generated
//! into `DATA_DIR/encryption.key` (mode 0600); with PostgreSQL, where many
//! replicas must share it, the gateway refuses to start without one.

use std::{collections::HashMap, fmt, path::Path};

use aes_gcm::{
    Aes256Gcm, Key, KeyInit, Nonce,
    aead::{Aead, AeadCore, OsRng, Payload, rand_core::RngCore},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use sha2::{Digest, Sha256};

/// The prefix of every encrypted value.
pub const PREFIX: &str = "enc:v1:";
/// The file a generated key is kept in, inside the data directory.
pub const KEY_FILE: &str = "encryption.key";
/// The least key material accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// A string that never shows itself in `Debug` output (settings, errors).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: only for the code that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretsError {
    #[error("{0}")]
    BadKey(String),
    #[error(
        "META_MCP_ENCRYPTION_KEY is required with PostgreSQL: every replica must share the key that encrypts stored secrets"
    )]
    KeyRequired,
    #[error("cannot use the key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error(
        "stored secret is encrypted with key {0}, which is not configured (META_MCP_ENCRYPTION_OLD_KEYS)"
    )]
    UnknownKey(String),
    #[error("stored secret does not decrypt (wrong key, or altered)")]
    Undecryptable,
    #[error("stored secret is malformed")]
    Malformed,
}

/// One AES-256 key and its id.
struct KeyEntry {
    id: String,
    cipher: Aes256Gcm,
}

/// The current key and the old ones still accepted for decryption.
pub struct Keyring {
    current: KeyEntry,
    old: HashMap<String, KeyEntry>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field("old", &self.old.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Turns configured key material into a key: 32 bytes given as base64 are
/// used through HKDF as they are; anything else is a passphrase of at least
/// 32 bytes, also through HKDF-SHA256.
fn derive(material: &str) -> Result<KeyEntry, SecretsError> {
    let material = material.trim();
    let ikm: Vec<u8> = match STANDARD.decode(material) {
        Ok(bytes) if bytes.len() >= MIN_KEY_BYTES => bytes,
        _ if material.len() >= MIN_KEY_BYTES => material.as_bytes().to_vec(),
        _ => {
            return Err(SecretsError::BadKey(format!(
                "an encryption key needs at least {MIN_KEY_BYTES} bytes (e.g. `openssl rand -base64 32`)"
            )));
        }
    };
    let hk = hkdf::Hkdf::<Sha256>::new(Some(b"metamcp secrets at rest"), &ikm);
    let mut key = [0u8; 32];
    hk.expand(b"aes-256-gcm v1", &mut key)
        .map_err(|_| SecretsError::BadKey("key derivation failed".into()))?;
    // The id names the key without revealing it: a hash of the derived key
    // under a label of its own.
    let id_hash = Sha256::new()
        .chain_update(b"metamcp key id")
        .chain_update(key)
        .finalize();
    let id: String = id_hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    Ok(KeyEntry {
        id,
        cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(key)),
    })
}

impl Keyring {
    /// A keyring from the current key and older ones (decryption only).
    pub fn new(current: &str, old: &[&str]) -> Result<Self, SecretsError> {
        let current = derive(current)?;
        let mut map = HashMap::new();
        for material in old {
            let entry = derive(material)?;
            if entry.id != current.id {
                map.insert(entry.id.clone(), entry);
            }
        }
        Ok(Self { current, old: map })
    }

    /// The keyring the gateway runs with: `META_MCP_ENCRYPTION_KEY`, or in
    /// the embedded mode the key kept in (or generated into)
    /// `DATA_DIR/encryption.key`; with PostgreSQL the setting is required.
    pub fn load(
        key: Option<&str>,
        old_keys: &[&str],
        data_dir: &Path,
        postgres: bool,
    ) -> Result<Self, SecretsError> {
        if let Some(key) = key {
            return Self::new(key, old_keys);
        }
        if postgres {
            return Err(SecretsError::KeyRequired);
        }
        let path = data_dir.join(KEY_FILE);
        let file_error = |reason: String| SecretsError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                tracing::info!(path = %path.display(), "encryption key for stored secrets read from the data directory");
                return Self::new(&text, old_keys);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_error(e.to_string())),
        }
        std::fs::create_dir_all(data_dir).map_err(|e| file_error(e.to_string()))?;
        let mut raw = [0u8; 32];
        OsRng.fill_bytes(&mut raw);
        let text = STANDARD.encode(raw);
        write_private(&path, &text).map_err(|e| file_error(e.to_string()))?;
        tracing::warn!(
            path = %path.display(),
            "META_MCP_ENCRYPTION_KEY is not set: generated a key for stored secrets into the data directory; back it up (without it stored credentials are lost)"
        );
        Self::new(&text, old_keys)
    }

    /// The id of the key new values are encrypted with.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Encrypts `plaintext`, bound to `context` (where the value belongs,
    /// e.g. `server/NAME/headers/Authorization`).
    pub fn encrypt(&self, plaintext: &str, context: &str) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = aad(&self.current.id, context);
        // Encryption with a valid key and nonce cannot fail for inputs that
        // fit in memory; the message is there for the impossible case.
        let sealed = self
            .current
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", self.current.id, STANDARD.encode(blob))
    }

    /// Decrypts a value written by [`Keyring::encrypt`] with the same
    /// `context`. A value without the prefix was stored before encryption
    /// existed and is returned as it is.
    pub fn decrypt(&self, value: &str, context: &str) -> Result<String, SecretsError> {
        let Some(rest) = value.strip_prefix(PREFIX) else {
            return Ok(value.to_owned());
        };
        let (kid, body) = rest.split_once(':').ok_or(SecretsError::Malformed)?;
        let entry = if kid == self.current.id {
            &self.current
        } else {
            self.old
                .get(kid)
                .ok_or_else(|| SecretsError::UnknownKey(kid.to_owned()))?
        };
        let blob = STANDARD.decode(body).map_err(|_| SecretsError::Malformed)?;
        if blob.len() < 12 + 16 {
            return Err(SecretsError::Malformed);
        }
        let (nonce, sealed) = blob.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| SecretsError::Malformed)?;
        let aad = aad(kid, context);
        let plain = entry
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretsError::Undecryptable)?;
        String::from_utf8(plain).map_err(|_| SecretsError::Malformed)
    }

    /// Whether a stored value should be written again: stored in clear, or
    /// under a key other than the current one.
    pub fn needs_reencrypt(&self, value: &str) -> bool {
        match value.strip_prefix(PREFIX) {
            None => true,
            Some(rest) => rest.split(':').next() != Some(self.current.id.as_str()),
        }
    }

    /// Moves a stored value to the current key (or encrypts a clear one).
    pub fn reencrypt(&self, value: &str, context: &str) -> Result<String, SecretsError> {
        if !self.needs_reencrypt(value) {
            return Ok(value.to_owned());
        }
        Ok(self.encrypt(&self.decrypt(value, context)?, context))
    }
}

fn aad(kid: &str, context: &str) -> Vec<u8> {
    format!("metamcp:v1:{kid}:{context}").into_bytes()
}

/// Creates `path` readable by its owner only, failing if it exists.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "k1-passphrase-that-is-long-enough-for-a-key";
    const K2: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn round_trips_and_binds_context() {
        let ring = Keyring::new(K1, &[]).unwrap();
        let sealed = ring.encrypt("Bearer s3cret", "server/a/headers/Authorization");
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("s3cret"));
        assert_eq!(
            ring.decrypt(&sealed, "server/a/headers/Authorization"),
            Ok("Bearer s3cret".into())
        );
        // Another row or field: refused.
        assert_eq!(
            ring.decrypt(&sealed, "server/b/headers/Authorization"),
            Err(SecretsError::Undecryptable)
        );
        // Fresh nonce every time.
        assert_ne!(
            sealed,
            ring.encrypt("Bearer s3cret", "server/a/headers/Authorization")
        );
        // Tampering is detected.
        let mut bytes = sealed.clone().into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert!(
            ring.decrypt(&tampered, "server/a/headers/Authorization")
                .is_err()
        );
        // Clear legacy values pass through, and need re-encryption.
        assert_eq!(ring.decrypt("plain", "x"), Ok("plain".into()));
        assert!(ring.needs_reencrypt("plain"));
        assert!(!ring.needs_reencrypt(&sealed));
        assert_eq!(
            ring.decrypt("enc:v1:nokid", "x"),
            Err(SecretsError::Malformed)
        );
    }

    #[test]
    fn rotation_keeps_old_values_readable_and_moves_them() {
        let old = Keyring::new(K1, &[]).unwrap();
        let sealed = old.encrypt("token", "ctx");
        let new = Keyring::new(K2, &[K1]).unwrap();
        assert_ne!(new.current_id(), old.current_id());
        assert_eq!(new.decrypt(&sealed, "ctx"), Ok("token".into()));
        assert!(new.needs_reencrypt(&sealed));
        let moved = new.reencrypt(&sealed, "ctx").unwrap();
        assert!(moved.contains(new.current_id()));
        assert_eq!(new.decrypt(&moved, "ctx"), Ok("token".into()));
        // Without the old key the value is lost, and says which key it needs.
        let only_new = Keyring::new(K2, &[]).unwrap();
        assert_eq!(
            only_new.decrypt(&sealed, "ctx"),
            Err(SecretsError::UnknownKey(old.current_id().to_owned()))
        );
    }

    #[test]
    fn short_keys_are_refused_and_debug_hides_secrets() {
        assert!(matches!(
            Keyring::new("short", &[]),
            Err(SecretsError::BadKey(_))
        ));
        assert!(matches!(
            Keyring::new(K1, &["tiny"]),
            Err(SecretsError::BadKey(_))
        ));
        let shown = format!("{:?}", SecretString::new(K1));
        assert!(!shown.contains("passphrase"));
        let ring = Keyring::new(K1, &[]).unwrap();
        assert!(!format!("{ring:?}").contains("passphrase"));
    }

    #[test]
    fn generated_key_file_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Keyring::load(None, &[], dir.path(), true).unwrap_err(),
            SecretsError::KeyRequired
        );
        let first = Keyring::load(None, &[], dir.path(), false).unwrap();
        let path = dir.path().join(KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = first.encrypt("v", "c");
        let second = Keyring::load(None, &[], dir.path(), false).unwrap();
        assert_eq!(second.current_id(), first.current_id());
        assert_eq!(second.decrypt(&sealed, "c"), Ok("v".into()));
        // A configured key wins over the file.
        let configured = Keyring::load(Some(K1), &[], dir.path(), false).unwrap();
        assert_ne!(configured.current_id(), first.current_id());
    }
}
