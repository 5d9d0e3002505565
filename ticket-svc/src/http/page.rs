//! The buyer's page, `GET /e/{id}`: one self-contained HTML document, its style and script
//! inline (`assets/buyer-page`), that walks a buyer through a sale with the public API (sign
//! in, countdown, line, purchase, its decision). It is the same document for every event (the
//! script reads the id from the address), so serving it reads no store.
//!
//! Its Content-Security-Policy allows its own style and script (by hash) and requests to this
//! origin only: a change that made it load a font, a script or anything from elsewhere would
//! be refused by the browser, and the browser test would see it.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::digest;

use super::error::AppError;
use crate::domain::EventId;

const HTML: &str = include_str!("../../assets/buyer-page/index.html");
const STYLE: &str = include_str!("../../assets/buyer-page/style.css");
const SCRIPT: &str = include_str!("../../assets/buyer-page/app.js");

/// The assembled page and the headers it is served with.
struct Page {
    html: String,
    policy: String,
    etag: String,
}

static PAGE: LazyLock<Page> = LazyLock::new(|| {
    let sha256 = |text: &str| digest::digest(&digest::SHA256, text.as_bytes());
    let html = HTML
        .replacen("/*STYLE*/", STYLE, 1)
        .replacen("/*SCRIPT*/", SCRIPT, 1);
    let policy = format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        STANDARD.encode(sha256(SCRIPT)),
        STANDARD.encode(sha256(STYLE)),
    );
    let etag = format!(
        "\"{}\"",
        URL_SAFE_NO_PAD.encode(&sha256(&html).as_ref()[..12])
    );
    Page { html, policy, etag }
});

/// How long a browser may reuse the page without asking again: it changes only with a release.
const MAX_AGE: &str = "public, max-age=300";

pub(super) async fn show(Path(id): Path<String>, request: HeaderMap) -> Result<Response, AppError> {
    let _: EventId = id.parse().map_err(|_| AppError::EventNotFound)?;
    let page = &*PAGE;
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == page.etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        page.html.clone().into_response()
    };
    let headers = resp.headers_mut();
    let mut set = |name, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set(header::CONTENT_TYPE, "text/html; charset=utf-8");
    set(header::CONTENT_SECURITY_POLICY, &page.policy);
    set(header::ETAG, &page.etag);
    set(header::CACHE_CONTROL, MAX_AGE);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "no-referrer");
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_whole_and_loads_nothing_from_elsewhere() {
        let page = &*PAGE;
        assert!(!page.html.contains("/*STYLE*/") && !page.html.contains("/*SCRIPT*/"));
        assert!(page.html.contains(SCRIPT) && page.html.contains(STYLE));
        for outside in ["http://", "https://", "src=", "href=", "@import", "url("] {
            assert!(
                !page.html.contains(outside),
                "the page must not name another resource ({outside})"
            );
        }
        assert!(page.policy.starts_with("default-src 'none'; "));
        assert!(page.policy.contains("connect-src 'self'"));
    }
}
