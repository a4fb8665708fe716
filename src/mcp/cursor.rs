//! Sealed pagination cursors. A cursor is opaque to clients and handed back
//! later, so it is authenticated (HMAC-SHA-256) and bound to the list's
//! content, the caller's authorization context, the list and an expiry:
//! a forged, altered, foreign or stale cursor is refused (`-32602`).
//! The key derives from the deployment's secret key, so a cursor issued by
//! one replica opens on any other (2026-07-28 clients are stateless and a
//! load balancer may send each page request elsewhere).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a cursor stays valid.
const LIFETIME: Duration = Duration::from_secs(600);

/// Seals and opens cursors.
pub struct CursorSealer {
    key: [u8; 32],
}

impl CursorSealer {
    /// A key derived from the deployment's secret key: every replica opens
    /// the cursors of every other.
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            key: derive_key(secret, "mcp cursors v1"),
        }
    }
}

impl Default for CursorSealer {
    /// A random key: cursors open only in this process (tests).
    fn default() -> Self {
        Self { key: process_key() }
    }
}

/// The key for what the gateway seals for its clients to hand back (one
/// `purpose` each: cursors, request states), derived from the deployment's
/// secret key by HKDF-SHA-256: every replica derives the same key, and no
/// other use of the secret key can produce it.
pub fn derive_key(secret: &[u8], purpose: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(Some(b"metamcp sealed for clients"), secret)
        .expand(purpose.as_bytes(), &mut key)
        .expect("32 bytes is a valid HKDF-SHA-256 output length");
    key
}

/// A random 256-bit key, new with every process.
pub(super) fn process_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key
}

/// Seconds since the Unix epoch, for expiry stamps.
pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl CursorSealer {
    fn mac(&self, payload: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// A cursor for position `offset` of list `scope` (which names the list,
    /// the catalog generation and the caller's context).
    pub fn seal(&self, scope: &str, offset: usize) -> String {
        let expires = now() + LIFETIME.as_secs();
        let mac = self.mac(&format!("{offset}.{expires}.{scope}"));
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(format!("{offset}.{expires}")),
            URL_SAFE_NO_PAD.encode(mac)
        )
    }

    /// The offset of a cursor sealed for `scope`, or why it is refused.
    pub fn open(&self, scope: &str, cursor: &str) -> Result<usize, &'static str> {
        let (head, mac) = cursor.split_once('.').ok_or("malformed cursor")?;
        let head = URL_SAFE_NO_PAD
            .decode(head)
            .map_err(|_| "malformed cursor")?;
        let head = String::from_utf8(head).map_err(|_| "malformed cursor")?;
        let (offset, expires) = head.split_once('.').ok_or("malformed cursor")?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| "malformed cursor")?;
        let mut check =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        check.update(format!("{offset}.{expires}.{scope}").as_bytes());
        // verify_slice compares in constant time.
        check
            .verify_slice(&mac)
            .map_err(|_| "invalid cursor (forged, or not issued for this list)")?;
        let expires: u64 = expires.parse().map_err(|_| "malformed cursor")?;
        if expires < now() {
            return Err("expired cursor; list again from the start");
        }
        offset.parse().map_err(|_| "malformed cursor")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_open_only_for_their_scope_and_untampered() {
        let s = CursorSealer::default();
        let c = s.seal("tools:1:alice", 500);
        assert_eq!(s.open("tools:1:alice", &c), Ok(500));
        assert!(s.open("tools:1:bob", &c).is_err(), "bound to the caller");
        assert!(
            s.open("tools:2:alice", &c).is_err(),
            "bound to the catalog generation"
        );
        let (head, mac) = c.split_once('.').unwrap();
        let forged = format!(
            "{}.{mac}",
            URL_SAFE_NO_PAD.encode(format!("0.{}", u64::MAX))
        );
        assert!(s.open("tools:1:alice", &forged).is_err());
        assert!(s.open("tools:1:alice", head).is_err());
        assert!(
            CursorSealer::default().open("tools:1:alice", &c).is_err(),
            "another key"
        );
    }

    #[test]
    fn replicas_sharing_the_secret_key_open_each_others_cursors() {
        let one = CursorSealer::from_secret(b"a shared secret key");
        let two = CursorSealer::from_secret(b"a shared secret key");
        let c = one.seal("tools:1:alice", 500);
        assert_eq!(two.open("tools:1:alice", &c), Ok(500));
        let other = CursorSealer::from_secret(b"another secret key");
        assert!(other.open("tools:1:alice", &c).is_err());
        let other_purpose = CursorSealer {
            key: derive_key(b"a shared secret key", "mcp request states v1"),
        };
        assert!(other_purpose.open("tools:1:alice", &c).is_err());
    }
}
