//! `ultracache proxy`: a small reverse proxy that serves pages straight from
//! the shared Redis tier (cached pages survive app restarts and deploys),
//! forwards everything else to the origin, and asks the origin to regenerate
//! stale pages in the background (django-better-cache's proxy server).
//!
//! With `--http-cache`, it is instead a caching reverse proxy for any HTTP
//! origin: responses are kept in this process as their own headers allow
//! (`CacheLayer::freshness_from_response`), a shared cache by RFC 9111.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use ultracache::http::PageReader;

/// How responses are marked: `hit`, `stale` or `miss`.
const MARK: &str = "x-ultracache-proxy";

#[derive(clap::Args)]
pub(crate) struct ProxyArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// The origin app.
    #[arg(long)]
    origin: String,
    /// The name of the app's shared `CacheLayer` (`CacheLayer::name`).
    #[arg(long, default_value = "http")]
    cache: String,
    /// The app's warm-up token, to ask it to regenerate stale pages.
    #[arg(long, env = "ULTRACACHE_WARM_TOKEN", hide_env_values = true)]
    warm_token: Option<String>,
    /// Largest request body forwarded.
    #[arg(long, default_value_t = 16 << 20)]
    max_body: usize,
    /// Cache the origin's responses in this process, as a shared HTTP cache
    /// (RFC 9111) takes them from their headers: no Redis, any origin.
    #[arg(long)]
    pub(crate) http_cache: bool,
    /// With --http-cache: the longest any response is kept, fresh or stale
    /// (kept stale, it can be revalidated), in seconds.
    #[arg(long, default_value_t = 86_400)]
    keep: u64,
    /// With --http-cache: requests that carry cookies use the cache too (by
    /// default they go to the origin, as Varnish's built-in rules send
    /// them). A response is still only served to requests its own `Vary`
    /// matches, and responses that are `private` or set cookies are never
    /// stored.
    #[arg(long)]
    cache_cookie_requests: bool,
}

struct Proxy {
    reader: PageReader,
    origin: String,
    client: reqwest::Client,
    warm_token: Option<String>,
    max_body: usize,
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1),
/// plus the ones a `Connection` header names.
fn hop_by_hop(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ]
    .iter()
    .map(|n| HeaderName::from_static(n))
    .collect();
    for value in headers.get_all("connection") {
        if let Ok(v) = value.to_str() {
            names.extend(
                v.split(',')
                    .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
            );
        }
    }
    names
}

fn strip(headers: &mut HeaderMap) {
    for name in hop_by_hop(headers) {
        headers.remove(&name);
    }
}

impl Proxy {
    /// The origin and the client that reaches it (no redirects followed,
    /// no environment proxy).
    fn new(args: &ProxyArgs, warm_token: Option<String>) -> Result<Self, String> {
        Ok(Proxy {
            reader: PageReader::new(&args.cache),
            origin: args.origin.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| e.to_string())?,
            warm_token,
            max_body: args.max_body,
        })
    }
}

pub(crate) async fn run(args: ProxyArgs, redis: &str, prefix: &str) -> Result<(), String> {
    ultracache::Config::new()
        .redis(redis.to_owned())
        .redis_prefix(prefix.to_owned())
        .install()
        .map_err(|e| e.to_string())?;
    let proxy = Arc::new(Proxy::new(&args, args.warm_token.clone())?);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("{}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("proxy on http://{addr} → {}", proxy.origin);
    let app = Router::new().fallback(handle).with_state(proxy);
    axum::serve(listener, app).await.map_err(|e| e.to_string())
}

/// A caching reverse proxy in front of any origin: every request is
/// forwarded unchanged (method, path, query, headers but hop-by-hop ones,
/// body) unless the cache answers it.
pub(crate) async fn run_http_cache(args: ProxyArgs) -> Result<(), String> {
    ultracache::Config::new()
        .install()
        .map_err(|e| e.to_string())?;
    let proxy = Arc::new(Proxy::new(&args, None)?);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("{}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("caching proxy on http://{addr} → {}", proxy.origin);
    let mut layer = ultracache::http::CacheLayer::new(std::time::Duration::from_secs(args.keep))
        .name("proxy")
        .freshness_from_response()
        .max_body_size(args.max_body);
    if args.cache_cookie_requests {
        layer = layer.cache_requests_with_cookies();
    }
    let app = Router::new().fallback(pass).layer(layer).with_state(proxy);
    axum::serve(listener, app).await.map_err(|e| e.to_string())
}

async fn pass(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, proxy.max_body).await {
        Ok(b) => b,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let mut response = forward(&proxy, &parts, body).await;
    response.headers_mut().remove(MARK);
    response
}

async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let cacheable = (parts.method == Method::GET || parts.method == Method::HEAD)
        && !parts.headers.contains_key("authorization");
    if cacheable {
        if let Some((response, stale)) = proxy.reader.lookup(&parts, MARK).await {
            if stale {
                regenerate(&proxy, &parts);
            }
            return response;
        }
    }
    let body = match axum::body::to_bytes(body, proxy.max_body).await {
        Ok(b) => b,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    forward(&proxy, &parts, body).await
}

/// Asks the origin, with the warm-up token, to compute a stale page again.
fn regenerate(proxy: &Arc<Proxy>, parts: &axum::http::request::Parts) {
    let Some(token) = proxy.warm_token.clone() else {
        return;
    };
    let url = format!(
        "{}{}",
        proxy.origin,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let host = parts.headers.get(axum::http::header::HOST).cloned();
    let client = proxy.client.clone();
    tokio::spawn(async move {
        let mut request = client.get(url).header("x-ultracache-warm", token);
        if let Some(host) = host {
            request = request.header("host", host.as_bytes());
        }
        let _ = request.send().await;
    });
}

async fn forward(
    proxy: &Proxy,
    parts: &axum::http::request::Parts,
    body: bytes::Bytes,
) -> Response {
    let url = format!(
        "{}{}",
        proxy.origin,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    // The Host the client asked for goes through (as Varnish passes it):
    // the app keys its pages on it, and so does the page reader here.
    let mut headers = parts.headers.clone();
    strip(&mut headers);
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
        .unwrap_or(reqwest::Method::GET);
    let mut request = proxy.client.request(method, &url).body(body);
    for (name, value) in &headers {
        request = request.header(name.as_str(), value.as_bytes());
    }
    let upstream = match request.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("origin: {e}")).into_response(),
    };
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out = HeaderMap::new();
    for (name, value) in upstream.headers() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            out.append(n, v);
        }
    }
    strip(&mut out);
    if parts.method != Method::HEAD {
        // The body is sent whole; a HEAD's length is the GET's.
        out.remove("content-length");
    }
    let body = match upstream.bytes().await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("origin: {e}")).into_response(),
    };
    out.insert(MARK, HeaderValue::from_static("miss"));
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = out;
    response
}
