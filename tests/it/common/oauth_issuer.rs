//! A real outside OAuth 2 / OIDC issuer for tests: `oauth2-mock-server`
//! (installed by `scripts/install-test-deps.sh`) started through
//! `tests/oidc/issuer.mjs` on 127.0.0.1 and a free port. Tokens come from its
//! own `/token` endpoint, with claims and header fields chosen by the test.

use std::{
    io::BufRead as _,
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};

use super::external;

/// A running issuer; stopped when dropped.
pub struct OAuthIssuer {
    child: Child,
    /// Held open: the launcher exits when its stdin closes, so a test that
    /// dies leaves no issuer behind.
    _stdin: ChildStdin,
    /// The exact `iss` of its tokens (`http://localhost:PORT`).
    pub issuer: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    /// The PEM of its first signing key ("k1"): for forging tokens that use
    /// the public key as an HMAC secret.
    pub public_key_pem: String,
    http: reqwest::Client,
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

impl OAuthIssuer {
    /// Starts an issuer, or `None` (after saying so) when the test tools are
    /// not installed outside CI.
    pub fn start(test: &str) -> Option<Self> {
        let module = external("METAMCP_TEST_OAUTH2_MOCK", test)?;
        let node = external("METAMCP_TEST_NODE", test)?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/issuer.mjs");
        let mut child = Command::new(node)
            .arg(script)
            .arg(module)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the oauth2-mock-server launcher");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the launcher's first line");
        let info: Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|_| panic!("the issuer launcher printed {line:?}"));
        let field = |k: &str| info[k].as_str().unwrap_or_default().to_owned();
        Some(Self {
            issuer: field("issuer"),
            token_endpoint: field("token_endpoint"),
            jwks_uri: field("jwks_uri"),
            public_key_pem: field("public_key_pem"),
            child,
            _stdin: stdin,
            http: reqwest::Client::new(),
        })
    }

    /// A token from the issuer's `/token` endpoint (client credentials) for
    /// `audience` with `scope`; `claims` are merged into the payload (a null
    /// removes one) and `header` into the JWT header.
    pub async fn token_with(
        &self,
        audience: &str,
        scope: &str,
        claims: Value,
        header: Value,
    ) -> String {
        let response = self
            .http
            .post(&self.token_endpoint)
            .json(&json!({
                "grant_type": "client_credentials",
                "scope": scope,
                "aud": audience,
                "claims": claims,
                "header": header,
            }))
            .send()
            .await
            .expect("token request");
        assert!(
            response.status().is_success(),
            "token endpoint answered {}",
            response.status()
        );
        let body: Value = response.json().await.expect("token response");
        body["access_token"]
            .as_str()
            .expect("an access_token")
            .to_owned()
    }

    /// A token for `audience` with the given extra claims.
    pub async fn token(&self, audience: &str, claims: Value) -> String {
        self.token_with(audience, "tools:read", claims, json!({}))
            .await
    }

    /// Adds a signing key; the issuer then signs with its keys in turn.
    pub async fn add_key(&self, kid: &str) {
        let response = self
            .http
            .post(format!("{}/test/keys", self.issuer))
            .json(&json!({"kid": kid, "alg": "RS256"}))
            .send()
            .await
            .expect("add a key");
        assert!(response.status().is_success());
    }

    /// A token signed with the key `kid` (the issuer rotates among its keys,
    /// so this asks until that key signed one).
    pub async fn token_signed_by(&self, kid: &str, audience: &str, claims: Value) -> String {
        for _ in 0..16 {
            let token = self.token(audience, claims.clone()).await;
            let header = jsonwebtoken::decode_header(&token).expect("a JWT");
            if header.kid.as_deref() == Some(kid) {
                return token;
            }
        }
        panic!("the issuer never signed with key {kid}");
    }
}

impl Drop for OAuthIssuer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
