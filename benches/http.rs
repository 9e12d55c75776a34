//! Throughput of a cached page, measured with `wrk` on loopback (2 threads, 64
//! connections), in one run, against:
//! - the same handler uncached (a real SQLite query that renders 50 rows),
//! - a static file of the same bytes served by nginx,
//! - the same page served from Varnish's cache in front of the uncached app.
//!
//! `cargo bench --bench http` (needs `wrk`, `nginx` and `varnish`:
//! `apt-get install wrk nginx varnish`; what is missing is skipped).

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::SqlitePool;
use ultracache::http::CacheLayer;

const SECONDS: &str = "5";

fn main() {
    if !on_path("wrk") {
        println!("http bench skipped: wrk is not installed (apt-get install wrk nginx varnish)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("ultracache-http-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("www")).expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let app_port = rt.block_on(start_app(&dir));
    let app = format!("http://127.0.0.1:{app_port}");

    let page = rt
        .block_on(async { reqwest::get(format!("{app}/uncached")).await?.bytes().await })
        .expect("page");
    std::fs::write(dir.join("www/page.html"), &page).expect("static copy");

    let mut rows: Vec<(&str, (f64, String))> = Vec::new();
    rows.push(("ultracache hit", wrk(&format!("{app}/cached"))));
    rows.push(("same handler, uncached", wrk(&format!("{app}/uncached"))));

    let mut children = Vec::new();
    if let Some((child, port)) = start_nginx(&dir) {
        children.push(child);
        rows.push((
            "nginx, static file",
            wrk(&format!("http://127.0.0.1:{port}/page.html")),
        ));
    } else {
        println!("nginx not installed: skipped");
    }
    if let Some((child, port)) = start_varnish(&dir, app_port) {
        children.push(child);
        let url = format!("http://127.0.0.1:{port}/uncached");
        rt.block_on(async { reqwest::get(&url).await.map(|_| ()) })
            .ok();
        rows.push(("Varnish hit (in front of uncached app)", wrk(&url)));
    } else {
        println!("varnishd not installed: skipped");
    }
    for child in children {
        stop(child);
    }

    let ours = rows[0].1 .0;
    println!(
        "\npage: {} bytes; wrk -t2 -c64 --latency -d{SECONDS}s",
        page.len()
    );
    println!(
        "{:<42} {:>12} {:>10} {:>16}",
        "target", "requests/s", "p99", "ultracache ÷ it"
    );
    for (name, (rps, p99)) in &rows {
        println!("{name:<42} {rps:>12.0} {p99:>10} {:>16.2}", ours / rps);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn on_path(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn render(State(db): State<SqlitePool>) -> String {
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, title, body FROM posts ORDER BY id DESC LIMIT 50")
            .fetch_all(&db)
            .await
            .unwrap_or_default();
    let mut html = String::from("<!doctype html><html><body><ul>");
    for (id, title, body) in rows {
        let _ = write!(html, "<li id=\"{id}\"><h2>{title}</h2><p>{body}</p></li>");
    }
    html.push_str("</ul></body></html>");
    html
}

async fn start_app(dir: &Path) -> u16 {
    let options = SqliteConnectOptions::new()
        .filename(dir.join("bench.db"))
        .create_if_missing(true);
    let db = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .expect("sqlite");
    sqlx::query("CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT, body TEXT)")
        .execute(&db)
        .await
        .expect("schema");
    for id in 0..1000 {
        sqlx::query("INSERT INTO posts (id, title, body) VALUES (?, ?, ?)")
            .bind(id)
            .bind(format!("Post number {id}"))
            .bind("Lorem ipsum dolor sit amet, consectetur adipiscing elit.")
            .execute(&db)
            .await
            .expect("row");
    }
    let app = Router::new()
        .route(
            "/cached",
            get(render).layer(CacheLayer::new(Duration::from_secs(3600))),
        )
        .route("/uncached", get(render))
        .with_state(db);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

fn start_nginx(dir: &Path) -> Option<(Child, u16)> {
    let nginx = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|c| on_path(c))?;
    let port = free_port();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; worker_processes 2; user root; pid {d}/nginx.pid;\n\
             error_log {d}/nginx-error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; server {{ listen 127.0.0.1:{port}; root {d}/www; }} }}\n",
            d = dir.display()
        ),
    )
    .ok()?;
    let child = Command::new(nginx)
        .args([
            "-c",
            &conf.display().to_string(),
            "-p",
            &dir.display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_for(port).then_some((child, port))
}

fn start_varnish(dir: &Path, backend: u16) -> Option<(Child, u16)> {
    let varnishd = ["/usr/sbin/varnishd", "varnishd"]
        .into_iter()
        .find(|c| on_path(c))?;
    let port = free_port();
    let child = Command::new(varnishd)
        .args([
            "-F",
            "-a",
            &format!("127.0.0.1:{port}"),
            "-b",
            &format!("127.0.0.1:{backend}"),
            "-n",
            &dir.join("varnish").display().to_string(),
            "-s",
            "malloc,64m",
            "-T",
            "none",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_for(port).then_some((child, port))
}

/// Stops a server and the processes it started: SIGTERM to the master, which
/// takes its workers down with it (SIGKILL would orphan them).
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Waits (bounded) until something listens on `port`.
fn wait_for(port: u16) -> bool {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Requests per second, and the p99 latency as wrk prints it.
fn wrk(url: &str) -> (f64, String) {
    let out = Command::new("wrk")
        .args(["-t2", "-c64", "--latency", &format!("-d{SECONDS}s"), url])
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default();
    (rps, p99)
}
