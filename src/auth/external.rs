//! Tokens from outside issuers: metamcp as an OAuth 2.1 resource server.
//!
//! Each configured issuer (`META_MCP_OAUTH_ISSUERS`) names its exact `iss`,
//! where its signing keys are (a JWKS URL, or discovered from its metadata),
//! the audience its tokens must carry (metamcp's resource URI by default),
//! the algorithms it may sign with, and how its claims map onto a metamcp
//! identity (user name, roles, scopes, tenant).
//!
//! [`ExternalVerifier::verify`] reads the token's unverified `iss` only to
//! pick the issuer's settings and keys, then verifies everything: size,
//! signature, the algorithm pinned for that issuer (so `none` and HS/RS
//! confusion are refused), `exp`/`nbf`/`iat` with a small leeway, the exact
//! issuer and the audience. Keys are fetched through the outbound guard,
//! cached for a TTL, and refetched on an unknown `kid` at most once per
//! interval per issuer, with concurrent refetches coalesced into one.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation, errors::ErrorKind, jwk};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::outbound::{self, OutboundPolicy};

/// The longest token accepted, checked before anything is parsed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 60;
/// The largest JWKS or metadata document read from an issuer.
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
/// Keys kept per issuer at most (a JWKS with more is cut).
const MAX_KEYS: usize = 64;

/// One outside issuer, as configured (`META_MCP_OAUTH_ISSUERS`, or
/// `oauth_issuers` beside `mcpServers` in the config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// Where its signing keys are; discovered from
    /// `{issuer}/.well-known/openid-configuration` (then
    /// `/.well-known/oauth-authorization-server`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Accepted `aud` values; metamcp's resource URI (`META_MCP_PUBLIC_URL`)
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<OneOrMany>,
    /// The signing algorithms accepted from this issuer (default RS256).
    /// Asymmetric only: `none` and HS* are refused for a JWKS issuer.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Claim (dotted path) holding the user name; default
    /// `preferred_username`, then `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_claim: Option<String>,
    /// Claim (dotted path, e.g. `realm_access.roles`) holding the roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles_claim: Option<String>,
    /// Claim (dotted path) holding the scopes; default `scope` (space
    /// separated), then `scp` (array or string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_claim: Option<String>,
    /// Claim (dotted path) naming the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_claim: Option<String>,
    /// Outside role → metamcp role. Roles not listed are ignored, so a
    /// token cannot name a metamcp role the operator did not map.
    #[serde(default)]
    pub role_map: BTreeMap<String, String>,
    /// The role given when no role of the token maps to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_role: Option<String>,
}

/// A JSON string or list of strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}

impl IssuerConfig {
    /// Parses the `META_MCP_OAUTH_ISSUERS` value: a JSON list of issuers (or
    /// one issuer object), each checked.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Vec::new());
        }
        // The config file hands lists over as their items joined by commas.
        let list = if text.starts_with('[') {
            text.to_owned()
        } else {
            format!("[{text}]")
        };
        let issuers: Vec<Self> =
            serde_json::from_str(&list).map_err(|e| format!("not a JSON list of issuers: {e}"))?;
        let mut seen = std::collections::HashSet::new();
        for issuer in &issuers {
            issuer.validate()?;
            if !seen.insert(issuer.issuer.as_str()) {
                return Err(format!("issuer {:?} is listed twice", issuer.issuer));
            }
        }
        Ok(issuers)
    }

    /// Checks one issuer's settings.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.issuer;
        let url =
            url::Url::parse(name).map_err(|e| format!("issuer {name:?} is not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("issuer {name:?} must be an http(s) URL"));
        }
        if let Some(jwks) = &self.jwks_uri {
            let u = url::Url::parse(jwks)
                .map_err(|e| format!("{name}: jwks_uri {jwks:?} is not a URL ({e})"))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(format!("{name}: jwks_uri must be an http(s) URL"));
            }
        }
        self.pinned_algorithms()?;
        if let Some(aud) = &self.audience
            && aud.to_vec().iter().any(|a| a.trim().is_empty())
        {
            return Err(format!("{name}: audience must not be empty"));
        }
        Ok(())
    }

    /// The algorithms accepted from this issuer: asymmetric ones only.
    fn pinned_algorithms(&self) -> Result<Vec<Algorithm>, String> {
        if self.algorithms.is_empty() {
            return Err(format!("{}: algorithms must not be empty", self.issuer));
        }
        self.algorithms
            .iter()
            .map(|a| {
                let alg: Algorithm = a.parse().map_err(|_| {
                    format!(
                        "{}: algorithm {a:?} is not supported (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)",
                        self.issuer
                    )
                })?;
                if alg.family() == AlgorithmFamily::Hmac {
                    return Err(format!(
                        "{}: {a} is a shared-secret algorithm; an issuer publishing a JWKS signs with a private key",
                        self.issuer
                    ));
                }
                Ok(alg)
            })
            .collect()
    }
}

/// Who an outside token says its bearer is, after full verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    pub issuer: String,
    pub subject: String,
    pub username: String,
    /// metamcp roles (mapped by the issuer's `role_map`, or its
    /// `default_role`).
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub tenant: Option<String>,
    pub expires_at: time::OffsetDateTime,
    /// The token's `jti`, when it has one.
    pub token_id: Option<String>,
}

/// Why an outside token was refused. Messages name the reason, never key
/// material or the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExternalAuthError {
    #[error("token larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token issuer is not trusted")]
    UnknownIssuer,
    #[error("token signing algorithm is not allowed for its issuer")]
    AlgorithmNotAllowed,
    #[error("token signing key is not among the issuer's keys")]
    UnknownKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued in the future")]
    IssuedInFuture,
    #[error("token audience does not include this resource")]
    WrongAudience,
    #[error("token issuer does not match")]
    WrongIssuer,
    #[error("token lacks the {0} claim")]
    MissingClaim(String),
    #[error("token claim {0} has an unexpected type")]
    BadClaim(String),
    /// The issuer's keys could not be had (network, bad document); the
    /// token may be fine.
    #[error("the issuer's signing keys are unavailable: {0}")]
    KeysUnavailable(String),
}

impl ExternalAuthError {
    /// True when the token itself was not judged (the keys could not be
    /// fetched): a 503 rather than a 401 may be fitting.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::KeysUnavailable(_))
    }
}

/// Tuning of the verifier; the defaults suit production.
#[derive(Debug, Clone)]
pub struct VerifierOptions {
    /// How long a fetched JWKS is used before it is fetched again.
    pub jwks_ttl: Duration,
    /// The least time between two fetches of one issuer's keys caused by an
    /// unknown `kid` (or retried after a failure).
    pub min_refetch_interval: Duration,
    /// Timeout of one metadata or JWKS request.
    pub fetch_timeout: Duration,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        Self {
            jwks_ttl: Duration::from_secs(3600),
            min_refetch_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(10),
        }
    }
}

/// Verifies tokens of the configured outside issuers.
pub struct ExternalVerifier {
    issuers: HashMap<String, Arc<Issuer>>,
    http: reqwest::Client,
    policy: OutboundPolicy,
    options: VerifierOptions,
}

impl std::fmt::Debug for ExternalVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalVerifier")
            .field("issuers", &self.issuers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// One issuer's settings and key cache.
struct Issuer {
    config: IssuerConfig,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    /// The keys in use (swapped whole after a fetch).
    keys: parking_lot::RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching: concurrent fetches wait for the one in progress
    /// and then use its result. Holds the time of the last attempt.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    /// The JWKS URL found by discovery.
    discovered_jwks: parking_lot::Mutex<Option<String>>,
    fetches: AtomicU64,
}

/// A fetched JWKS, usable keys only.
struct KeySet {
    fetched: Instant,
    keys: Vec<Key>,
}

struct Key {
    kid: Option<String>,
    /// The `alg` the JWK declares, if any: a token must then use exactly it.
    alg: Option<Algorithm>,
    family: AlgorithmFamily,
    key: DecodingKey,
}

impl KeySet {
    /// Keys a token with this `kid` and `alg` may be checked against.
    fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<&Key> {
        self.keys
            .iter()
            .filter(|k| k.family == alg.family() && k.alg.is_none_or(|a| a == alg))
            .filter(|k| match kid {
                Some(kid) => k.kid.as_deref() == Some(kid),
                None => true,
            })
            .collect()
    }
}

impl ExternalVerifier {
    /// Builds a verifier. `default_audience` is metamcp's resource URI
    /// (from `META_MCP_PUBLIC_URL`), used for issuers without `audience`;
    /// `http` must be the guarded client of [`crate::outbound::client`].
    pub fn new(
        issuers: &[IssuerConfig],
        default_audience: Option<&str>,
        http: reqwest::Client,
        policy: OutboundPolicy,
        options: VerifierOptions,
    ) -> Result<Self, String> {
        let mut map = HashMap::new();
        for config in issuers {
            config.validate()?;
            let audiences = match &config.audience {
                Some(a) => a.to_vec(),
                None => {
                    let base = default_audience
                        .map(|a| a.trim_end_matches('/').to_owned())
                        .ok_or_else(|| {
                            format!(
                                "{}: no audience; set META_MCP_PUBLIC_URL (metamcp's resource URI) or the issuer's audience",
                                config.issuer
                            )
                        })?;
                    // The gateway, and its MCP endpoint as the protected
                    // resource metadata names it.
                    vec![format!("{base}/mcp"), base]
                }
            };
            let algorithms = config.pinned_algorithms()?;
            map.insert(
                config.issuer.clone(),
                Arc::new(Issuer {
                    config: config.clone(),
                    audiences,
                    algorithms,
                    keys: parking_lot::RwLock::new(None),
                    fetching: tokio::sync::Mutex::new(None),
                    discovered_jwks: parking_lot::Mutex::new(None),
                    fetches: AtomicU64::new(0),
                }),
            );
        }
        Ok(Self {
            issuers: map,
            http,
            policy,
            options,
        })
    }

    /// True when no issuer is configured.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// The configured issuers (for the protected-resource metadata's
    /// `authorization_servers`).
    pub fn issuers(&self) -> Vec<String> {
        let mut names: Vec<String> = self.issuers.keys().cloned().collect();
        names.sort();
        names
    }

    /// Whether the token's unverified `iss` is one of the configured
    /// issuers: a cheap routing test (our own JWT or an outside one?), not
    /// a verification.
    pub fn handles(&self, token: &str) -> bool {
        token.len() <= MAX_TOKEN_BYTES
            && unverified_issuer(token).is_some_and(|iss| self.issuers.contains_key(&iss))
    }

    /// How many times the keys of `issuer` were fetched (successfully or
    /// not): for metrics and tests.
    pub fn key_fetches(&self, issuer: &str) -> u64 {
        self.issuers
            .get(issuer)
            .map_or(0, |i| i.fetches.load(Ordering::Relaxed))
    }

    /// Verifies a bearer token fully and maps its claims.
    pub async fn verify(&self, token: &str) -> Result<ExternalIdentity, ExternalAuthError> {
        self.verify_for(token, None).await
    }

    /// As [`ExternalVerifier::verify`], also accepting `resource` (the exact
    /// URI of the endpoint called, e.g. `https://gw/mcp/PROFILE`) as the
    /// audience.
    pub async fn verify_for(
        &self,
        token: &str,
        resource: Option<&str>,
    ) -> Result<ExternalIdentity, ExternalAuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ExternalAuthError::TooLarge);
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| ExternalAuthError::Malformed)?;
        let iss = unverified_issuer(token).ok_or(ExternalAuthError::Malformed)?;
        let issuer = self
            .issuers
            .get(&iss)
            .ok_or(ExternalAuthError::UnknownIssuer)?;
        let alg = header.alg;
        if !issuer.algorithms.contains(&alg) {
            return Err(ExternalAuthError::AlgorithmNotAllowed);
        }
        let kid = header.kid.as_deref();
        let keys = self.keys_for(issuer, kid, alg).await?;

        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        let mut audiences = issuer.audiences.clone();
        audiences.extend(resource.map(str::to_owned));
        validation.set_audience(&audiences);
        validation.set_issuer(&[&issuer.config.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);

        let mut last = ExternalAuthError::UnknownKey;
        for key in keys.candidates(kid, alg) {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return issuer.identity(data.claims),
                Err(e) => {
                    last = map_jwt_error(e.kind());
                    // A bad signature may be another key's token (no kid);
                    // any other failure is about the token itself.
                    if last != ExternalAuthError::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    /// The issuer's keys, fetched when absent or stale, or refetched (rate
    /// limited) when none fits the token's `kid`.
    async fn keys_for(
        &self,
        issuer: &Issuer,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<KeySet>, ExternalAuthError> {
        let current = issuer.keys.read().clone();
        if let Some(set) = &current
            && set.fetched.elapsed() < self.options.jwks_ttl
            && !set.candidates(kid, alg).is_empty()
        {
            return Ok(set.clone());
        }
        let mut last_attempt = issuer.fetching.lock().await;
        // Another task may have fetched while this one waited.
        let now_set = issuer.keys.read().clone();
        let refreshed = match (&current, &now_set) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            (None, Some(_)) => true,
            _ => false,
        };
        if let Some(set) = &now_set
            && refreshed
            && !set.candidates(kid, alg).is_empty()
        {
            return Ok(set.clone());
        }
        // Whatever the reason (no keys, stale keys, an unknown kid), one
        // issuer's keys are fetched at most once per interval.
        let recently =
            last_attempt.is_some_and(|t| t.elapsed() < self.options.min_refetch_interval);
        if recently {
            // Rate limited: answer with what is known.
            return match now_set {
                Some(set) if !set.candidates(kid, alg).is_empty() => Ok(set),
                Some(_) => Err(ExternalAuthError::UnknownKey),
                None => Err(ExternalAuthError::KeysUnavailable(
                    "the last fetch failed; retrying later".into(),
                )),
            };
        }
        *last_attempt = Some(Instant::now());
        issuer.fetches.fetch_add(1, Ordering::Relaxed);
        match self.fetch_keys(issuer).await {
            Ok(set) => {
                let set = Arc::new(set);
                *issuer.keys.write() = Some(set.clone());
                if set.candidates(kid, alg).is_empty() {
                    Err(ExternalAuthError::UnknownKey)
                } else {
                    Ok(set)
                }
            }
            Err(reason) => {
                tracing::warn!(issuer = %issuer.config.issuer, error = %reason, "cannot fetch the issuer's signing keys");
                match now_set {
                    // Stale keys beat none while the issuer is unreachable.
                    Some(set) if !set.candidates(kid, alg).is_empty() => Ok(set),
                    Some(_) => Err(ExternalAuthError::UnknownKey),
                    None => Err(ExternalAuthError::KeysUnavailable(reason)),
                }
            }
        }
    }

    /// Fetches (discovering the JWKS URL when needed) and parses the keys.
    async fn fetch_keys(&self, issuer: &Issuer) -> Result<KeySet, String> {
        let jwks_uri = match &issuer.config.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let known = issuer.discovered_jwks.lock().clone();
                match known {
                    Some(uri) => uri,
                    None => {
                        let uri = self.discover(&issuer.config.issuer).await?;
                        *issuer.discovered_jwks.lock() = Some(uri.clone());
                        uri
                    }
                }
            }
        };
        let document = self.get_json(&jwks_uri).await?;
        let keys = parse_jwks(&document)?;
        tracing::debug!(issuer = %issuer.config.issuer, keys = keys.len(), "issuer signing keys fetched");
        Ok(KeySet {
            fetched: Instant::now(),
            keys,
        })
    }

    /// Finds the JWKS URL in the issuer's OpenID or OAuth metadata; the
    /// metadata must name the same issuer (RFC 8414 §3.3).
    async fn discover(&self, issuer: &str) -> Result<String, String> {
        let base = issuer.trim_end_matches('/');
        let mut candidates = vec![format!("{base}/.well-known/openid-configuration")];
        // RFC 8414: the well-known segment goes before the issuer's path.
        if let Ok(url) = url::Url::parse(base) {
            let path = url.path().trim_end_matches('/');
            let origin = url.origin().ascii_serialization();
            candidates.push(format!(
                "{origin}/.well-known/oauth-authorization-server{path}"
            ));
        }
        let mut last_error = String::from("no metadata document");
        for url in candidates {
            match self.get_json(&url).await {
                Ok(doc) => {
                    let named = doc.get("issuer").and_then(Value::as_str);
                    if named != Some(issuer) {
                        last_error = format!("metadata at {url} names another issuer");
                        continue;
                    }
                    return doc
                        .get("jwks_uri")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| format!("metadata at {url} has no jwks_uri"));
                }
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// One guarded GET of a JSON document.
    async fn get_json(&self, raw: &str) -> Result<Value, String> {
        let shown = outbound::redact_url(raw);
        let url = self
            .policy
            .check_url(raw)
            .map_err(|e| format!("{shown}: {e}"))?;
        let response = self
            .http
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .timeout(self.options.fetch_timeout)
            .send()
            .await
            .map_err(|e| format!("{shown}: {}", describe_reqwest(&e)))?;
        if !response.status().is_success() {
            return Err(format!("{shown}: HTTP {}", response.status().as_u16()));
        }
        let body = outbound::read_limited(response, MAX_DOCUMENT_BYTES)
            .await
            .map_err(|e| format!("{shown}: {e}"))?;
        serde_json::from_slice(&body).map_err(|_| format!("{shown}: not a JSON document"))
    }
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    // The source chain carries the outbound guard's refusal, if any.
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<outbound::OutboundError>() {
            text = refused.to_string();
        }
        source = s.source();
    }
    text
}

/// Usable signature keys of a JWKS document; encryption keys, symmetric
/// keys and keys of unknown types are skipped.
fn parse_jwks(document: &Value) -> Result<Vec<Key>, String> {
    let list = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the JWKS has no keys list")?;
    let mut keys = Vec::new();
    for raw in list.iter().take(MAX_KEYS) {
        let Ok(parsed) = serde_json::from_value::<jwk::Jwk>(raw.clone()) else {
            continue;
        };
        if matches!(
            parsed.common.public_key_use,
            Some(jwk::PublicKeyUse::Encryption)
        ) {
            continue;
        }
        let family = match &parsed.algorithm {
            jwk::AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
            jwk::AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
            jwk::AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
            // A shared secret has no place in a public key set.
            _ => continue,
        };
        let alg = match raw.get("alg").and_then(Value::as_str) {
            None => None,
            Some(declared) => match declared.parse::<Algorithm>() {
                Ok(a) if a.family() == family => Some(a),
                // Declared for another use (RSA-OAEP, ...) or inconsistent.
                _ => continue,
            },
        };
        let Ok(key) = DecodingKey::from_jwk(&parsed) else {
            continue;
        };
        keys.push(Key {
            kid: parsed.common.key_id.clone(),
            alg,
            family,
            key,
        });
    }
    Ok(keys)
}

fn map_jwt_error(kind: &ErrorKind) -> ExternalAuthError {
    match kind {
        ErrorKind::InvalidSignature => ExternalAuthError::BadSignature,
        ErrorKind::ExpiredSignature => ExternalAuthError::Expired,
        ErrorKind::ImmatureSignature => ExternalAuthError::NotYetValid,
        ErrorKind::InvalidAudience => ExternalAuthError::WrongAudience,
        ErrorKind::InvalidIssuer => ExternalAuthError::WrongIssuer,
        ErrorKind::InvalidAlgorithm => ExternalAuthError::AlgorithmNotAllowed,
        ErrorKind::MissingRequiredClaim(c) => ExternalAuthError::MissingClaim(c.clone()),
        ErrorKind::InvalidClaimFormat(c) => ExternalAuthError::BadClaim(c.clone()),
        _ => ExternalAuthError::Malformed,
    }
}

/// The `iss` of a token, unverified: only to choose settings and keys.
fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    jsonwebtoken::dangerous::insecure_decode::<Iss>(token)
        .ok()
        .and_then(|data| data.claims.iss)
}

impl Issuer {
    /// Maps verified claims onto an identity.
    fn identity(&self, claims: Map<String, Value>) -> Result<ExternalIdentity, ExternalAuthError> {
        let claims = Value::Object(claims);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if let Some(iat) = claims.get("iat") {
            let iat = iat
                .as_f64()
                .ok_or_else(|| ExternalAuthError::BadClaim("iat".into()))?;
            if iat > (now + LEEWAY_SECS as i64) as f64 {
                return Err(ExternalAuthError::IssuedInFuture);
            }
        }
        let exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .ok_or_else(|| ExternalAuthError::BadClaim("exp".into()))?;
        let expires_at = time::OffsetDateTime::from_unix_timestamp(exp as i64)
            .map_err(|_| ExternalAuthError::BadClaim("exp".into()))?;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ExternalAuthError::BadClaim("sub".into()))?
            .to_owned();
        let username = match &self.config.username_claim {
            Some(path) => claim(&claims, path)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| ExternalAuthError::MissingClaim(path.clone()))?
                .to_owned(),
            None => claims
                .get("preferred_username")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or(&subject)
                .to_owned(),
        };
        let outside_roles = self
            .config
            .roles_claim
            .as_deref()
            .and_then(|path| claim(&claims, path))
            .map(strings)
            .unwrap_or_default();
        let mut roles: Vec<String> = Vec::new();
        for role in &outside_roles {
            if let Some(mapped) = self.config.role_map.get(role)
                && !roles.contains(mapped)
            {
                roles.push(mapped.clone());
            }
        }
        if roles.is_empty()
            && let Some(default) = &self.config.default_role
        {
            roles.push(default.clone());
        }
        let scopes = match &self.config.scope_claim {
            Some(path) => claim(&claims, path).map(strings).unwrap_or_default(),
            None => claims
                .get("scope")
                .or_else(|| claims.get("scp"))
                .map(strings)
                .unwrap_or_default(),
        };
        let tenant = self
            .config
            .tenant_claim
            .as_deref()
            .and_then(|path| claim(&claims, path))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let token_id = claims.get("jti").and_then(Value::as_str).map(str::to_owned);
        Ok(ExternalIdentity {
            issuer: self.config.issuer.clone(),
            subject,
            username,
            roles,
            scopes,
            tenant,
            expires_at,
            token_id,
        })
    }
}

/// The value at a dotted path (`realm_access.roles`). A key that itself
/// contains dots (as some issuers use URLs as claim names) is tried whole
/// first.
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut current = claims;
    for part in path.split('.') {
        current = current.get(part)?;
    }
    Some(current)
}

/// A list of strings from an array, or from a space- (or comma-) separated
/// string.
fn strings(value: &Value) -> Vec<String> {
    let mut out: Vec<String> = match value {
        Value::String(s) => s
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn issuer(extra: Value) -> IssuerConfig {
        let mut doc = json!({"issuer": "https://idp.example.com"});
        if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        serde_json::from_value(doc).unwrap()
    }

    #[test]
    fn parses_issuer_lists_and_refuses_weak_algorithms() {
        let list = IssuerConfig::parse_list(
            r#"[{"issuer": "https://a.example", "roles_claim": "realm_access.roles", "role_map": {"ops": "operator"}}]"#,
        )
        .unwrap();
        assert_eq!(list[0].algorithms, ["RS256"]);
        // The config file's way: items joined by commas.
        let two = IssuerConfig::parse_list(
            r#"{"issuer": "https://a.example"},{"issuer": "https://b.example", "algorithms": ["ES256"]}"#,
        )
        .unwrap();
        assert_eq!(two.len(), 2);
        for bad in [
            r#"[{"issuer": "https://a.example", "algorithms": ["HS256"]}]"#,
            r#"[{"issuer": "https://a.example", "algorithms": ["none"]}]"#,
            r#"[{"issuer": "https://a.example", "algorithms": []}]"#,
            r#"[{"issuer": "not a url"}]"#,
            r#"[{"issuer": "https://a.example", "jwks_uri": "file:///etc/keys"}]"#,
            r#"[{"issuer": "https://a.example", "typo_claim": "x"}]"#,
            r#"[{"issuer": "https://a.example"}, {"issuer": "https://a.example"}]"#,
        ] {
            assert!(IssuerConfig::parse_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_issuer_needs_an_audience() {
        let http = reqwest::Client::new();
        let policy = OutboundPolicy {
            allow_loopback: true,
            allow_private: true,
            allow_link_local: false,
        };
        let cfg = issuer(json!({}));
        assert!(
            ExternalVerifier::new(
                std::slice::from_ref(&cfg),
                None,
                http.clone(),
                policy.clone(),
                Default::default()
            )
            .is_err()
        );
        let v = ExternalVerifier::new(
            &[cfg],
            Some("https://gw.example/"),
            http,
            policy,
            Default::default(),
        )
        .unwrap();
        assert_eq!(
            v.issuers["https://idp.example.com"].audiences,
            ["https://gw.example/mcp", "https://gw.example"]
        );
    }

    fn identity_of(
        cfg: IssuerConfig,
        claims: Value,
    ) -> Result<ExternalIdentity, ExternalAuthError> {
        let issuer = Issuer {
            audiences: vec![],
            algorithms: vec![Algorithm::RS256],
            config: cfg,
            keys: Default::default(),
            fetching: Default::default(),
            discovered_jwks: Default::default(),
            fetches: Default::default(),
        };
        let Value::Object(map) = claims else {
            unreachable!()
        };
        issuer.identity(map)
    }

    #[test]
    fn maps_claims() {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let cfg = issuer(json!({
            "roles_claim": "realm_access.roles",
            "tenant_claim": "org",
            "role_map": {"mcp-admins": "admin", "mcp-users": "user"},
            "default_role": "viewer",
        }));
        let id = identity_of(
            cfg.clone(),
            json!({"sub": "u1", "exp": now + 60, "iat": now, "preferred_username": "alice",
                   "realm_access": {"roles": ["mcp-users", "other", "mcp-admins"]},
                   "scope": "tools:read tools:execute", "org": "acme", "jti": "t-1"}),
        )
        .unwrap();
        assert_eq!(id.username, "alice");
        assert_eq!(id.roles, ["user", "admin"]);
        assert_eq!(id.scopes, ["tools:read", "tools:execute"]);
        assert_eq!(id.tenant.as_deref(), Some("acme"));
        assert_eq!(id.token_id.as_deref(), Some("t-1"));
        assert_eq!(id.expires_at.unix_timestamp(), now + 60);
        // No mapped role: the default; no username claim: sub; scp arrays.
        let id = identity_of(
            cfg,
            json!({"sub": "u2", "exp": now + 60, "realm_access": {"roles": ["admin"]}, "scp": ["a", "b"]}),
        )
        .unwrap();
        assert_eq!(id.username, "u2");
        assert_eq!(
            id.roles,
            ["viewer"],
            "an unmapped outside role grants nothing"
        );
        assert_eq!(id.scopes, ["a", "b"]);
        // iat in the future beyond the leeway.
        let e = identity_of(
            issuer(json!({})),
            json!({"sub": "u", "exp": now + 600, "iat": now + 300}),
        )
        .unwrap_err();
        assert_eq!(e, ExternalAuthError::IssuedInFuture);
        // A configured username claim must be there.
        let e = identity_of(
            issuer(json!({"username_claim": "email"})),
            json!({"sub": "u", "exp": now + 60}),
        )
        .unwrap_err();
        assert_eq!(e, ExternalAuthError::MissingClaim("email".into()));
    }

    #[test]
    fn dotted_claims_and_string_lists() {
        let v = json!({"a": {"b": {"c": ["x"]}}, "https://x.example/roles": "r1, r2"});
        assert_eq!(claim(&v, "a.b.c"), Some(&json!(["x"])));
        assert_eq!(
            strings(claim(&v, "https://x.example/roles").unwrap()),
            ["r1", "r2"]
        );
        assert_eq!(claim(&v, "a.x"), None);
    }

    #[tokio::test]
    async fn refuses_before_any_fetch() {
        let v = ExternalVerifier::new(
            &[issuer(json!({"jwks_uri": "http://127.0.0.1:9/jwks"}))],
            Some("https://gw.example"),
            reqwest::Client::new(),
            OutboundPolicy {
                allow_loopback: true,
                allow_private: true,
                allow_link_local: false,
            },
            Default::default(),
        )
        .unwrap();
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(v.verify(&big).await, Err(ExternalAuthError::TooLarge));
        assert_eq!(v.verify("x.y").await, Err(ExternalAuthError::Malformed));
        let b64 = |v: Value| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let none = format!(
            "{}.{}.",
            b64(json!({"alg": "none"})),
            b64(json!({"iss": "https://idp.example.com", "sub": "x"}))
        );
        assert_eq!(v.verify(&none).await, Err(ExternalAuthError::Malformed));
        let other = format!(
            "{}.{}.sig",
            b64(json!({"alg": "RS256"})),
            b64(json!({"iss": "https://evil.example", "sub": "x"}))
        );
        assert_eq!(
            v.verify(&other).await,
            Err(ExternalAuthError::UnknownIssuer)
        );
        let hs = format!(
            "{}.{}.sig",
            b64(json!({"alg": "HS256"})),
            b64(json!({"iss": "https://idp.example.com", "sub": "x"}))
        );
        assert_eq!(
            v.verify(&hs).await,
            Err(ExternalAuthError::AlgorithmNotAllowed)
        );
        assert_eq!(v.key_fetches("https://idp.example.com"), 0);
        assert!(v.handles(&hs) && !v.handles(&other));
    }

    #[test]
    fn jwks_parsing_keeps_signature_keys_only() {
        let doc = json!({"keys": [
            {"kty": "RSA", "kid": "sig", "alg": "RS256", "use": "sig", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": "sXch", "e": "AQAB"},
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "weird"}
        ]});
        let keys = parse_jwks(&doc).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("sig"));
        assert!(parse_jwks(&json!({"nokeys": []})).is_err());
    }
}
