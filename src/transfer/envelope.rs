//! The export file: a versioned header, then the contents sealed with
//! AES-256-GCM under a key derived from a passphrase by argon2id.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "METAMCPX"
//!      8     1  format version (1)
//!      9     1  key derivation (1 = argon2id v19)
//!     10     4  argon2 memory in KiB (big-endian)
//!     14     4  argon2 passes
//!     18     4  argon2 lanes
//!     22    16  salt
//!     38    12  nonce
//!     50    16  passphrase check
//!     66     …  ciphertext and 16-byte tag
//! ```
//!
//! The whole header is the associated data, so no byte of the file can
//! change unnoticed. The passphrase check (a hash of key material derived
//! beside the encryption key, never of the key itself) tells a wrong
//! passphrase apart from an altered file; it helps no guesser, who can try
//! a passphrase against the ciphertext as well.

use aes_gcm::{
    Aes256Gcm, Key, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const MAGIC: &[u8; 8] = b"METAMCPX";
/// The format this build writes and reads.
pub const VERSION: u8 = 1;
const KDF_ARGON2ID: u8 = 1;
const SALT: usize = 16;
const NONCE: usize = 12;
const CHECK: usize = 16;
const HEADER: usize = 8 + 1 + 1 + 12 + SALT + NONCE + CHECK;
const TAG: usize = 16;

/// How hard the passphrase is stretched; stored in the header, so it can
/// be raised later without breaking older files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub passes: u32,
    pub lanes: u32,
}

impl KdfParams {
    /// What `metamcp export` uses: 64 MiB, 3 passes (RFC 9106's second
    /// recommendation), a fraction of a second once per file.
    pub const DEFAULT: Self = Self {
        memory_kib: 64 * 1024,
        passes: 3,
        lanes: 1,
    };

    /// Whether a file may ask for these: a crafted header must not make an
    /// import allocate gigabytes or spin for minutes.
    fn acceptable(&self) -> bool {
        (1..=16).contains(&self.lanes)
            && (1..=16).contains(&self.passes)
            && self.memory_kib >= 8 * self.lanes
            && self.memory_kib <= 1024 * 1024
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("not a metamcp export file")]
    NotAnExport,
    #[error(
        "export file format version {found} is not supported: this metamcp reads version {VERSION}{hint}"
    )]
    Version { found: u8, hint: &'static str },
    #[error("the export file is truncated or its header is damaged")]
    Damaged,
    #[error("wrong passphrase for this export file")]
    WrongPassphrase,
    #[error(
        "the export file was altered or damaged: its contents do not authenticate (nothing was read from it)"
    )]
    Tampered,
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// 32 bytes of encryption key and the passphrase check.
fn derive(
    passphrase: &str,
    salt: &[u8],
    params: KdfParams,
) -> Result<([u8; 32], [u8; CHECK]), EnvelopeError> {
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(params.memory_kib, params.passes, params.lanes, Some(64))
            .map_err(|e| EnvelopeError::Kdf(e.to_string()))?,
    );
    let mut out = [0u8; 64];
    argon
        .hash_password_into(passphrase.as_bytes(), salt, &mut out)
        .map_err(|e| EnvelopeError::Kdf(e.to_string()))?;
    let mut key = [0u8; 32];
    key.copy_from_slice(&out[..32]);
    let digest = Sha256::new()
        .chain_update(b"metamcp export passphrase check")
        .chain_update(&out[32..])
        .finalize();
    let mut check = [0u8; CHECK];
    check.copy_from_slice(&digest[..CHECK]);
    Ok((key, check))
}

fn random<const N: usize>() -> Result<[u8; N], EnvelopeError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| EnvelopeError::Kdf(format!("no randomness: {e}")))?;
    Ok(buf)
}

/// Seals `plaintext` under `passphrase` (slow on purpose: off the async
/// threads).
pub fn seal(
    plaintext: &[u8],
    passphrase: &str,
    params: KdfParams,
) -> Result<Vec<u8>, EnvelopeError> {
    let salt: [u8; SALT] = random()?;
    let nonce: [u8; NONCE] = random()?;
    let (key, check) = derive(passphrase, &salt, params)?;
    let mut file = Vec::with_capacity(HEADER + plaintext.len() + TAG);
    file.extend_from_slice(MAGIC);
    file.push(VERSION);
    file.push(KDF_ARGON2ID);
    for n in [params.memory_kib, params.passes, params.lanes] {
        file.extend_from_slice(&n.to_be_bytes());
    }
    file.extend_from_slice(&salt);
    file.extend_from_slice(&nonce);
    file.extend_from_slice(&check);
    let sealed = Aes256Gcm::new(&Key::<Aes256Gcm>::from(key))
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &file,
            },
        )
        .map_err(|_| EnvelopeError::Kdf("encryption failed".into()))?;
    file.extend_from_slice(&sealed);
    Ok(file)
}

fn u32_at(file: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&file[at..at + 4]);
    u32::from_be_bytes(b)
}

/// Opens a file written by [`seal`]: the contents, or why not.
pub fn open(file: &[u8], passphrase: &str) -> Result<Vec<u8>, EnvelopeError> {
    if file.len() < MAGIC.len() || &file[..MAGIC.len()] != MAGIC {
        return Err(EnvelopeError::NotAnExport);
    }
    let version = *file.get(8).ok_or(EnvelopeError::Damaged)?;
    if version != VERSION {
        return Err(EnvelopeError::Version {
            found: version,
            hint: if version > VERSION {
                " (the file was written by a newer metamcp: import it with that version)"
            } else {
                ""
            },
        });
    }
    if file.len() < HEADER + TAG || file[9] != KDF_ARGON2ID {
        return Err(EnvelopeError::Damaged);
    }
    let params = KdfParams {
        memory_kib: u32_at(file, 10),
        passes: u32_at(file, 14),
        lanes: u32_at(file, 18),
    };
    if !params.acceptable() {
        return Err(EnvelopeError::Damaged);
    }
    let (salt, rest) = file[22..HEADER].split_at(SALT);
    let (nonce, check) = rest.split_at(NONCE);
    let (key, expected) = derive(passphrase, salt, params)?;
    if !bool::from(expected.ct_eq(check)) {
        return Err(EnvelopeError::WrongPassphrase);
    }
    let nonce: [u8; NONCE] = nonce.try_into().map_err(|_| EnvelopeError::Damaged)?;
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(key))
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &file[HEADER..],
                aad: &file[..HEADER],
            },
        )
        .map_err(|_| EnvelopeError::Tampered)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters: the tests check the format, not the cost.
    const FAST: KdfParams = KdfParams {
        memory_kib: 64,
        passes: 1,
        lanes: 1,
    };
    const PASS: &str = "correct horse battery staple";

    #[test]
    fn round_trips_with_fresh_salt_and_nonce() {
        let a = seal(b"the configuration", PASS, FAST).unwrap();
        let b = seal(b"the configuration", PASS, FAST).unwrap();
        assert_ne!(a, b);
        assert!(!a.windows(6).any(|w| w == b"config"));
        assert_eq!(open(&a, PASS).unwrap(), b"the configuration");
        assert_eq!(open(&b, PASS).unwrap(), b"the configuration");
        // The default parameters are accepted by the reader.
        assert!(KdfParams::DEFAULT.acceptable());
    }

    #[test]
    fn wrong_passphrase_is_named() {
        let file = seal(b"x", PASS, FAST).unwrap();
        assert_eq!(
            open(&file, "another passphrase"),
            Err(EnvelopeError::WrongPassphrase)
        );
    }

    #[test]
    fn any_altered_byte_is_refused() {
        let file = seal(b"{\"tables\": []}", PASS, FAST).unwrap();
        // The body, the tag, the nonce: authentication fails.
        for at in [HEADER, file.len() - 1, 40] {
            let mut bad = file.clone();
            bad[at] ^= 1;
            assert_eq!(open(&bad, PASS), Err(EnvelopeError::Tampered), "byte {at}");
        }
        // The salt or the check: the passphrase no longer matches.
        for at in [22, 60] {
            let mut bad = file.clone();
            bad[at] ^= 1;
            assert_eq!(
                open(&bad, PASS),
                Err(EnvelopeError::WrongPassphrase),
                "byte {at}"
            );
        }
        // Truncated.
        assert_eq!(open(&file[..HEADER], PASS), Err(EnvelopeError::Damaged));
        assert_eq!(open(&file[..5], PASS), Err(EnvelopeError::NotAnExport));
        // Cost parameters out of bounds are refused before any work.
        let mut greedy = file.clone();
        greedy[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(open(&greedy, PASS), Err(EnvelopeError::Damaged));
        // Cost parameters changed within bounds: authenticated too.
        let mut cheaper = file.clone();
        cheaper[14..18].copy_from_slice(&2u32.to_be_bytes());
        assert!(open(&cheaper, PASS).is_err());
        assert_eq!(
            open(b"{\"json\": 1}", PASS),
            Err(EnvelopeError::NotAnExport)
        );
    }

    #[test]
    fn other_versions_are_named() {
        let mut file = seal(b"x", PASS, FAST).unwrap();
        file[8] = 2;
        let err = open(&file, PASS).unwrap_err();
        assert_eq!(
            err,
            EnvelopeError::Version {
                found: 2,
                hint: " (the file was written by a newer metamcp: import it with that version)"
            }
        );
        assert!(err.to_string().contains("version 2"), "{err}");
        file[8] = 0;
        assert!(matches!(
            open(&file, PASS),
            Err(EnvelopeError::Version { found: 0, .. })
        ));
    }
}
