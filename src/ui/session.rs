//! Who is looking at a UI page: the session cookie set by the login API
//! (`metamcp_session`, HTTP-only, SameSite=Strict), checked like any other
//! credential; and the small cookies of the UI itself (a login form's CSRF
//! token, a one-time notice).

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, HeaderValue, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use base64::Engine as _;

use super::{Flash, Ui};
use crate::auth::{AuthMethod, Principal, http::SESSION_COOKIE, tokens};

/// The login form's CSRF token (double submit: the form carries the same
/// value as this cookie, which another site can neither read nor set).
pub const LOGIN_CSRF_COOKIE: &str = "metamcp_login_csrf";
/// A notice for the next page, set on a redirect and cleared when shown.
const FLASH_COOKIE: &str = "metamcp_flash";
/// The refresh token of the UI's session (only ever sent to `/ui`): when
/// the short-lived access token in the session cookie has expired, the
/// next page load trades it for new tokens rather than asking for the
/// password again.
pub const REFRESH_COOKIE: &str = "metamcp_refresh";

/// A logged-in user of the UI.
pub struct Session {
    pub principal: Principal,
    /// The access token from the cookie, sent on the UI's REST calls.
    pub token: String,
    /// The CSRF token of this session, put in every form.
    pub csrf: String,
    /// Notices carried over from the previous request.
    pub flash: Vec<Flash>,
}

impl Session {
    /// Whether a form carried this session's CSRF token.
    pub fn csrf_ok(&self, presented: &str, ui: &Ui) -> bool {
        let jti = self.principal.credential_id.as_deref().unwrap_or_default();
        !presented.is_empty() && ui.state.identity.csrf_matches(jti, presented)
    }
}

/// The value of one cookie of the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v)
}

impl FromRequestParts<Ui> for Session {
    /// Not logged in (or the session ended): to the login page.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ui: &Ui) -> Result<Self, Self::Rejection> {
        let authenticated = match cookie(&parts.headers, SESSION_COOKIE) {
            Some(token) => ui
                .state
                .identity
                .authenticate_access_token(token, AuthMethod::Cookie)
                .await
                .map(|p| (token, p))
                .map_err(|e| tracing::debug!(error = %e, "UI session cookie refused"))
                .ok(),
            None => None,
        };
        let Some((token, principal)) = authenticated else {
            // Only a page load continues the session: a form carries the
            // CSRF token of the old one, and must be sent again anyway.
            if parts.method == axum::http::Method::GET
                && let Some(refresh) = cookie(&parts.headers, REFRESH_COOKIE)
                && let Some(again) = refreshed(ui, parts, refresh).await
            {
                return Err(again);
            }
            let mut response = Redirect::to("/ui/login").into_response();
            if cookie(&parts.headers, REFRESH_COOKIE).is_some() {
                clear_refresh(&mut response);
            }
            return Err(response);
        };
        let jti = principal.credential_id.as_deref().unwrap_or_default();
        let csrf = ui.state.identity.csrf_token(jti);
        Ok(Session {
            token: token.to_owned(),
            csrf,
            flash: take_flash_of(&parts.headers),
            principal,
        })
    }
}

/// Trades the refresh cookie for new tokens (`POST /api/v1/auth/refresh`)
/// and sends the browser back to the same page with them; `None` when the
/// refresh token is no good (expired, revoked, reused).
async fn refreshed(ui: &Ui, parts: &Parts, refresh: &str) -> Option<Response> {
    let back = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .and_then(|u| u.0.path_and_query().map(|p| p.as_str().to_owned()))
        .filter(|p| p.starts_with("/ui") && !p.starts_with("//"))
        .unwrap_or_else(|| "/ui/servers".to_owned());
    let answer = ui
        .api
        .anonymous(
            &super::backend::Origin::of(parts),
            axum::http::Method::POST,
            "/api/v1/auth/refresh",
            serde_json::json!({ "refresh_token": refresh, "cookie": true }),
        )
        .await;
    if !answer.ok() {
        tracing::debug!(status = %answer.status, "UI session could not be refreshed");
        return None;
    }
    let mut response = Redirect::to(&back).into_response();
    for cookie in answer.headers.get_all(header::SET_COOKIE) {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookie.clone());
    }
    set_refresh(&mut response, ui, answer.body["refresh_token"].as_str()?);
    Some(response)
}

/// Keeps the refresh token of a login or refresh for the UI.
pub fn set_refresh(response: &mut Response, ui: &Ui, token: &str) {
    let value = format!(
        "{REFRESH_COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
        ui.state.settings.auth.refresh_token_ttl.as_secs(),
        secure_attr(ui)
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Forgets the refresh token (logged out, or it is no good).
pub fn clear_refresh(response: &mut Response) {
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "metamcp_refresh=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
}

/// A fresh random token for the login form.
pub fn new_login_token() -> String {
    tokens::random_id()
}

/// `Secure` when the gateway is reached over https.
fn secure_attr(ui: &Ui) -> &'static str {
    if ui
        .state
        .settings
        .public_url
        .as_ref()
        .is_some_and(|u| u.scheme() == "https")
    {
        "; Secure"
    } else {
        ""
    }
}

/// Sets the login form's CSRF cookie.
pub fn set_login_token(response: &mut Response, ui: &Ui, token: &str) {
    let value = format!(
        "{LOGIN_CSRF_COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=3600{}",
        secure_attr(ui)
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Whether a login form's token matches its cookie.
pub fn login_token_ok(headers: &HeaderMap, presented: &str) -> bool {
    cookie(headers, LOGIN_CSRF_COOKIE)
        .is_some_and(|expected| tokens::secrets_equal(expected, presented))
}

/// Puts a notice in a cookie for the next page.
pub fn set_flash(response: &mut Response, flash: &Flash) {
    let Ok(json) = serde_json::to_vec(flash) else {
        return;
    };
    let value = format!(
        "{FLASH_COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=60",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The notice a previous answer left, if any (cleared by [`clear_flash`]).
pub fn take_flash_of(headers: &HeaderMap) -> Vec<Flash> {
    cookie(headers, FLASH_COOKIE)
        .and_then(|v| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(v)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<Flash>(&bytes).ok())
        .filter(|f| f.kind == "ok" || f.kind == "error")
        .into_iter()
        .collect()
}

/// Clears a notice that has been shown.
pub fn clear_flash(response: &mut Response) {
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("metamcp_flash=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; metamcp_session_x=2; metamcp_session=tok; b="),
        );
        assert_eq!(cookie(&headers, "metamcp_session"), Some("tok"));
        assert_eq!(cookie(&headers, "a"), Some("1"));
        assert_eq!(cookie(&headers, "b"), None);
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn a_flash_survives_its_cookie_and_a_forged_one_is_dropped() {
        let mut response = Response::new(axum::body::Body::empty());
        set_flash(&mut response, &Flash::error("<b>no</b>"));
        let set = response.headers()[header::SET_COOKIE].to_str().unwrap();
        let value = set.split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        assert_eq!(take_flash_of(&headers), vec![Flash::error("<b>no</b>")]);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("metamcp_flash=not-base64!"),
        );
        assert!(take_flash_of(&headers).is_empty());
    }

    #[test]
    fn the_login_token_must_match_its_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("metamcp_login_csrf=abc123"),
        );
        assert!(login_token_ok(&headers, "abc123"));
        assert!(!login_token_ok(&headers, "abc124"));
        assert!(!login_token_ok(&headers, ""));
        assert!(!login_token_ok(&HeaderMap::new(), "abc123"));
    }
}
