//! The API keys page: the user's own keys, creating one (its secret is
//! shown once, in the answer to the form, never in a cookie or a link),
//! and revoking one, through `/api/v1/auth/keys`.

use askama::Template;
use axum::{
    Form,
    extract::State,
    http::{Method, StatusCode},
    response::Response,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Chrome, Flash, Session, Ui,
    backend::{Origin, segment},
    csrf_refused, page as render, redirect_with,
    servers::text_of,
};

pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: String,
    pub created: String,
    pub expires: String,
    pub last_used: String,
    pub revoked: bool,
}

impl KeyRow {
    fn from_record(key: &Value) -> Self {
        let scopes: Vec<String> = key["scopes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text_of)
            .collect();
        Self {
            id: text_of(&key["id"]),
            name: text_of(&key["name"]),
            prefix: text_of(&key["prefix"]),
            scopes: if scopes.is_empty() {
                "all of yours".to_owned()
            } else {
                scopes.join(", ")
            },
            created: text_of(&key["created_at"]),
            expires: text_of(&key["expires_at"]),
            last_used: text_of(&key["last_used_at"]),
            revoked: key["revoked"] == true,
        }
    }
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    chrome: Chrome,
    keys: Vec<KeyRow>,
    /// A key just created: its name and secret, shown this once.
    created: Option<(String, String)>,
    error: Option<String>,
}

async fn show(
    ui: &Ui,
    session: &Session,
    origin: &Origin,
    created: Option<(String, String)>,
) -> Response {
    let answer = ui.api.get(session, origin, "/api/v1/auth/keys").await;
    let error = (!answer.ok()).then(|| answer.problem());
    let keys = answer.body["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .map(KeyRow::from_record)
        .collect();
    render(
        session,
        StatusCode::OK,
        &KeysPage {
            chrome: Chrome::new("keys", session, session.flash.clone()),
            keys,
            created,
            error,
        },
    )
}

pub async fn page(State(ui): State<Ui>, origin: Origin, session: Session) -> Response {
    show(&ui, &session, &origin, None).await
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    name: String,
    /// Comma-separated permission names; empty: all of the owner's.
    #[serde(default)]
    scopes: String,
    #[serde(default)]
    expires_in_days: String,
}

pub async fn create(
    State(ui): State<Ui>,
    origin: Origin,
    mut session: Session,
    Form(form): Form<CreateForm>,
) -> Response {
    if !session.csrf_ok(&form.csrf_token, &ui) {
        return csrf_refused();
    }
    let mut body = json!({ "name": form.name.trim() });
    let scopes: Vec<&str> = form
        .scopes
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if !scopes.is_empty() {
        body["scopes"] = json!(scopes);
    }
    match form.expires_in_days.trim() {
        "" => {}
        days => match days.parse::<u32>() {
            Ok(d) => body["expires_in_days"] = json!(d),
            Err(_) => {
                session.flash.push(Flash::error(format!(
                    "expires in days: {days:?} is not a whole number"
                )));
                return show(&ui, &session, &origin, None).await;
            }
        },
    }
    let answer = ui
        .api
        .change(
            &session,
            &origin,
            Method::POST,
            "/api/v1/auth/keys",
            &form.csrf_token,
            Some(body),
        )
        .await;
    if !answer.ok() {
        session.flash.push(Flash::error(answer.problem()));
        return show(&ui, &session, &origin, None).await;
    }
    let created = (text_of(&answer.body["name"]), text_of(&answer.body["key"]));
    show(&ui, &session, &origin, Some(created)).await
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf_token: String,
    id: String,
}

pub async fn revoke(
    State(ui): State<Ui>,
    origin: Origin,
    session: Session,
    Form(form): Form<RevokeForm>,
) -> Response {
    if !session.csrf_ok(&form.csrf_token, &ui) {
        return csrf_refused();
    }
    let answer = ui
        .api
        .change(
            &session,
            &origin,
            Method::DELETE,
            &format!("/api/v1/auth/keys/{}", segment(&form.id)),
            &form.csrf_token,
            None,
        )
        .await;
    if !answer.ok() {
        return redirect_with("/ui/keys", Flash::error(answer.problem()));
    }
    redirect_with("/ui/keys", Flash::ok("The key is revoked."))
}
