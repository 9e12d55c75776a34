//! The admin page and API under any request: a method, a path under the
//! admin router (its routes, or anything), a query, headers (the bearer
//! token right, wrong or absent; cookies; content types) and a body. No
//! request makes it panic or answer 500; a request without the token never
//! gets a 2xx from anything but the login page (which only sets the cookie
//! for a right token) — it gets 401, 403, a redirect or a client error.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::Router;
use http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use ultracache::admin::{router, Auth};

const TOKEN: &str = "fuzz-admin-token";

const PATHS: [&str; 14] = [
    "/",
    "/urls",
    "/models",
    "/login",
    "/purge",
    "/invalidate",
    "/clear",
    "/api/stats",
    "/api/urls",
    "/api/models",
    "/api/purge",
    "/api/invalidate",
    "/api/clear",
    "/metrics",
];

#[derive(Arbitrary, Debug)]
enum Token {
    Right,
    Wrong(String),
    Absent,
}

#[derive(Arbitrary, Debug)]
struct Input {
    post: bool,
    path: u8,
    raw_path: Option<String>,
    query: Option<String>,
    token: Token,
    cookie: Option<String>,
    json: bool,
    body: Vec<u8>,
}

fn app() -> &'static (tokio::runtime::Runtime, Router) {
    static APP: OnceLock<(tokio::runtime::Runtime, Router)> = OnceLock::new();
    APP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let app = rt.block_on(async { router(Auth::bearer(TOKEN)) });
        (rt, app)
    })
}

fuzz_target!(|input: Input| {
    let mut target = match &input.raw_path {
        Some(raw) => format!("/{raw}"),
        None => PATHS[usize::from(input.path) % PATHS.len()].to_owned(),
    };
    if let Some(q) = &input.query {
        target.push('?');
        target.push_str(q);
    }
    let method = if input.post {
        Method::POST
    } else {
        Method::GET
    };
    let mut request = Request::builder().method(method).uri(target.as_str());
    let authorized = matches!(input.token, Token::Right);
    match &input.token {
        Token::Right => request = request.header("authorization", format!("Bearer {TOKEN}")),
        Token::Wrong(t) if t != TOKEN => {
            request = request.header("authorization", format!("Bearer {t}"))
        }
        _ => {}
    }
    if let Some(cookie) = &input.cookie {
        if !cookie.contains(TOKEN) {
            request = request.header("cookie", cookie.as_str());
        }
    }
    request = request.header(
        "content-type",
        if input.json {
            "application/json"
        } else {
            "application/x-www-form-urlencoded"
        },
    );
    let Ok(request) = request.body(Body::from(input.body)) else {
        return;
    };
    let login = request.uri().path() == "/login";
    let (rt, app) = app();
    let response = rt
        .block_on(app.clone().oneshot(request))
        .expect("the router answers");
    let status = response.status();
    assert!(
        !status.is_server_error(),
        "{status} for {} {target}",
        if input.post { "POST" } else { "GET" }
    );
    if !authorized && !login {
        assert!(
            !status.is_success(),
            "{status} without the token for {target}"
        );
    }
});
