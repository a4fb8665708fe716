//! The admin web UI at `/ui`: server-rendered pages from templates compiled
//! into the binary (askama, HTML-escaped by default), one small script of
//! our own, no inline script (the pages' Content-Security-Policy forbids it).
//!
//! The UI holds no rules of its own. It authenticates with the session
//! cookie of "Identity and access", and everything it reads or changes is a
//! REST call made in-process through the same authentication, permission,
//! CSRF and audit layers as a call from outside ([`backend`]): a page shows
//! what `GET /api/v1/...` answers the logged-in user, and a form does what
//! the matching REST call does, refused or recorded the same way.

mod audit;
mod backend;
mod keys;
mod login;
mod playground;
mod schema_form;
mod servers;
mod session;
mod tools;

use std::sync::Arc;

use askama::Template;
use axum::{
    Router,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};

use crate::app::AppState;

pub use session::Session;

/// The policy of every UI page: our own script and styles only, images
/// inline as data (tool results), forms posting back to us, no framing.
const CSP_UI: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// What the UI's handlers share: the gateway's state and the in-process
/// REST API they act through.
#[derive(Clone)]
pub struct Ui {
    pub state: Arc<AppState>,
    api: backend::Backend,
}

/// The `/ui` routes, to be nested under `/ui` by the caller.
pub fn router<S>(state: Arc<AppState>) -> Router<S> {
    let ui = Ui {
        api: backend::Backend::new(state.clone()),
        state,
    };
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/servers") }))
        .route("/login", get(login::page).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/servers", get(servers::page))
        .route("/server", get(servers::detail))
        .route("/servers/import", post(servers::import))
        .route("/servers/action", post(servers::action))
        .route("/tools", get(tools::page))
        .route("/tools/toggle", post(tools::toggle))
        .route("/playground", get(playground::page).post(playground::run))
        .route("/keys", get(keys::page).post(keys::create))
        .route("/keys/revoke", post(keys::revoke))
        .route("/audit", get(audit::page))
        .route("/assets/ui.js", get(script))
        .route("/assets/ui.css", get(styles))
        .fallback(not_found)
        .layer(axum::middleware::map_response(page_headers))
        .with_state(ui)
}

/// Every UI answer: its own CSP, never stored (pages carry CSRF tokens and
/// the user's data), and a referrer only to ourselves. `no-referrer`, the
/// listener's default, makes Chromium send `Origin: null` on the pages' own
/// form posts, which the listener's Origin guard rightly refuses;
/// `same-origin` still tells no other site anything.
async fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers
        .entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("same-origin"));
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CSP_UI));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("assets/ui.js"),
    )
        .into_response()
}

async fn styles() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("assets/ui.css"),
    )
        .into_response()
}

async fn not_found() -> Response {
    message_page(StatusCode::NOT_FOUND, "Not found", "There is no such page.")
}

/// A notice shown once at the top of the next page (after a redirect).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Flash {
    /// `ok` or `error`.
    pub kind: String,
    pub text: String,
}

impl Flash {
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            kind: "ok".into(),
            text: text.into(),
        }
    }
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            kind: "error".into(),
            text: text.into(),
        }
    }
}

/// The common parts of every page behind the login.
pub struct Chrome {
    /// Which navigation entry is current.
    pub current: &'static str,
    pub username: String,
    pub tenant: String,
    pub csrf: String,
    pub flash: Vec<Flash>,
}

impl Chrome {
    pub fn new(current: &'static str, session: &Session, flash: Vec<Flash>) -> Self {
        Self {
            current,
            username: session.principal.username.to_string(),
            tenant: session.principal.tenant_id.to_string(),
            csrf: session.csrf.clone(),
            flash,
        }
    }
}

/// Renders a template as an HTML answer; a template that fails to render
/// (a bug) answers 500 and is logged.
pub fn html(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "UI template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    text: &'a str,
}

/// A plain page that says what went wrong (no navigation: the visitor may
/// not be logged in).
pub fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    html(status, &MessagePage { title, text })
}

/// Redirects after a form post (303: the browser follows with GET), with
/// a notice for the next page.
pub fn redirect_with(to: &str, flash: Flash) -> Response {
    let mut response = Redirect::to(to).into_response();
    session::set_flash(&mut response, &flash);
    response
}

/// The answer to a state-changing form without this session's CSRF token.
pub fn csrf_refused() -> Response {
    message_page(
        StatusCode::FORBIDDEN,
        "Request refused",
        "This form was not sent by a page of your session (CSRF check failed). \
         Go back, reload the page and try again.",
    )
}

/// A page behind the login; a notice it shows is cleared for the next.
pub fn page(session: &Session, status: StatusCode, template: &impl Template) -> Response {
    let mut response = html(status, template);
    if !session.flash.is_empty() {
        session::clear_flash(&mut response);
    }
    response
}
