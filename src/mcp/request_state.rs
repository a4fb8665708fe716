//! The gateway's own `requestState` of 2026-07-28 multi-round-trip requests
//! (SEP-2322). When an upstream answers a 2026-07-28 caller with
//! `input_required`, the caller gets the upstream's input requests and, in
//! place of the upstream's `requestState`, a sealed state of the gateway:
//! the upstream's state, the tool it belongs to, the caller's principal, a
//! digest of the call's arguments and an expiry, authenticated with
//! HMAC-SHA-256. The caller's retry hands it back; a forged, altered,
//! expired or foreign state is refused (`-32602`), so the upstream only
//! ever sees its own state again, for the call and the caller it issued it
//! to.
//!
//! The state is integrity-protected, not encrypted: the caller could read
//! the upstream's state anyway when talking to the upstream directly.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rmcp::model::JsonObject;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::cursor::now;
use crate::auth::Principal;

/// How long a caller has to answer the input requests and retry.
const LIFETIME: Duration = Duration::from_secs(600);

/// What a sealed state holds.
#[derive(Serialize, Deserialize)]
struct Payload {
    /// The upstream's own `requestState`, if it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<String>,
    /// The tool as the caller named it (with the endpoint's profile).
    tool: String,
    /// The caller: tenant and user.
    tenant: String,
    user: String,
    /// SHA-256 of the call's arguments (canonical JSON), base64url.
    args: String,
    /// Unix seconds after which the state is refused.
    expires: u64,
}

/// Why a state was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("invalid requestState (malformed)")]
    Malformed,
    #[error("invalid requestState (forged or altered)")]
    Forged,
    #[error("invalid requestState (issued for another call or caller)")]
    Foreign,
    #[error("requestState expired; call the tool again without it")]
    Expired,
}

/// Seals and opens request states. The key derives from the deployment's
/// secret key (`cursor::derive_key`), so a client's retry may reach any
/// replica: the state carries everything the retry needs.
pub struct StateSealer {
    key: [u8; 32],
}

impl Default for StateSealer {
    /// A random key: states open only in this process (tests).
    fn default() -> Self {
        Self {
            key: super::cursor::process_key(),
        }
    }
}

impl StateSealer {
    /// A key derived from the deployment's secret key: a retry is accepted
    /// by whichever replica receives it (the state holds everything the
    /// retry needs; nothing of it waits in the replica that issued it).
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            key: super::cursor::derive_key(secret, "mcp request states v1"),
        }
    }
}

fn digest(arguments: Option<&JsonObject>) -> String {
    // serde_json's maps are ordered by key: the same arguments give the
    // same bytes.
    let json = serde_json::to_string(&arguments.cloned().unwrap_or_default()).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(Sha256::digest(json.as_bytes()))
}

impl StateSealer {
    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    /// The gateway's state for an `input_required` result of `tool`, called
    /// by `principal` with `arguments`, holding the upstream's `state`.
    pub fn seal(
        &self,
        state: Option<String>,
        tool: &str,
        principal: &Principal,
        arguments: Option<&JsonObject>,
    ) -> String {
        self.seal_until(
            state,
            tool,
            principal,
            arguments,
            now() + LIFETIME.as_secs(),
        )
    }

    fn seal_until(
        &self,
        state: Option<String>,
        tool: &str,
        principal: &Principal,
        arguments: Option<&JsonObject>,
        expires: u64,
    ) -> String {
        let payload = Payload {
            state,
            tool: tool.to_owned(),
            tenant: principal.tenant_id.to_string(),
            user: principal.user_id.to_string(),
            args: digest(arguments),
            expires,
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        format!(
            "{body}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    /// The upstream's state inside `sealed`, if `sealed` was issued by this
    /// gateway for this `tool`, `principal` and `arguments`, and has not
    /// expired.
    pub fn open(
        &self,
        sealed: &str,
        tool: &str,
        principal: &Principal,
        arguments: Option<&JsonObject>,
    ) -> Result<Option<String>, Refused> {
        let (body, tag) = sealed.split_once('.').ok_or(Refused::Malformed)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| Refused::Forged)?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        // verify_slice compares in constant time.
        mac.verify_slice(&tag).map_err(|_| Refused::Forged)?;
        let payload: Payload = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(Refused::Malformed)?;
        if payload.tool != tool
            || payload.tenant != *principal.tenant_id
            || payload.user != *principal.user_id
            || payload.args != digest(arguments)
        {
            return Err(Refused::Foreign);
        }
        if payload.expires < now() {
            return Err(Refused::Expired);
        }
        Ok(payload.state)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn principal(user: &str) -> Principal {
        let mut p = Principal::nobody();
        p.user_id = Arc::from(user);
        p.tenant_id = Arc::from("default");
        p
    }

    fn args(n: i64) -> JsonObject {
        serde_json::json!({"n": n})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn a_state_opens_for_its_call_and_caller_only() {
        let sealer = StateSealer::default();
        let ada = principal("ada");
        let sealed = sealer.seal(Some("up-state".into()), "t", &ada, Some(&args(1)));
        assert_eq!(
            sealer.open(&sealed, "t", &ada, Some(&args(1))),
            Ok(Some("up-state".into()))
        );
        assert_eq!(
            sealer.open(&sealed, "t", &principal("bob"), Some(&args(1))),
            Err(Refused::Foreign)
        );
        assert_eq!(
            sealer.open(&sealed, "other", &ada, Some(&args(1))),
            Err(Refused::Foreign)
        );
        assert_eq!(
            sealer.open(&sealed, "t", &ada, Some(&args(2))),
            Err(Refused::Foreign)
        );
        // Another gateway process (key) never accepts it.
        assert_eq!(
            StateSealer::default().open(&sealed, "t", &ada, Some(&args(1))),
            Err(Refused::Forged)
        );
    }

    #[test]
    fn replicas_sharing_the_secret_key_open_each_others_states() {
        let ada = principal("ada");
        let issuer = StateSealer::from_secret(b"the deployment's secret key, 32+ bytes");
        let sealed = issuer.seal(Some("up".into()), "t", &ada, None);
        let other_replica = StateSealer::from_secret(b"the deployment's secret key, 32+ bytes");
        assert_eq!(
            other_replica.open(&sealed, "t", &ada, None),
            Ok(Some("up".into()))
        );
        let other_deployment = StateSealer::from_secret(b"another deployment's secret key!!");
        assert_eq!(
            other_deployment.open(&sealed, "t", &ada, None),
            Err(Refused::Forged)
        );
        // Not the signing key itself: a state's tag is no token's.
        assert_ne!(
            issuer.key.as_slice(),
            b"the deployment's secret key, 32+ bytes".as_slice()
        );
    }

    #[test]
    fn tampered_and_expired_states_are_refused() {
        let sealer = StateSealer::default();
        let ada = principal("ada");
        let sealed = sealer.seal(None, "t", &ada, None);
        assert_eq!(sealer.open(&sealed, "t", &ada, None), Ok(None));
        assert_eq!(
            sealer.open(&format!("{sealed}-TAMPERED"), "t", &ada, None),
            Err(Refused::Forged)
        );
        assert_eq!(
            sealer.open("no-dot", "t", &ada, None),
            Err(Refused::Malformed)
        );
        let (body, tag) = sealed.split_once('.').unwrap();
        let mut altered = body.to_owned();
        altered.insert(0, 'A');
        assert_eq!(
            sealer.open(&format!("{altered}.{tag}"), "t", &ada, None),
            Err(Refused::Forged)
        );
        let old = sealer.seal_until(None, "t", &ada, None, now() - 1);
        assert_eq!(sealer.open(&old, "t", &ada, None), Err(Refused::Expired));
    }
}
