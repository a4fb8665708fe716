//! Logging in and out. The login form posts to us; we call the login API
//! (`POST /api/v1/auth/login` with `cookie: true`) and hand its session
//! cookie to the browser. Logging out revokes the access token through the
//! logout API, which also clears the cookie.

use askama::Template;
use axum::{
    Form,
    extract::State,
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::{
    Flash, Session, Ui,
    backend::Origin,
    html, redirect_with,
    session::{self, login_token_ok, new_login_token, set_login_token},
};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    username: String,
    tenant: String,
    error: Option<String>,
    notice: Vec<Flash>,
}

/// Shows the form with a fresh CSRF token in it and in its cookie.
fn form(
    ui: &Ui,
    status: StatusCode,
    username: String,
    tenant: String,
    error: Option<String>,
    notice: Vec<Flash>,
) -> Response {
    let token = new_login_token();
    let had_notice = !notice.is_empty();
    let mut response = html(
        status,
        &LoginPage {
            csrf: token.clone(),
            username,
            tenant,
            error,
            notice,
        },
    );
    set_login_token(&mut response, ui, &token);
    if had_notice {
        session::clear_flash(&mut response);
    }
    response
}

pub async fn page(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    // Already logged in: straight on.
    if let Some(token) = session::cookie(&headers, crate::auth::http::SESSION_COOKIE)
        && ui
            .state
            .identity
            .authenticate_access_token(token, crate::auth::AuthMethod::Cookie)
            .await
            .is_ok()
    {
        return Redirect::to("/ui/servers").into_response();
    }
    let notice = session::take_flash_of(&headers);
    form(
        &ui,
        StatusCode::OK,
        String::new(),
        String::new(),
        None,
        notice,
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    tenant: String,
}

pub async fn submit(
    State(ui): State<Ui>,
    origin: Origin,
    headers: HeaderMap,
    Form(login): Form<LoginForm>,
) -> Response {
    let tenant = login.tenant.trim().to_owned();
    if !login_token_ok(&headers, &login.csrf_token) {
        return form(
            &ui,
            StatusCode::FORBIDDEN,
            login.username,
            tenant,
            Some("The form expired or did not come from this page; please try again.".into()),
            Vec::new(),
        );
    }
    let mut body = json!({
        "username": login.username,
        "password": login.password,
        "cookie": true,
    });
    if !tenant.is_empty() {
        body["tenant"] = json!(tenant);
    }
    let answer = ui
        .api
        .anonymous(&origin, Method::POST, "/api/v1/auth/login", body)
        .await;
    if !answer.ok() {
        // A form shown again with its error is a page like any other (a
        // 4xx would be a console error in the browser).
        return form(
            &ui,
            StatusCode::OK,
            login.username,
            tenant,
            Some(answer.problem()),
            Vec::new(),
        );
    }
    let mut response = Redirect::to("/ui/servers").into_response();
    for cookie in answer.headers.get_all(header::SET_COOKIE) {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookie.clone());
    }
    if let Some(refresh) = answer.body["refresh_token"].as_str() {
        session::set_refresh(&mut response, &ui, refresh);
    }
    response
}

#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf_token: String,
}

pub async fn logout(
    State(ui): State<Ui>,
    origin: Origin,
    headers: HeaderMap,
    session: Session,
    Form(form): Form<LogoutForm>,
) -> Response {
    if !session.csrf_ok(&form.csrf_token, &ui) {
        return super::csrf_refused();
    }
    // The refresh token's whole family is revoked with the access token.
    let body = session::cookie(&headers, session::REFRESH_COOKIE)
        .map(|refresh| json!({ "refresh_token": refresh }));
    let answer = ui
        .api
        .change(
            &session,
            &origin,
            Method::POST,
            "/api/v1/auth/logout",
            &form.csrf_token,
            body,
        )
        .await;
    if !answer.ok() {
        return redirect_with("/ui/servers", Flash::error(answer.problem()));
    }
    let mut response = redirect_with("/ui/login", Flash::ok("You are logged out."));
    session::clear_refresh(&mut response);
    for cookie in answer.headers.get_all(header::SET_COOKIE) {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookie.clone());
    }
    response
}
