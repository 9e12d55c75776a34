//! `ultracache proxy` (the real binary) in front of a real origin app sharing
//! pages through a real Redis: misses go to the origin, hits come from Redis
//! (also once the origin is gone), stale pages are served while the origin is
//! asked to regenerate them, and hop-by-hop headers stay on their hop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use ultracache::http::CacheLayer;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn mark(client: &reqwest::Client, url: &str) -> (String, String) {
    let r = client.get(url).send().await.unwrap();
    let mark = r
        .headers()
        .get("x-ultracache-proxy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (mark, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_serves_pages_from_redis_and_forwards_the_rest() {
    let redis_url =
        std::env::var("ULTRACACHE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let reachable = redis::Client::open(redis_url.as_str())
        .ok()
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)).ok())
        .is_some();
    if !reachable {
        let message = format!("no Redis at {redis_url}: the proxy test cannot run");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message} (CI=true: a skipped test is a failed test)");
        }
        eprintln!("\n*** SKIPPED: {message} ***\n");
        return;
    }
    let prefix = format!("proxy-{}", std::process::id());
    ultracache::Config::new()
        .redis(redis_url.clone())
        .redis_prefix(prefix.clone())
        .install()
        .unwrap();

    // The origin: pages fresh for a second, kept ten minutes, shared.
    let runs = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/page/{id}",
            get(
                |State(runs): State<Arc<AtomicUsize>>, Path(id): Path<u32>| async move {
                    format!("page {id} run {}", runs.fetch_add(1, Ordering::SeqCst) + 1)
                },
            ),
        )
        .route(
            "/echo",
            get(|headers: HeaderMap| async move {
                format!(
                    "secret: {}",
                    headers.get("x-secret").map_or("none", |_| "leaked")
                )
            }),
        )
        .layer(
            CacheLayer::new(Duration::from_secs(1))
                .stale_while_revalidate(Duration::from_secs(600))
                .name("proxied")
                .shared()
                .warm_token("warm-secret")
                .ignore_paths(["/echo"]),
        )
        .with_state(Arc::clone(&runs));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    let port = free_port();
    let _proxy = Killed(
        Command::new(env!("CARGO_BIN_EXE_ultracache"))
            .args(["--redis", &redis_url, "--prefix", &prefix, "proxy"])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--origin",
                &origin,
            ])
            .args(["--cache", "proxied", "--warm-token", "warm-secret"])
            .stdout(Stdio::null())
            .spawn()
            .expect("the proxy starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the proxy listens");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let page = format!("http://127.0.0.1:{port}/page/1");

    // A miss goes to the origin, which stores the page in Redis.
    assert_eq!(
        mark(&client, &page).await,
        ("miss".into(), "page 1 run 1".into())
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while ultracache::redis::tier_stats().stores < 1 {
        assert!(Instant::now() < deadline, "the page reaches Redis");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Then the proxy answers from Redis.
    assert_eq!(
        mark(&client, &page).await,
        ("hit".into(), "page 1 run 1".into())
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // Past its fresh second: served stale, and the origin is asked to regenerate.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        mark(&client, &page).await,
        ("stale".into(), "page 1 run 1".into())
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while runs.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the origin regenerates the page");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Hop-by-hop headers stay on their hop.
    let echo = client
        .get(format!("http://127.0.0.1:{port}/echo"))
        .header("connection", "x-secret")
        .header("x-secret", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(echo.text().await.unwrap(), "secret: none");

    // The origin goes away: cached pages are still served.
    let _ = stop.send(());
    let _ = server.await;
    let (served, body) = mark(&client, &page).await;
    assert!(served == "hit" || served == "stale", "{served}");
    assert!(body.starts_with("page 1 run"), "{body}");
}

/// `ultracache proxy --http-cache` in front of any origin: what the origin
/// says may be kept is served from the proxy, the rest goes through with
/// method, path, query and body unchanged, and a successful PUT drops its URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_cache_proxy_keeps_what_the_origin_allows_and_forwards_the_rest() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let app = Router::new()
        .route(
            "/kept",
            get(move || {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                async move { ([("cache-control", "max-age=3600")], format!("kept run {n}")) }
            })
            .put(|body: String| async move { format!("stored {body}") }),
        )
        .route(
            "/private",
            get(|headers: HeaderMap| async move {
                let who = headers
                    .get("x-user")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("nobody")
                    .to_owned();
                ([("cache-control", "private, max-age=3600")], who)
            }),
        )
        .route(
            "/echo/{x}",
            axum::routing::post(
                |Path(x): Path<String>, query: axum::extract::RawQuery, body: String| async move {
                    format!("{x} {} {body}", query.0.unwrap_or_default())
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let port = free_port();
    let _proxy = Killed(
        Command::new(env!("CARGO_BIN_EXE_ultracache"))
            .args([
                "proxy",
                "--http-cache",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--origin", &origin])
            .stdout(Stdio::null())
            .spawn()
            .expect("the proxy starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the proxy listens");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let get = |path: &str| {
        let (client, url) = (client.clone(), format!("{base}{path}"));
        async move {
            let r = client.get(url).send().await.unwrap();
            let cache = r.headers()["x-cache"].to_str().unwrap().to_owned();
            (cache, r.text().await.unwrap())
        }
    };
    assert_eq!(get("/kept").await, ("MISS".into(), "kept run 1".into()));
    assert_eq!(get("/kept").await, ("HIT".into(), "kept run 1".into()));
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // A private response is never served to another visitor.
    let alice = client
        .get(format!("{base}/private"))
        .header("x-user", "alice")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(alice, "alice");
    assert_eq!(get("/private").await.1, "nobody");

    // Everything else is forwarded as it came.
    let echoed = client
        .post(format!("{base}/echo/a%20b?q=1&q=2"))
        .body("payload")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(echoed, "a b q=1&q=2 payload");

    // A successful PUT to the URL drops what was kept for it.
    let put = client
        .put(format!("{base}/kept"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    assert_eq!(get("/kept").await, ("MISS".into(), "kept run 2".into()));
}
