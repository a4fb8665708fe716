//! Tokens of a real outside issuer (oauth2-mock-server): the verifier
//! fetches its keys through the outbound guard and accepts its tokens only
//! with the right issuer, audience, algorithm, signature and times.

use std::time::Duration;

use base64::Engine as _;
use metamcp::{
    auth::external::{
        ExternalAuthError, ExternalVerifier, IssuerConfig, OneOrMany, VerifierOptions,
    },
    config::Settings,
    outbound::{self, OutboundPolicy},
};
use serde_json::{Value, json};

use crate::common::oauth_issuer::{OAuthIssuer, now};

/// metamcp's resource URI in these tests: the audience tokens must carry.
const RESOURCE: &str = "https://gateway.test";

fn config(issuer: &OAuthIssuer) -> IssuerConfig {
    serde_json::from_value(json!({
        "issuer": issuer.issuer,
        "roles_claim": "realm_access.roles",
        "role_map": {"mcp-admins": "admin", "mcp-users": "user"},
        "default_role": "viewer",
        "tenant_claim": "org",
    }))
    .unwrap()
}

fn verifier_with(configs: &[IssuerConfig], options: VerifierOptions) -> ExternalVerifier {
    let settings = Settings::default();
    ExternalVerifier::new(
        configs,
        Some(RESOURCE),
        outbound::client(&settings.outbound),
        OutboundPolicy::from_settings(&settings.outbound),
        options,
    )
    .expect("verifier")
}

fn verifier(issuer: &OAuthIssuer) -> ExternalVerifier {
    verifier_with(&[config(issuer)], VerifierOptions::default())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("base64url")
}

/// The payload of a JWT, decoded without any check.
fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&unb64(part)).expect("JSON payload")
}

#[tokio::test]
async fn good_tokens_are_accepted_and_mapped() {
    let Some(idp) = OAuthIssuer::start("good_tokens_are_accepted_and_mapped") else {
        return;
    };
    let v = verifier(&idp);
    let token = idp
        .token_with(
            RESOURCE,
            "tools:read tools:execute",
            json!({"sub": "u-1", "preferred_username": "alice",
                   "realm_access": {"roles": ["mcp-users", "unrelated"]},
                   "org": "acme", "jti": "jti-1"}),
            json!({}),
        )
        .await;
    let id = v.verify(&token).await.expect("a good token");
    assert_eq!(id.issuer, idp.issuer);
    assert_eq!(id.subject, "u-1");
    assert_eq!(id.username, "alice");
    assert_eq!(id.roles, ["user"]);
    assert_eq!(id.scopes, ["tools:read", "tools:execute"]);
    assert_eq!(id.tenant.as_deref(), Some("acme"));
    assert_eq!(id.token_id.as_deref(), Some("jti-1"));
    assert!(id.expires_at.unix_timestamp() > now());
    // Keys were discovered from the issuer's metadata and fetched once.
    assert_eq!(v.key_fetches(&idp.issuer), 1);

    // An audience list that contains the resource is fine; no mapped role
    // gives the default role.
    let token = idp
        .token_with(
            RESOURCE,
            "",
            json!({"sub": "u-2", "aud": ["other-api", RESOURCE]}),
            json!({}),
        )
        .await;
    let id = v.verify(&token).await.expect("audience list");
    assert_eq!(id.username, "u-2");
    assert_eq!(id.roles, ["viewer"]);
    assert!(id.scopes.is_empty());
    assert_eq!(v.key_fetches(&idp.issuer), 1, "keys are cached");

    // Within the 60 s leeway, a just-expired token still passes.
    let token = idp
        .token(RESOURCE, json!({"sub": "u-3", "exp": now() - 20}))
        .await;
    v.verify(&token).await.expect("within the leeway");

    // An explicit jwks_uri works as well as discovery, and so does a
    // configured audience.
    let mut explicit = config(&idp);
    explicit.jwks_uri = Some(idp.jwks_uri.clone());
    explicit.audience = Some(OneOrMany::One("api://metamcp".into()));
    let v2 = verifier_with(&[explicit], VerifierOptions::default());
    let token = idp.token("api://metamcp", json!({"sub": "u-4"})).await;
    v2.verify(&token).await.expect("explicit jwks_uri");
    // The MCP endpoint's resource URI is an audience by default, and so is
    // the exact endpoint a caller names.
    let token = idp
        .token(&format!("{RESOURCE}/mcp"), json!({"sub": "u-5"}))
        .await;
    v.verify(&token).await.expect("the /mcp resource");
    let token = idp
        .token(&format!("{RESOURCE}/mcp/team"), json!({"sub": "u-6"}))
        .await;
    assert_eq!(
        v.verify(&token).await,
        Err(ExternalAuthError::WrongAudience)
    );
    v.verify_for(&token, Some(&format!("{RESOURCE}/mcp/team")))
        .await
        .expect("the profile endpoint's resource");
    let token = idp.token(RESOURCE, json!({"sub": "u-4"})).await;
    assert_eq!(
        v2.verify(&token).await,
        Err(ExternalAuthError::WrongAudience)
    );
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let Some(idp) = OAuthIssuer::start("bad_tokens_are_refused") else {
        return;
    };
    let Some(other) = OAuthIssuer::start("bad_tokens_are_refused") else {
        return;
    };
    let v = verifier(&idp);
    let good = idp.token(RESOURCE, json!({"sub": "mallory"})).await;
    v.verify(&good).await.expect("the good token passes");

    let refused = |token: String, want: ExternalAuthError| {
        let v = &v;
        async move {
            assert_eq!(v.verify(&token).await, Err(want), "{:?}", payload(&token));
        }
    };

    // Wrong audience; none at all.
    refused(
        idp.token("https://other.test", json!({"sub": "m"})).await,
        ExternalAuthError::WrongAudience,
    )
    .await;
    refused(
        idp.token(RESOURCE, json!({"sub": "m", "aud": null})).await,
        ExternalAuthError::MissingClaim("aud".into()),
    )
    .await;
    // An issuer nobody configured; and a token of that other issuer that
    // claims to come from the trusted one (both sign with a key "k1").
    refused(
        other.token(RESOURCE, json!({"sub": "m"})).await,
        ExternalAuthError::UnknownIssuer,
    )
    .await;
    refused(
        other
            .token(RESOURCE, json!({"sub": "m", "iss": idp.issuer}))
            .await,
        ExternalAuthError::BadSignature,
    )
    .await;
    // The issuer with a trailing slash is another issuer.
    refused(
        idp.token(
            RESOURCE,
            json!({"sub": "m", "iss": format!("{}/", idp.issuer)}),
        )
        .await,
        ExternalAuthError::UnknownIssuer,
    )
    .await;
    // Expired beyond the leeway; not yet valid; issued in the future.
    refused(
        idp.token(RESOURCE, json!({"sub": "m", "exp": now() - 120}))
            .await,
        ExternalAuthError::Expired,
    )
    .await;
    refused(
        idp.token(RESOURCE, json!({"sub": "m", "nbf": now() + 300}))
            .await,
        ExternalAuthError::NotYetValid,
    )
    .await;
    refused(
        idp.token(RESOURCE, json!({"sub": "m", "iat": now() + 300}))
            .await,
        ExternalAuthError::IssuedInFuture,
    )
    .await;
    refused(
        idp.token(RESOURCE, json!({"sub": "m", "exp": null})).await,
        ExternalAuthError::MissingClaim("exp".into()),
    )
    .await;

    // A tampered payload (more scopes) under the original signature.
    let parts: Vec<&str> = good.split('.').collect();
    let mut claims = payload(&good);
    claims["scope"] = json!("tools:read tools:write users:admin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    );
    refused(tampered, ExternalAuthError::BadSignature).await;
    // A signature from another token.
    let second = idp.token(RESOURCE, json!({"sub": "other"})).await;
    let spliced = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        second.split('.').nth(2).unwrap()
    );
    refused(spliced, ExternalAuthError::BadSignature).await;

    // alg none, in several spellings, with and without a signature part.
    for alg in ["none", "None", "NONE"] {
        let header = b64(json!({"alg": alg, "typ": "JWT", "kid": "k1"})
            .to_string()
            .as_bytes());
        for sig in ["", parts[2]] {
            let token = format!("{header}.{}.{sig}", parts[1]);
            let result = v.verify(&token).await;
            assert!(
                matches!(
                    result,
                    Err(ExternalAuthError::Malformed | ExternalAuthError::AlgorithmNotAllowed)
                ),
                "alg {alg}: {result:?}"
            );
        }
    }

    // HS256 signed with the issuer's RSA public key as the HMAC secret (PEM
    // text and the raw modulus): algorithm confusion.
    let jwks: Value = reqwest::get(&idp.jwks_uri)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let modulus = unb64(jwks["keys"][0]["n"].as_str().expect("an RSA key"));
    for secret in [idp.public_key_pem.as_bytes(), modulus.as_slice()] {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("k1".into());
        let forged = jsonwebtoken::encode(
            &header,
            &payload(&good),
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap();
        refused(forged, ExternalAuthError::AlgorithmNotAllowed).await;
    }

    // Oversized and garbage tokens never reach the parser.
    refused("e".repeat(9000), ExternalAuthError::TooLarge).await;
    refused("not-a-jwt".into(), ExternalAuthError::Malformed).await;

    // None of this caused another key fetch.
    assert_eq!(v.key_fetches(&idp.issuer), 1);
    // Error messages carry no key material.
    let message = ExternalAuthError::BadSignature.to_string();
    assert!(!message.contains(&jwks["keys"][0]["n"].as_str().unwrap()[..20]));
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_interval() {
    let Some(idp) = OAuthIssuer::start("unknown_kids_refetch_at_most_once_per_interval") else {
        return;
    };
    let interval = Duration::from_secs(2);
    let v = verifier_with(
        &[config(&idp)],
        VerifierOptions {
            min_refetch_interval: interval,
            ..VerifierOptions::default()
        },
    );
    let issuer = idp.issuer.clone();

    // Many concurrent first verifications share one fetch; a kid the JWKS
    // lacks is then refused without another.
    let unknown = idp
        .token_with(RESOURCE, "", json!({"sub": "u"}), json!({"kid": "nope"}))
        .await;
    let results = futures::future::join_all((0..10).map(|_| v.verify(&unknown))).await;
    assert!(
        results
            .iter()
            .all(|r| *r == Err(ExternalAuthError::UnknownKey)),
        "{results:?}"
    );
    assert_eq!(v.key_fetches(&issuer), 1, "concurrent fetches coalesced");

    // The issuer rotates in a new key; a token signed with it is refused
    // while the interval runs, with no fetch...
    idp.add_key("k2").await;
    let rotated = idp
        .token_signed_by("k2", RESOURCE, json!({"sub": "u"}))
        .await;
    assert_eq!(v.verify(&rotated).await, Err(ExternalAuthError::UnknownKey));
    assert_eq!(v.key_fetches(&issuer), 1);
    // ...and accepted after it, with exactly one more fetch.
    tokio::time::sleep(interval + Duration::from_millis(200)).await;
    v.verify(&rotated)
        .await
        .expect("the rotated key after one refetch");
    assert_eq!(v.key_fetches(&issuer), 2);
    // The unknown kid again, right away: refused, no fetch; after another
    // interval: exactly one fetch more.
    assert_eq!(v.verify(&unknown).await, Err(ExternalAuthError::UnknownKey));
    assert_eq!(v.key_fetches(&issuer), 2);
    tokio::time::sleep(interval + Duration::from_millis(200)).await;
    for _ in 0..5 {
        assert_eq!(v.verify(&unknown).await, Err(ExternalAuthError::UnknownKey));
    }
    assert_eq!(v.key_fetches(&issuer), 3);
    // Known keys never wait for the interval.
    let good = idp
        .token_signed_by("k1", RESOURCE, json!({"sub": "u"}))
        .await;
    v.verify(&good).await.expect("a known key");
    assert_eq!(v.key_fetches(&issuer), 3);
}

#[tokio::test]
async fn keys_are_fetched_through_the_outbound_guard() {
    let Some(idp) = OAuthIssuer::start("keys_are_fetched_through_the_outbound_guard") else {
        return;
    };
    // With loopback refused, the issuer on 127.0.0.1 cannot be reached.
    let mut settings = Settings::default();
    settings.outbound.allow_loopback = false;
    let v = ExternalVerifier::new(
        &[config(&idp)],
        Some(RESOURCE),
        outbound::client(&settings.outbound),
        OutboundPolicy::from_settings(&settings.outbound),
        VerifierOptions::default(),
    )
    .unwrap();
    let token = idp.token(RESOURCE, json!({"sub": "u"})).await;
    match v.verify(&token).await {
        Err(e @ ExternalAuthError::KeysUnavailable(_)) => {
            assert!(e.is_unavailable());
            assert!(e.to_string().contains("loopback"), "{e}");
        }
        other => panic!("expected the outbound guard to refuse: {other:?}"),
    }
}

#[tokio::test]
async fn the_gateway_takes_its_issuers_from_settings() {
    let Some(idp) = OAuthIssuer::start("the_gateway_takes_its_issuers_from_settings") else {
        return;
    };
    // Refused at start: an HS algorithm, or no audience and no public URL.
    let dir = tempfile::tempdir().unwrap();
    for (issuers, public_url) in [
        (
            json!([{"issuer": idp.issuer, "algorithms": ["HS256"]}]),
            Some(RESOURCE),
        ),
        (json!([{"issuer": idp.issuer}]), None),
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_metamcp"));
        cmd.arg("serve")
            .env("META_MCP_DATA_DIR", dir.path())
            .env("META_MCP_PORT", "0")
            .env("META_MCP_OAUTH_ISSUERS", issuers.to_string());
        if let Some(url) = public_url {
            cmd.env("META_MCP_PUBLIC_URL", url);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("META_MCP_OAUTH_ISSUERS"), "{err}");
    }
    // Accepted from the config file, beside mcpServers.
    let gw = crate::common::Gateway::start(
        crate::common::Options::default()
            .config(json!({"mcpServers": {}, "oauth_issuers": [config(&idp)]}))
            .env("META_MCP_PUBLIC_URL", RESOURCE),
    )
    .await;
    let (code, _) = gw.get("/api/v1/health/live").await;
    assert_eq!(code, 200);
}

/// The whole path: an MCP client with a token of the outside issuer lists
/// and calls tools on `/mcp`; a token for another audience is refused with
/// the challenge that names the resource metadata, which names the issuer.
#[tokio::test]
async fn outside_tokens_work_on_the_mcp_endpoint_for_this_resource_only() {
    let test = "outside_tokens_work_on_the_mcp_endpoint_for_this_resource_only";
    let Some(idp) = OAuthIssuer::start(test) else {
        return;
    };
    let m = crate::common::marker("fx-oidc");
    let gw = crate::common::Gateway::start(
        crate::common::Options::default()
            .config(json!({
                "mcpServers": {"fx": crate::common::fixture_stdio(&m)},
                "oauth_issuers": [config(&idp)],
            }))
            .env("META_MCP_PUBLIC_URL", RESOURCE)
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    gw.wait_tool("fx__echo", true).await;
    let resource = format!("{RESOURCE}/mcp");
    let (_, meta) = gw
        .send_as(
            None,
            "GET",
            "/.well-known/oauth-protected-resource/mcp",
            None,
        )
        .await;
    assert_eq!(meta["resource"], resource);
    assert_eq!(meta["authorization_servers"], json!([idp.issuer]));

    let user_claims = json!({"sub": "u-olivia", "realm_access": {"roles": ["mcp-users"]}, "preferred_username": "olivia"});
    let good = idp
        .token_with(
            &resource,
            "openid tools:read tools:execute",
            user_claims.clone(),
            json!({}),
        )
        .await;
    let (code, me) = gw
        .send_as(Some(&good), "GET", "/api/v1/auth/me", None)
        .await;
    assert_eq!(code, 200, "{me}");
    assert_eq!(me["username"], "olivia");
    assert_eq!(me["auth_method"], "external");
    assert_eq!(me["roles"], json!(["user"]));
    let listed =
        crate::common::mcp_request_with(&gw.mcp_url(), Some(&good), "tools/list", json!({})).await;
    assert!(
        crate::common::tool_names(&listed).contains(&"fx__echo".to_owned()),
        "{listed}"
    );
    let called = crate::common::mcp_request_with(
        &gw.mcp_url(),
        Some(&good),
        "tools/call",
        json!({"name": "fx__echo", "arguments": {"message": "from olivia"}}),
    )
    .await;
    assert_eq!(
        crate::common::texts(&called["result"]),
        ["from olivia"],
        "{called}"
    );

    // A tenant that nobody created, named by the token's tenant claim, does
    // not come into being: the token is refused.
    let stranger = idp
        .token_with(
            &resource,
            "openid tools:read tools:execute",
            json!({"sub": "u-x", "org": "nowhere", "realm_access": {"roles": ["mcp-users"]}}),
            json!({}),
        )
        .await;
    let (code, body) = gw
        .send_as(Some(&stranger), "GET", "/api/v1/auth/me", None)
        .await;
    assert_eq!(code, 401, "{body}");

    // Scopes that name metamcp permissions narrow the mapped role.
    let read_only = idp
        .token_with(&resource, "tools:read", user_claims.clone(), json!({}))
        .await;
    let (code, _) = gw
        .send_as(
            Some(&read_only),
            "POST",
            "/api/v1/tools/fx__echo/execute",
            Some(json!({"arguments": {"message": "x"}})),
        )
        .await;
    assert_eq!(code, 403);
    // No scope a permission needs for MCP at all: 403 insufficient_scope.
    let none = idp
        .token_with(&resource, "servers:read", user_claims.clone(), json!({}))
        .await;
    let r = crate::common::mcp_post(
        &gw.mcp_url(),
        Some(&none),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#,
    )
    .await;
    assert_eq!(r.status().as_u16(), 403);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");

    // Another resource's token, and an expired one: 401 with the challenge.
    for token in [
        idp.token_with(
            "https://other.example/mcp",
            "tools:read tools:execute",
            user_claims.clone(),
            json!({}),
        )
        .await,
        idp.token_with(
            &resource,
            "tools:read",
            json!({"sub": "u-olivia", "exp": now() - 600, "iat": now() - 1200, "nbf": now() - 1200}),
            json!({}),
        )
        .await,
    ] {
        let r = crate::common::mcp_post(&gw.mcp_url(), Some(&token), r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#).await;
        assert_eq!(r.status().as_u16(), 401);
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(
            challenge.contains(&format!(
                "resource_metadata=\"{RESOURCE}/.well-known/oauth-protected-resource/mcp\""
            )),
            "{challenge}"
        );
    }
    let _ = Duration::ZERO;
}
