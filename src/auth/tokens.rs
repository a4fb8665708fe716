//! The credentials metamcp issues: signed access tokens (JWT), and opaque
//! secrets (API keys, refresh tokens) kept only as keyed hashes.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::{AuthSettings, JwtAlgorithm};

/// The `iss` and `aud` of metamcp's own access tokens.
pub const ISSUER: &str = "metamcp";
/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 30;

pub const API_KEY_PREFIX: &str = "mmk_";
pub const REFRESH_PREFIX: &str = "mmr_";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    /// Tenant id.
    pub tid: String,
    pub jti: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// Always `access` (a refresh token is not a JWT, but a typed claim
    /// keeps any future token kinds from being confused).
    pub typ: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    #[error("token too large")]
    TooLarge,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token is not valid")]
    Invalid,
}

/// Signs and verifies metamcp's access tokens with one pinned algorithm.
pub struct TokenIssuer {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub ttl: Duration,
}

impl TokenIssuer {
    pub fn new(settings: &AuthSettings, secret: &[u8]) -> anyhow::Result<Self> {
        let read = |path: &Option<std::path::PathBuf>, name: &str| -> anyhow::Result<Vec<u8>> {
            let path = path
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("{name} is required"))?;
            std::fs::read(path).map_err(|e| anyhow::anyhow!("{name} {}: {e}", path.display()))
        };
        let (algorithm, encoding, decoding) = match settings.algorithm {
            JwtAlgorithm::Hs256 => (
                Algorithm::HS256,
                EncodingKey::from_secret(secret),
                DecodingKey::from_secret(secret),
            ),
            other => {
                let private = read(
                    &settings.jwt_private_key_file,
                    "META_MCP_JWT_PRIVATE_KEY_FILE",
                )?;
                let public = read(
                    &settings.jwt_public_key_file,
                    "META_MCP_JWT_PUBLIC_KEY_FILE",
                )?;
                let bad = |e: jsonwebtoken::errors::Error| {
                    anyhow::anyhow!("META_MCP_JWT_*_KEY_FILE: not a usable PEM key ({e})")
                };
                match other {
                    JwtAlgorithm::Rs256 => (
                        Algorithm::RS256,
                        EncodingKey::from_rsa_pem(&private).map_err(bad)?,
                        DecodingKey::from_rsa_pem(&public).map_err(bad)?,
                    ),
                    JwtAlgorithm::Es256 => (
                        Algorithm::ES256,
                        EncodingKey::from_ec_pem(&private).map_err(bad)?,
                        DecodingKey::from_ec_pem(&public).map_err(bad)?,
                    ),
                    _ => (
                        Algorithm::EdDSA,
                        EncodingKey::from_ed_pem(&private).map_err(bad)?,
                        DecodingKey::from_ed_pem(&public).map_err(bad)?,
                    ),
                }
            }
        };
        // The algorithm is pinned: a token naming any other (`none`, or HS256
        // signed with a public key as the secret) fails before its signature
        // is looked at.
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let issuer = Self {
            algorithm,
            encoding,
            decoding,
            validation,
            ttl: settings.access_token_ttl,
        };
        // A key pair that does not belong together fails now, not at the
        // first login.
        let probe = issuer.issue("probe", "probe", "probe")?;
        issuer
            .verify(&probe.0)
            .map_err(|_| anyhow::anyhow!("the JWT private and public keys do not match"))?;
        Ok(issuer)
    }

    /// A new access token for a user: (token, claims).
    pub fn issue(
        &self,
        user_id: &str,
        tenant: &str,
        jti: &str,
    ) -> anyhow::Result<(String, AccessClaims)> {
        let now = now_secs();
        let claims = AccessClaims {
            iss: ISSUER.into(),
            aud: ISSUER.into(),
            sub: user_id.into(),
            tid: tenant.into(),
            jti: jti.into(),
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs() as i64,
            typ: "access".into(),
        };
        let token = jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.encoding)?;
        Ok((token, claims))
    }

    /// Verifies signature, algorithm, issuer, audience and times.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                _ => TokenError::Invalid,
            })?;
        let claims = data.claims;
        // jsonwebtoken does not look at `iat`: one from the future is forged
        // or from a badly skewed clock.
        if claims.iat > now_secs() + LEEWAY_SECS as i64 {
            return Err(TokenError::NotYetValid);
        }
        if claims.typ != "access" {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Random bytes as URL-safe base64 without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system provides randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// A random id of 16 lower-case hex digits.
pub fn random_id() -> String {
    let mut buf = [0u8; 8];
    getrandom::fill(&mut buf).expect("the operating system provides randomness");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// An opaque secret handed to a client: `<prefix><id>.<secret>`. The id
/// finds the row; only a keyed hash of the secret is stored.
pub fn new_opaque(prefix: &str) -> (String, String, String) {
    let id = random_id();
    let secret = random_token(32);
    (format!("{prefix}{id}.{secret}"), id, secret)
}

/// Splits an opaque credential into (id, secret).
pub fn split_opaque<'a>(prefix: &str, token: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = token.strip_prefix(prefix)?;
    let (id, secret) = rest.split_once('.')?;
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty())
        .then_some((id, secret))
}

/// Keyed hashes (HMAC-SHA-256) under a key derived from the secret key for
/// one purpose, so one purpose's hashes say nothing about another's.
#[derive(Clone)]
pub struct Hasher {
    key: [u8; 32],
}

impl Hasher {
    pub fn new(secret: &[u8], purpose: &str) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"metamcp/");
        mac.update(purpose.as_bytes());
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    pub fn hash(&self, value: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(value.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Compares a value with a stored hash in constant time.
    pub fn matches(&self, value: &str, stored: &str) -> bool {
        self.hash(value).as_bytes().ct_eq(stored.as_bytes()).into()
    }
}

/// Compares two secrets in constant time (for equal lengths).
pub fn secrets_equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(&AuthSettings::default(), &[7u8; 32]).unwrap()
    }

    #[test]
    fn issued_tokens_verify_and_tampering_fails() {
        let t = issuer();
        let (token, claims) = t.issue("u1", "default", "j1").unwrap();
        assert_eq!(t.verify(&token).unwrap(), claims);
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut payload: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&parts[1])
                .unwrap(),
        )
        .unwrap();
        payload["sub"] = "admin".into();
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&payload).unwrap());
        assert_eq!(t.verify(&parts.join(".")), Err(TokenError::Invalid));
    }

    #[test]
    fn alg_none_and_other_keys_are_refused() {
        let t = issuer();
        let (token, _) = t.issue("u1", "default", "j1").unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let none_header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(
            t.verify(&format!("{none_header}.{payload}.")),
            Err(TokenError::Invalid)
        );
        let other = TokenIssuer::new(&AuthSettings::default(), &[8u8; 32]).unwrap();
        assert_eq!(other.verify(&token), Err(TokenError::Invalid));
        assert_eq!(
            t.verify(&"a".repeat(MAX_TOKEN_BYTES + 1)),
            Err(TokenError::TooLarge)
        );
    }

    #[test]
    fn opaque_tokens_split_and_hash_in_constant_time() {
        let (token, id, secret) = new_opaque(API_KEY_PREFIX);
        assert_eq!(split_opaque(API_KEY_PREFIX, &token), Some((&*id, &*secret)));
        assert_eq!(split_opaque(REFRESH_PREFIX, &token), None);
        assert_eq!(split_opaque(API_KEY_PREFIX, "mmk_short.x"), None);
        let h = Hasher::new(b"0123456789abcdef0123456789abcdef", "api-key");
        let stored = h.hash(&secret);
        assert!(h.matches(&secret, &stored));
        assert!(!h.matches("other", &stored));
        let other = Hasher::new(b"0123456789abcdef0123456789abcdef", "refresh");
        assert_ne!(other.hash(&secret), stored);
    }
}
