//! Who may use the admin page: the bearer token or custom check, browser
//! sessions with a CSRF token each, and the one access check every handler
//! goes through ([`Granted`], an extractor).

use super::*;

/// Who may use the admin page.
#[derive(Clone)]
pub struct Auth {
    pub(super) token: Option<Arc<str>>,
    pub(super) check: Option<Check>,
}

/// A custom access check.
pub(super) type Check = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;

/// Why a request was turned away.
#[derive(Clone, Copy, Debug)]
pub(super) enum Denied {
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

pub(super) const COOKIE_NAME: &str = "ultracache_admin";

/// How a request got in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// With a header: not forgeable by another site, no CSRF token needed.
    Header,
    /// With a cookie or a custom check: forms need the CSRF token.
    Session,
}

pub(super) struct Session {
    pub(super) cookie: String,
    pub(super) csrf: String,
}

/// Browsers signed in at once; the oldest session ends past this.
pub(super) const MAX_SESSIONS: usize = 64;

/// A request the admin let in: how, and the CSRF token its forms carry.
pub(super) struct Granted {
    pub(super) access: Access,
    pub(super) csrf: String,
}

impl Granted {
    /// Whether a form or API call may act: requests signed in by a header
    /// need no token; sessions must send theirs.
    pub(super) fn check(&self, csrf: &str) -> Result<(), Denied> {
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

pub(super) fn random_token() -> String {
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
pub(super) fn same(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where a login may send the browser next: a path on this site, never
/// another origin (`//evil`, `/\evil`, `https:evil`).
pub(super) fn safe_next(next: &str) -> bool {
    let mut chars = next.chars();
    chars.next() == Some('/')
        && !matches!(chars.next(), Some('/' | '\\'))
        && !next.chars().any(|c| c.is_control() || c == '\\')
}

/// Whether the request reached the site over HTTPS (directly or through a
/// proxy that says so).
pub(super) fn https(parts: &Parts) -> bool {
    parts.uri.scheme_str() == Some("https")
        || parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

impl Admin {
    pub(super) fn access(&self, parts: &Parts) -> Result<Granted, Denied> {
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
    pub(super) fn session(&self, cookie: &str) -> Option<String> {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions
            .iter()
            .find(|s| same(cookie, &s.cookie))
            .map(|s| s.csrf.clone())
    }

    /// Starts a session; returns its cookie value.
    pub(super) fn sign_in(&self) -> String {
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
}

#[derive(Deserialize)]
pub(super) struct LoginQuery {
    pub(super) token: String,
    #[serde(default)]
    pub(super) next: Option<String>,
}

pub(super) async fn login(
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
