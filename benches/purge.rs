//! Downstream purging, in one run against two real Varnish instances (URL mode
//! and xkey mode) in front of one app: the purge requests sent when an object
//! shown on 100 pages with 3 variants each is written, and the write's own
//! latency with purging on and off.
//!
//! `cargo bench --bench purge` (needs varnishd and varnish-modules).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path as UrlPath;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use ultracache::http::CacheLayer;
use ultracache::purge::{
    self, HttpClient, PurgeFuture, PurgeOptions, PurgeRequest, Purger, VarnishMode, VarnishPurger,
};
use ultracache::{invalidate, tracks, Trackable};

const PAGES: u32 = 100;
const LANGS: [&str; 3] = ["en", "fr", "de"];

#[derive(Clone, Trackable)]
#[trackable(kind = "bench.purge-post")]
struct Post {
    id: i64,
}

#[tracks]
fn load(id: i64) -> Post {
    Post { id }
}

/// Counts the requests a purger sends.
struct Counting {
    inner: VarnishPurger,
    sent: AtomicU64,
}

impl Purger for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn relevant(&self, request: &PurgeRequest) -> Option<PurgeRequest> {
        self.inner.relevant(request)
    }
    fn purge<'a>(&'a self, client: &'a HttpClient, request: &'a PurgeRequest) -> PurgeFuture<'a> {
        self.sent.fetch_add(1, SeqCst);
        self.inner.purge(client, request)
    }
}

fn main() {
    if Command::new("varnishd").arg("-V").output().is_err() {
        println!("purge bench skipped: varnishd is not installed");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let app = Router::new()
        .route(
            "/bench/{page}",
            get(
                |UrlPath(page): UrlPath<u32>, headers: HeaderMap| async move {
                    let lang = headers
                        .get("accept-language")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("en")
                        .to_owned();
                    let post = load(1);
                    let mut r =
                        format!("page {page} shows post {} in {lang}", post.id).into_response();
                    r.headers_mut()
                        .insert("vary", HeaderValue::from_static("accept-language"));
                    r
                },
            ),
        )
        .layer(
            CacheLayer::new(Duration::from_secs(3600))
                .shared_max_age(Duration::from_secs(3600))
                .surrogate_keys(HeaderName::from_static("xkey")),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app_port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");

    let fill = |base: String| {
        let client = client.clone();
        async move {
            for page in 0..PAGES {
                for lang in LANGS {
                    client
                        .get(format!("{base}/bench/{page}"))
                        .header("accept-language", lang)
                        .send()
                        .await
                        .expect("page");
                }
            }
        }
    };

    // Purging off: the write drops 300 entries in process.
    fill(format!("http://127.0.0.1:{app_port}")).await;
    let start = Instant::now();
    let dropped = invalidate(&load(1));
    let off = start.elapsed();

    let dir = std::env::temp_dir().join(format!("ultracache-purge-bench-{}", std::process::id()));
    let Some((url_varnish, url_port)) = varnish(&dir.join("url"), app_port) else {
        println!("purge bench skipped: varnishd did not start");
        return;
    };
    let Some((key_varnish, key_port)) = varnish(&dir.join("xkey"), app_port) else {
        println!("purge bench skipped: varnishd with xkey did not start");
        return;
    };
    let by_url = Arc::new(Counting {
        inner: VarnishPurger::new(format!("http://127.0.0.1:{url_port}"), VarnishMode::Url),
        sent: AtomicU64::new(0),
    });
    let by_key = Arc::new(Counting {
        inner: VarnishPurger::new(format!("http://127.0.0.1:{key_port}"), VarnishMode::Xkey),
        sent: AtomicU64::new(0),
    });
    purge::install(
        vec![
            Arc::clone(&by_url) as Arc<dyn Purger>,
            Arc::clone(&by_key) as Arc<dyn Purger>,
        ],
        PurgeOptions::default(),
    )
    .expect("installed");

    // Purging on: the same write, with both proxies holding the pages.
    fill(format!("http://127.0.0.1:{url_port}")).await;
    fill(format!("http://127.0.0.1:{key_port}")).await;
    let start = Instant::now();
    let dropped_on = invalidate(&load(1));
    let on = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    while purge::stats().sent + purge::stats().failed < purge::stats().queued
        || purge::stats().queued == 0
    {
        assert!(Instant::now() < deadline, "purges never finished");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    println!("object shown on {PAGES} pages x {} variants ({dropped} and {dropped_on} entries dropped in process)", LANGS.len());
    println!(
        "purge requests sent, URL mode:  {}",
        by_url.sent.load(SeqCst)
    );
    println!(
        "purge requests sent, xkey mode: {}",
        by_key.sent.load(SeqCst)
    );
    println!(
        "write latency, purging off: {off:?}; on: {on:?}; ratio {:.2}",
        on.as_secs_f64() / off.as_secs_f64()
    );
    println!("purges failed: {}", purge::stats().failed);
    stop(url_varnish);
    stop(key_varnish);
    let _ = std::fs::remove_dir_all(&dir);
}

fn varnish(dir: &Path, backend: u16) -> Option<(Child, u16)> {
    std::fs::create_dir_all(dir).ok()?;
    let vcl = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy/varnish/ultracache.vcl"),
    )
    .ok()?;
    let vcl_path = dir.join("ultracache.vcl");
    std::fs::write(
        &vcl_path,
        vcl.replace("\"8000\"", &format!("\"{backend}\"")),
    )
    .ok()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("varnishd")
        .args(["-F", "-a", &format!("127.0.0.1:{port}"), "-f"])
        .arg(&vcl_path)
        .arg("-n")
        .arg(dir.join("work"))
        .args(["-s", "malloc,64m", "-T", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((child, port));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
