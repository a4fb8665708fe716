//! Delivery signatures: `X-MetaMCP-Signature: t=<unix seconds>,v1=<hex>`,
//! where the hex is HMAC-SHA256 under the webhook's secret of
//! `"<t>.<body>"` — the scheme of Stripe and Standard Webhooks. Signing the
//! timestamp with the body lets a receiver refuse replays: it recomputes
//! the MAC, compares in constant time, and refuses a `t` too far from its
//! own clock (five minutes is usual). Every attempt is signed afresh, so a
//! retry after a long backoff is still fresh.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header a delivery's signature travels in.
pub const HEADER: &str = "x-metamcp-signature";

/// The prefix of generated secrets (so a leaked one is recognizable).
pub const SECRET_PREFIX: &str = "whsec_";

/// A fresh signing secret: 32 random bytes, hex, with [`SECRET_PREFIX`].
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    // The OS generator only fails on a broken system; a zeroed secret would
    // then be worse than not starting, so fail loudly.
    getrandom::fill(&mut bytes).expect("the OS random generator works");
    format!("{SECRET_PREFIX}{}", hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` sent at `timestamp` (Unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex(&tag))
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the timestamp is outside the tolerance")]
    Stale,
    #[error("no v1 signature matches")]
    Mismatch,
}

/// Checks a header value the way a receiver should: the timestamp within
/// `tolerance_secs` of `now`, and one `v1` MAC matching (several may be
/// present while a secret rotates). What receivers do; here for tests and
/// for the documentation's sake.
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => {
                timestamp = Some(t.parse::<i64>().map_err(|_| VerifyError::Malformed)?)
            }
            Some(("v1", tag)) => tags.push(tag),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::Malformed)?;
    if tags.is_empty() {
        return Err(VerifyError::Malformed);
    }
    if (now - timestamp).abs() > tolerance_secs {
        return Err(VerifyError::Stale);
    }
    for tag in tags {
        let Some(bytes) = unhex(tag) else { continue };
        // verify_slice compares in constant time.
        if mac(secret, timestamp, body).verify_slice(&bytes).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch)
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_timestamp_dot_body_with_hmac_sha256() {
        // Independently computed: printf '1700000000.{"a":1}' |
        //   openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            sign("whsec_test", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn verifies_and_refuses_tampering_staleness_and_other_secrets() {
        let body = br#"{"id":"evt_1","type":"upstream.down"}"#;
        let header = sign("whsec_a", 1_000, body);
        assert_eq!(verify("whsec_a", &header, body, 1_100, 300), Ok(()));
        assert_eq!(
            verify("whsec_a", &header, b"{\"id\":\"evt_2\"}", 1_100, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify("whsec_b", &header, body, 1_100, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify("whsec_a", &header, body, 1_301, 300),
            Err(VerifyError::Stale)
        );
        // A replayed body with a fresh timestamp but the old MAC fails.
        let replay = header.replace("t=1000", "t=1300");
        assert_eq!(
            verify("whsec_a", &replay, body, 1_300, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify("whsec_a", "v1=00", body, 1_000, 300),
            Err(VerifyError::Malformed)
        );
        // While a secret rotates, any matching v1 passes.
        let both = format!("{header},v1={}", "ab".repeat(32));
        assert_eq!(verify("whsec_a", &both, body, 1_000, 300), Ok(()));
    }

    #[test]
    fn secrets_are_random_and_prefixed() {
        let (a, b) = (new_secret(), new_secret());
        assert!(a.starts_with(SECRET_PREFIX) && a.len() == SECRET_PREFIX.len() + 64);
        assert_ne!(a, b);
    }
}
