//! The admin page: what is cached, how well, and buttons to forget (feature
//! `admin`). Mount it under a path of your choice; it is closed unless the
//! [`Auth`] you give it says otherwise.
//!
//! ```
//! use axum::Router;
//! use ultracache::admin::{self, Auth};
//!
//! let app: Router = Router::new().nest("/_cache", admin::router(Auth::bearer("s3cret")));
//! ```
//!
//! Pages (server-rendered HTML, no external assets): the overview (entries, hit
//! ratio per cache and per route, a hit-ratio chart), cached URLs (sortable,
//! with hits, misses, age, expiry and dependencies, and a purge button each),
//! and the model view (what depends on `blog.post:42`, with an invalidate
//! button). The same data as JSON under `api/`. Browsers sign in once at
//! `login?token=…` (a `SameSite=Strict`, `HttpOnly` cookie); forms carry a
//! CSRF token. Tools send `Authorization: Bearer …`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::extract::{Form, Query, State};
use axum::http::header::{AUTHORIZATION, COOKIE, LOCATION, SET_COOKIE, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::http::{find_urls, purge_urls, route_stats, url_stats};

/// Who may use the admin page.
#[derive(Clone)]
pub struct Auth {
    token: Option<Arc<str>>,
    check: Option<Check>,
}

/// A custom access check.
type Check = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;

/// Why a request was turned away.
#[derive(Clone, Copy, Debug)]
enum Denied {
    /// No credentials: 401.
    Unauthenticated,
    /// Wrong credentials: 403.
    Forbidden,
    /// A form without the CSRF token: 403.
    Csrf,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                [(WWW_AUTHENTICATE, "Bearer realm=\"ultracache\"")],
                "sign in: login?token=…",
            )
                .into_response(),
            Denied::Forbidden => StatusCode::FORBIDDEN.into_response(),
            Denied::Csrf => (StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response(),
        }
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

impl Auth {
    /// Requests must carry this token: `Authorization: Bearer <token>`, or the
    /// cookie that `login?token=<token>` sets.
    pub fn bearer(token: impl Into<String>) -> Self {
        Auth {
            token: Some(Arc::from(token.into())),
            check: None,
        }
    }

    /// Requests are let in when `check` says so (your session middleware's
    /// verdict, a client certificate…); CSRF tokens still guard the forms.
    pub fn custom(check: impl Fn(&Parts) -> bool + Send + Sync + 'static) -> Self {
        Auth {
            token: None,
            check: Some(Arc::new(check)),
        }
    }
}

const COOKIE_NAME: &str = "ultracache_admin";

/// How a request got in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// With a header: not forgeable by another site, no CSRF token needed.
    Header,
    /// With a cookie or a custom check: forms need the CSRF token.
    Session,
}

struct Admin {
    auth: Auth,
    /// The forms' CSRF token for requests let in by a custom check.
    csrf: String,
    /// Signed-in browsers, newest last (at most [`MAX_SESSIONS`]): each
    /// login gets a random cookie value (never the token) and a CSRF token of
    /// its own.
    sessions: Mutex<VecDeque<Session>>,
    history: Mutex<VecDeque<Sample>>,
}

struct Session {
    cookie: String,
    csrf: String,
}

/// Browsers signed in at once; the oldest session ends past this.
const MAX_SESSIONS: usize = 64;

/// A request the admin let in: how, and the CSRF token its forms carry.
struct Granted {
    access: Access,
    csrf: String,
}

impl Granted {
    /// Whether a form or API call may act: requests signed in by a header
    /// need no token; sessions must send theirs.
    fn check(&self, csrf: &str) -> Result<(), Denied> {
        if self.access == Access::Session && !same(csrf, &self.csrf) {
            return Err(Denied::Csrf);
        }
        Ok(())
    }
}

/// The one access check, before any admin handler runs.
impl axum::extract::FromRequestParts<Shared> for Granted {
    type Rejection = Denied;

    async fn from_request_parts(parts: &mut Parts, admin: &Shared) -> Result<Self, Denied> {
        admin.access(parts)
    }
}

#[derive(Clone, Copy, Serialize)]
struct Sample {
    /// Seconds since the Unix epoch.
    at: u64,
    hits: u64,
    misses: u64,
}

/// How many samples of the hit ratio are kept (one every 10 s: 20 minutes).
const HISTORY: usize = 120;

fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let _ = write!(out, "{:016x}", h.finish());
    }
    out
}

/// Compares secrets in time that depends on their lengths only.
fn same(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where a login may send the browser next: a path on this site, never
/// another origin (`//evil`, `/\evil`, `https:evil`).
fn safe_next(next: &str) -> bool {
    let mut chars = next.chars();
    chars.next() == Some('/')
        && !matches!(chars.next(), Some('/' | '\\'))
        && !next.chars().any(|c| c.is_control() || c == '\\')
}

/// Whether the request reached the site over HTTPS (directly or through a
/// proxy that says so).
fn https(parts: &Parts) -> bool {
    parts.uri.scheme_str() == Some("https")
        || parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Every admin response: never stored by a cache (a `CacheLayer` around
/// the router, a proxy, the browser).
async fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, private"),
    );
    response
}

fn totals() -> (u64, u64) {
    crate::stats()
        .caches
        .iter()
        .fold((0, 0), |(h, m), c| (h + c.hits, m + c.misses))
}

impl Admin {
    fn access(&self, parts: &Parts) -> Result<Granted, Denied> {
        if let Some(check) = &self.auth.check {
            return if check(parts) {
                Ok(Granted {
                    access: Access::Session,
                    csrf: self.csrf.clone(),
                })
            } else {
                Err(Denied::Forbidden)
            };
        }
        // An empty token (an unset variable read with a default) opens nothing.
        let Some(token) = self.auth.token.as_ref().filter(|t| !t.is_empty()) else {
            return Err(Denied::Forbidden);
        };
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let cookie = parts
            .headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| {
                c.trim()
                    .strip_prefix(&format!("{COOKIE_NAME}="))
                    .map(str::to_owned)
            });
        match (header, cookie) {
            (Some(given), _) if same(given, token) => Ok(Granted {
                access: Access::Header,
                csrf: String::new(),
            }),
            (None, Some(given)) => match self.session(&given) {
                Some(csrf) => Ok(Granted {
                    access: Access::Session,
                    csrf,
                }),
                None => Err(Denied::Forbidden),
            },
            (None, None) => Err(Denied::Unauthenticated),
            _ => Err(Denied::Forbidden),
        }
    }

    /// The CSRF token of the session with this cookie value.
    fn session(&self, cookie: &str) -> Option<String> {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions
            .iter()
            .find(|s| same(cookie, &s.cookie))
            .map(|s| s.csrf.clone())
    }

    /// Starts a session; returns its cookie value.
    fn sign_in(&self) -> String {
        let cookie = random_token();
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.push_back(Session {
            cookie: cookie.clone(),
            csrf: random_token(),
        });
        while sessions.len() > MAX_SESSIONS {
            sessions.pop_front();
        }
        cookie
    }

    fn sample(&self) {
        let (hits, misses) = totals();
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        if history.back().is_some_and(|s| s.at == at) {
            history.pop_back();
        }
        history.push_back(Sample { at, hits, misses });
        while history.len() > HISTORY {
            history.pop_front();
        }
    }
}

type Shared = Arc<Admin>;

/// Where the router is mounted (`/_cache`), for links that work with and
/// without a trailing slash.
fn base(parts: &Parts) -> String {
    parts
        .extensions
        .get::<axum::extract::NestedPath>()
        .map(|n| n.as_str().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

/// The admin router; nest it where you like (`.nest("/_cache", router(auth))`).
pub fn router(auth: Auth) -> Router {
    if auth.token.as_deref() == Some("") {
        tracing::error!(
            "ultracache: the admin page's bearer token is empty: it is closed to everyone"
        );
    }
    let admin = Arc::new(Admin {
        auth,
        csrf: random_token(),
        sessions: Mutex::new(VecDeque::new()),
        history: Mutex::new(VecDeque::new()),
    });
    admin.sample();
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        let weak = Arc::downgrade(&admin);
        handle.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(admin) => admin.sample(),
                    None => return,
                }
            }
        });
    }
    Router::new()
        .route("/", get(overview))
        .route("/urls", get(urls))
        .route("/models", get(models))
        .route("/login", get(login))
        .route("/purge", post(purge_form))
        .route("/invalidate", post(invalidate_form))
        .route("/clear", post(clear_form))
        .route("/api/stats", get(api_stats))
        .route("/api/urls", get(api_urls))
        .route("/api/models", get(api_models))
        .route("/api/purge", post(api_purge))
        .route("/api/invalidate", post(api_invalidate))
        .route("/api/clear", post(api_clear))
        .layer(axum::middleware::map_response(no_store))
        .with_state(admin)
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a query-string value.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/*:".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn ratio(hits: u64, misses: u64) -> String {
    if hits + misses == 0 {
        "–".into()
    } else {
        format!("{:.1} %", 100.0 * hits as f64 / (hits + misses) as f64)
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn human(d: Option<Duration>) -> String {
    match d {
        None => "never".into(),
        Some(d) if d.as_secs() >= 86_400 => format!("{} d", d.as_secs() / 86_400),
        Some(d) if d.as_secs() >= 3600 => format!("{} h", d.as_secs() / 3600),
        Some(d) if d.as_secs() >= 60 => format!("{} min", d.as_secs() / 60),
        Some(d) => format!("{} s", d.as_secs()),
    }
}

fn page(granted: &Granted, base: &str, title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title} · ultracache</title><style>\
         body{{font:15px/1.45 system-ui,sans-serif;margin:2rem;color:#1d2330;background:#fff}}\
         nav a{{margin-right:1rem}} table{{border-collapse:collapse;margin:1rem 0}}\
         th,td{{border-bottom:1px solid #dde;padding:.3rem .7rem;text-align:left}}\
         th a{{color:inherit}} .num{{text-align:right}} .big{{font-size:1.6rem;font-weight:600}}\
         .cards{{display:flex;gap:2rem}} form.inline{{display:inline}} button{{cursor:pointer}}\
         svg{{background:#f6f7fb;border:1px solid #dde}} code{{font-size:.85em}}\
         </style></head><body><nav><b>ultracache</b> · <a href=\"{home}\">overview</a>\
         <a href=\"{base}/urls\">cached URLs</a><a href=\"{base}/models\">models</a></nav>\
         <h1>{title}</h1>{body}<form method=\"post\" action=\"{base}/clear\">{csrf}\
         <button>Forget everything</button></form></body></html>",
        title = esc(title),
        home = esc(if base.is_empty() { "/" } else { base }),
        base = esc(base),
        csrf = csrf_field(granted),
    ))
}

fn csrf_field(granted: &Granted) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&granted.csrf)
    )
}

/// An SVG line of the hit ratio over the kept samples.
fn chart(admin: &Admin) -> String {
    let history: Vec<Sample> = admin
        .history
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .copied()
        .collect();
    let (w, h) = (480.0, 120.0);
    let mut points = Vec::new();
    for pair in history.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let (dh, dm) = (
            b.hits.saturating_sub(a.hits),
            b.misses.saturating_sub(a.misses),
        );
        let r = if dh + dm == 0 {
            0.0
        } else {
            dh as f64 / (dh + dm) as f64
        };
        points.push(r);
    }
    if points.is_empty() {
        points.push(totals().0 as f64 / (totals().0 + totals().1).max(1) as f64);
    }
    let step = if points.len() > 1 {
        w / (points.len() - 1) as f64
    } else {
        0.0
    };
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{:.1},{:.1}", i as f64 * step, h - r * (h - 10.0) - 5.0))
        .collect();
    format!(
        "<svg width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"hit ratio over time\">\
         <polyline fill=\"none\" stroke=\"#2f6fdf\" stroke-width=\"2\" points=\"{}\"/></svg>\
         <p>Hit ratio over the last {} samples (every 10 s).</p>",
        line.join(" "),
        points.len()
    )
}

async fn overview(State(admin): State<Shared>, granted: Granted, parts: Parts) -> Response {
    admin.sample();
    let stats = crate::stats();
    let (hits, misses) = totals();
    let mut body = format!(
        "<div class=\"cards\"><div><div class=\"big\">{}</div>entries</div>\
         <div><div class=\"big\">{}</div>memory</div>\
         <div><div class=\"big\">{}</div>hit ratio</div>\
         <div><div class=\"big\">{}</div>dependencies</div></div>{}",
        stats.entries,
        size(stats.caches.iter().map(|c| c.bytes).sum()),
        ratio(hits, misses),
        stats.dependencies,
        chart(&admin)
    );
    body.push_str("<h2>Per cache</h2><table><tr><th>cache</th><th>store</th><th class=num>entries</th><th class=num>memory</th><th class=num>hits</th><th class=num>misses</th><th class=num>ratio</th><th class=num>invalidated</th><th class=num>evicted</th></tr>");
    for c in &stats.caches {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td></tr>",
            esc(c.name), esc(&c.store), c.entries, size(c.bytes), c.hits, c.misses, ratio(c.hits, c.misses), c.invalidations, c.evictions
        );
    }
    body.push_str("</table><h2>Per route</h2><table><tr><th>route</th><th class=num>hits</th><th class=num>misses</th><th class=num>ratio</th></tr>");
    for r in route_stats() {
        let _ =
            write!(
            body,
            "<tr><td>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td></tr>",
            esc(&r.name), r.hits, r.misses, ratio(r.hits, r.misses)
        );
    }
    body.push_str("</table>");
    page(&granted, &base(&parts), "Cache overview", &body).into_response()
}

#[derive(Deserialize, Default)]
struct UrlQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    sort: Option<String>,
}

#[derive(Serialize)]
struct UrlRow {
    url: String,
    route: Option<String>,
    status: u16,
    hits: u64,
    misses: u64,
    age_secs: u64,
    expires_in_secs: Option<u64>,
    dependencies: Vec<String>,
    key: String,
}

fn url_rows(query: &UrlQuery) -> Vec<UrlRow> {
    let pattern = query
        .q
        .clone()
        .filter(|q| !q.is_empty())
        .unwrap_or_else(|| "*".into());
    let stats = url_stats();
    let mut rows: Vec<UrlRow> = find_urls(&[pattern])
        .into_iter()
        .map(|u| {
            let s = stats.iter().find(|s| s.name == u.url);
            UrlRow {
                hits: s.map_or(0, |s| s.hits),
                misses: s.map_or(0, |s| s.misses),
                age_secs: u.age.as_secs(),
                expires_in_secs: u.expires_in.map(|d| d.as_secs()),
                dependencies: u
                    .dependencies
                    .into_iter()
                    .filter(|d| !d.starts_with(crate::PATH_KIND.name()))
                    .collect(),
                url: u.url,
                route: u.route,
                status: u.status,
                key: u.key,
            }
        })
        .collect();
    match query.sort.as_deref() {
        Some("hits") => rows.sort_by(|a, b| b.hits.cmp(&a.hits).then(a.url.cmp(&b.url))),
        Some("misses") => rows.sort_by(|a, b| b.misses.cmp(&a.misses).then(a.url.cmp(&b.url))),
        Some("age") => rows.sort_by(|a, b| b.age_secs.cmp(&a.age_secs).then(a.url.cmp(&b.url))),
        Some("expiry") => rows.sort_by(|a, b| {
            a.expires_in_secs
                .unwrap_or(u64::MAX)
                .cmp(&b.expires_in_secs.unwrap_or(u64::MAX))
                .then(a.url.cmp(&b.url))
        }),
        _ => rows.sort_by(|a, b| a.url.cmp(&b.url)),
    }
    rows
}

async fn urls(granted: Granted, Query(query): Query<UrlQuery>, parts: Parts) -> Response {
    let rows = url_rows(&query);
    let q = query.q.clone().unwrap_or_default();
    let b = base(&parts);
    let link = |sort: &str, label: &str| {
        format!(
            "<a href=\"{b}/urls?sort={sort}&amp;q={}\">{label}</a>",
            esc(&enc(&q))
        )
    };
    let mut body = format!(
        "<form method=\"get\" action=\"{b}/urls\"><input name=\"q\" value=\"{}\" placeholder=\"/posts/*\"> \
         <button>Filter</button></form>\
         <form method=\"post\" action=\"{b}/purge\">{}<input type=\"hidden\" name=\"pattern\" value=\"{}\">\
         <button>Purge {} matching</button></form>\
         <table id=\"urls\"><tr><th>{}</th><th>route</th><th class=num>status</th><th class=num>{}</th>\
         <th class=num>{}</th><th class=num>{}</th><th class=num>{}</th><th>dependencies</th><th></th></tr>",
        esc(&q),
        csrf_field(&granted),
        esc(if q.is_empty() { "*" } else { &q }),
        rows.len(),
        link("url", "URL"),
        link("hits", "hits"),
        link("misses", "misses"),
        link("age", "age"),
        link("expiry", "expires in"),
    );
    for r in &rows {
        let deps: Vec<String> = r
            .dependencies
            .iter()
            .map(|d| {
                format!(
                    "<a href=\"{b}/models?dep={}\"><code>{}</code></a>",
                    esc(&enc(d)),
                    esc(d)
                )
            })
            .collect();
        let _ = write!(
            body,
            "<tr><td class=\"url\">{}</td><td>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td>\
             <td class=num>{}</td><td class=num>{}</td><td>{}</td><td><form class=inline method=\"post\" action=\"{b}/purge\">{}\
             <input type=\"hidden\" name=\"pattern\" value=\"{}\"><button>Purge</button></form></td></tr>",
            esc(&r.url),
            esc(r.route.as_deref().unwrap_or("")),
            r.status,
            r.hits,
            r.misses,
            human(Some(Duration::from_secs(r.age_secs))),
            human(r.expires_in_secs.map(Duration::from_secs)),
            if deps.len() > 6 {
                format!(
                    "{} <details><summary>{} more</summary>{}</details>",
                    deps[..6].join(" "),
                    deps.len() - 6,
                    deps[6..].join(" ")
                )
            } else {
                deps.join(" ")
            },
            csrf_field(&granted),
            esc(r.url.split('?').next().unwrap_or_default()),
        );
    }
    body.push_str("</table>");
    page(&granted, &b, "Cached URLs", &body).into_response()
}

#[derive(Deserialize, Default)]
struct ModelQuery {
    #[serde(default)]
    dep: Option<String>,
}

#[derive(Serialize)]
struct ModelView {
    dependency: String,
    entries: usize,
    urls: Vec<String>,
}

fn model_view(dep: &str) -> Option<ModelView> {
    let parsed = crate::Dep::parse(dep)?;
    let urls = find_urls(&["*"])
        .into_iter()
        .filter(|u| u.dependencies.iter().any(|d| d == dep))
        .map(|u| u.url)
        .collect();
    Some(ModelView {
        dependency: dep.to_owned(),
        entries: crate::dependents(&parsed),
        urls,
    })
}

async fn models(granted: Granted, Query(query): Query<ModelQuery>, parts: Parts) -> Response {
    let dep = query.dep.unwrap_or_default();
    let b = base(&parts);
    let mut body = format!(
        "<form method=\"get\" action=\"{b}/models\"><input name=\"dep\" value=\"{}\" placeholder=\"blog.post:42\"> \
         <button>Show</button></form>",
        esc(&dep)
    );
    if let Some(view) = model_view(&dep) {
        let _ = write!(
            body,
            "<p><b>{}</b> entries depend on <code>{}</code>.</p>\
             <form method=\"post\" action=\"{b}/invalidate\">{}<input type=\"hidden\" name=\"dep\" value=\"{}\">\
             <button>Invalidate {}</button></form><ul>",
            view.entries,
            esc(&view.dependency),
            csrf_field(&granted),
            esc(&view.dependency),
            esc(&view.dependency)
        );
        for u in &view.urls {
            let _ = write!(body, "<li>{}</li>", esc(u));
        }
        body.push_str("</ul>");
    }
    page(&granted, &b, "Models", &body).into_response()
}

#[derive(Deserialize)]
struct LoginQuery {
    token: String,
    #[serde(default)]
    next: Option<String>,
}

async fn login(
    State(admin): State<Shared>,
    Query(query): Query<LoginQuery>,
    parts: Parts,
) -> Response {
    let open = admin
        .auth
        .token
        .as_deref()
        .is_some_and(|t| !t.is_empty() && same(&query.token, t));
    if !open {
        return StatusCode::FORBIDDEN.into_response();
    }
    let b = base(&parts);
    let home = if b.is_empty() {
        "/".to_owned()
    } else {
        b.clone()
    };
    let next = query.next.filter(|n| safe_next(n)).unwrap_or(home);
    let path = if b.is_empty() { "/".to_owned() } else { b };
    let secure = if https(&parts) { "; Secure" } else { "" };
    let mut headers = HeaderMap::new();
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={}; HttpOnly; SameSite=Strict; Path={path}{secure}",
        admin.sign_in()
    )) {
        headers.insert(SET_COOKIE, cookie);
    }
    if let Ok(location) = HeaderValue::from_str(&next) {
        headers.insert(LOCATION, location);
    }
    (StatusCode::SEE_OTHER, headers).into_response()
}

#[derive(Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    dep: Option<String>,
}

fn back(parts: &Parts) -> Response {
    let to = parts
        .headers
        .get(axum::http::header::REFERER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("./")
        .to_owned();
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&to) {
        headers.insert(LOCATION, v);
    }
    (StatusCode::SEE_OTHER, headers).into_response()
}

async fn purge_form(granted: Granted, parts: Parts, Form(form): Form<ActionForm>) -> Response {
    if let Err(denied) = granted.check(&form.csrf) {
        return denied.into_response();
    }
    if let Some(pattern) = form.pattern.filter(|p| !p.is_empty()) {
        purge_urls(&[pattern]);
    }
    back(&parts)
}

async fn invalidate_form(granted: Granted, parts: Parts, Form(form): Form<ActionForm>) -> Response {
    if let Err(denied) = granted.check(&form.csrf) {
        return denied.into_response();
    }
    if let Some(dep) = form.dep.as_deref().and_then(crate::Dep::parse) {
        crate::invalidate_deps(&[dep]);
    }
    back(&parts)
}

async fn clear_form(granted: Granted, parts: Parts, Form(form): Form<ActionForm>) -> Response {
    if let Err(denied) = granted.check(&form.csrf) {
        return denied.into_response();
    }
    crate::clear();
    back(&parts)
}

#[derive(Serialize)]
struct StatsView {
    entries: u64,
    dependencies: usize,
    hits: u64,
    misses: u64,
    caches: Vec<CacheRow>,
    routes: Vec<crate::http::UrlStats>,
    history: Vec<Sample>,
}

#[derive(Serialize)]
struct CacheRow {
    name: &'static str,
    module: &'static str,
    store: String,
    entries: u64,
    bytes: u64,
    hits: u64,
    misses: u64,
    inserts: u64,
    invalidations: u64,
    evictions: u64,
    expirations: u64,
}

async fn api_stats(State(admin): State<Shared>, _: Granted) -> Response {
    admin.sample();
    let stats = crate::stats();
    let (hits, misses) = totals();
    Json(StatsView {
        entries: stats.entries,
        dependencies: stats.dependencies,
        hits,
        misses,
        caches: stats
            .caches
            .iter()
            .map(|c| CacheRow {
                name: c.name,
                module: c.module,
                store: c.store.clone(),
                entries: c.entries,
                bytes: c.bytes,
                hits: c.hits,
                misses: c.misses,
                inserts: c.inserts,
                invalidations: c.invalidations,
                evictions: c.evictions,
                expirations: c.expirations,
            })
            .collect(),
        routes: route_stats(),
        history: admin
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect(),
    })
    .into_response()
}

async fn api_urls(_: Granted, Query(query): Query<UrlQuery>) -> Response {
    Json(url_rows(&query)).into_response()
}

async fn api_models(_: Granted, Query(query): Query<ModelQuery>) -> Response {
    match query.dep.as_deref().and_then(model_view) {
        Some(view) => Json(view).into_response(),
        None => (StatusCode::BAD_REQUEST, "dep=kind:id or dep=kind").into_response(),
    }
}

#[derive(Deserialize)]
struct PurgeBody {
    #[serde(default)]
    csrf: String,
    patterns: Vec<String>,
}

async fn api_purge(granted: Granted, Json(body): Json<PurgeBody>) -> Response {
    if let Err(denied) = granted.check(&body.csrf) {
        return denied.into_response();
    }
    let purged: Vec<String> = purge_urls(&body.patterns)
        .into_iter()
        .map(|u| u.url)
        .collect();
    Json(purged).into_response()
}

#[derive(Deserialize)]
struct InvalidateBody {
    #[serde(default)]
    csrf: String,
    dep: String,
}

async fn api_invalidate(granted: Granted, Json(body): Json<InvalidateBody>) -> Response {
    if let Err(denied) = granted.check(&body.csrf) {
        return denied.into_response();
    }
    match crate::Dep::parse(&body.dep) {
        Some(dep) => Json(crate::invalidate_deps(&[dep])).into_response(),
        None => (StatusCode::BAD_REQUEST, "dep=kind:id or dep=kind").into_response(),
    }
}

#[derive(Deserialize)]
struct ClearBody {
    #[serde(default)]
    csrf: String,
    /// One named store only.
    #[serde(default)]
    store: Option<String>,
}

async fn api_clear(granted: Granted, Json(body): Json<ClearBody>) -> Response {
    if let Err(denied) = granted.check(&body.csrf) {
        return denied.into_response();
    }
    match body.store {
        Some(store) if !crate::clear_store(&store) => {
            (StatusCode::NOT_FOUND, format!("no store named {store:?}")).into_response()
        }
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => {
            crate::clear();
            StatusCode::NO_CONTENT.into_response()
        }
    }
}
