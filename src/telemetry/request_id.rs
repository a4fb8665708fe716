//! Request ids: every HTTP request gets one, in the `x-request-id` header
//! of the request (where the trace layer's span and the handlers read it)
//! and of the response. A caller's own id is kept when it is well-formed, so
//! a client or proxy can follow its request through our logs; anything else
//! (too long, odd characters that could forge log structure) is replaced.

use axum::{extract::Request, middleware::Next, response::Response};
use http::HeaderValue;

pub const HEADER: &str = "x-request-id";

/// Longest id accepted from a caller (a UUID is 36, a W3C trace id 32).
const MAX_LEN: usize = 128;

/// Whether a caller's id can be used as is: 1 to 128 characters of
/// letters, digits and `-._:/+=@`.
pub fn well_formed(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:/+=@".contains(b))
}

/// The middleware; the outermost layer, so that every answer (refusals
/// by the host guard included) carries the id.
pub async fn assign(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .filter(|v| well_formed(v.as_bytes()))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
                .expect("a UUID is a valid header value")
        });
    request.headers_mut().insert(HEADER, id.clone());
    let mut response = next.run(request).await;
    response.headers_mut().insert(HEADER, id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_ids_are_kept_only_when_well_formed() {
        assert!(well_formed(b"0f6c5a2e-4b1d-4a8e-9d6f-3c2b1a0e9f8d"));
        assert!(well_formed(b"req:42/retry=1"));
        assert!(!well_formed(b""));
        assert!(!well_formed(b"has space"));
        assert!(!well_formed(b"line\nbreak"));
        assert!(!well_formed(b"{\"json\":1}"));
        assert!(!well_formed(&[b'a'; MAX_LEN + 1]));
        assert!(well_formed(&[b'a'; MAX_LEN]));
    }
}
