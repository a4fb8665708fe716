//! Who is calling. Identity ("Identity and access") will produce principals from
//! JWTs, API keys and OAuth tokens; until then every caller is the local
//! anonymous principal of the default tenant, and the listener binds to
//! loopback by default.

use std::sync::Arc;

pub mod external;

/// The tenant every row belongs to until tenants exist.
pub const DEFAULT_TENANT: &str = "default";

/// An authenticated caller: the result of the identity stage of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable user (or API key owner) id; `anonymous` for the local principal.
    pub user_id: Arc<str>,
    pub tenant_id: Arc<str>,
    pub roles: Arc<[String]>,
    pub scopes: Arc<[String]>,
}

impl Principal {
    /// The principal of a request that carried no credentials, on a gateway
    /// that has no identity configured.
    pub fn local_anonymous() -> Self {
        Self {
            user_id: Arc::from("anonymous"),
            tenant_id: Arc::from(DEFAULT_TENANT),
            roles: Arc::from(vec!["admin".to_owned()]),
            scopes: Arc::from(Vec::<String>::new()),
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Principal>()
            .cloned()
            .unwrap_or_else(Principal::local_anonymous))
    }
}
