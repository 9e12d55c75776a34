//! The flagship blog on PostgreSQL, two nodes on one database: a `psql`
//! write — made by no node — shows on the next page load of both, and a
//! comment posted on one node shows on the other. Against the real server
//! (`ULTRACACHE_PG_URL`, default the local `test` database's server); each
//! run uses a database of its own.

#[path = "../examples/blog/app.rs"]
mod app;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD: &str = "ULTRACACHE_TEST_BLOG_PG_CHILD";

fn server_url() -> String {
    std::env::var("ULTRACACHE_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The URL of database `name` on the same server.
fn database_url(name: &str) -> String {
    let server = server_url();
    let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

/// A fresh database of this run's own, or `None` (a loud skip) without a
/// server; in CI a missing server fails.
async fn fresh_database() -> Option<String> {
    let name = format!("ultracache_blog_{}", std::process::id());
    let admin = match sqlx::PgPool::connect(&server_url()).await {
        Ok(pool) => pool,
        Err(e) => {
            let message = format!("no PostgreSQL at {}: {e}", server_url());
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{message} (CI=true: a skipped test is a failed test)");
            }
            eprintln!("\n*** SKIPPED: {message} ***\n");
            return None;
        }
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    Some(database_url(&name))
}

/// Serves the blog on `url` on a free port; returns its base URL.
async fn serve(url: &str) -> String {
    let db = app::open(url).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app::router(db)).await.unwrap() });
    base
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn get(base: &str, path: &str) -> (String, String) {
    let r = client().get(format!("{base}{path}")).send().await.unwrap();
    assert!(r.status().is_success(), "GET {base}{path}: {}", r.status());
    let cache = r.headers()["x-cache"].to_str().unwrap().to_owned();
    (cache, r.text().await.unwrap())
}

/// Loads `path` until it contains `text` (bounded: a failure must not hang).
async fn until_shown(base: &str, path: &str, text: &str) {
    let start = Instant::now();
    loop {
        if get(base, path).await.1.contains(text) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{base}{path} never showed {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_psql_write_and_a_comment_on_one_node_show_on_both_nodes() {
    let Some(url) = fresh_database().await else {
        return;
    };
    let here = serve(&url).await;
    let (_, page) = get(&here, "/posts/post-120").await;
    assert!(page.contains("Post number 120"));
    assert_eq!(get(&here, "/posts/post-120").await.0, "HIT");
    assert_eq!(get(&here, "/posts/post-121").await.0, "MISS");

    // The second node: this test binary again, in its own process.
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "second_blog_node", "--ignored", "--nocapture"])
        .env(CHILD, &url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the second node runs");
    let stdout = child.stdout.take().unwrap();
    let (base_tx, base_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut base = Some(base_tx);
        // Read to the end: a closed pipe would fail the child's harness.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.trim().strip_prefix("serving ") {
                if let Some(tx) = base.take() {
                    let _ = tx.send(addr.to_owned());
                }
            }
        }
    });
    let there = tokio::time::timeout(Duration::from_secs(60), base_rx)
        .await
        .expect("the second node started in time")
        .expect("the second node said where it serves");
    let (_, page) = get(&there, "/posts/post-120").await;
    assert!(page.contains("Post number 120"));
    assert_eq!(get(&there, "/posts/post-120").await.0, "HIT");

    // psql, which neither node knows about.
    let out = Command::new("psql")
        .args([
            url.as_str(),
            "-q",
            "-c",
            "UPDATE posts SET title = 'Edited in psql' WHERE slug = 'post-120'",
        ])
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("psql is needed in CI: {e}")
        }
        Err(e) => {
            eprintln!("\n*** SKIPPED: no psql: {e} ***\n");
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until_shown(&here, "/posts/post-120", "Edited in psql").await;
    until_shown(&there, "/posts/post-120", "Edited in psql").await;
    // Its author's page lists it; the next post's page stayed cached.
    assert!(get(&here, "/authors/1").await.1.contains("Edited in psql"));
    assert_eq!(get(&here, "/posts/post-121").await.0, "HIT");

    // A comment posted on the second node: the writer's next page shows it
    // at once, and the first node's within a notification.
    let r = client()
        .post(format!("{there}/posts/post-120"))
        .form(&[("name", "Zed"), ("body", "From the other node")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(get(&there, "/posts/post-120")
        .await
        .1
        .contains("From the other node"));
    until_shown(&here, "/posts/post-120", "From the other node").await;
    assert_eq!(
        get(&here, "/posts/post-121").await.0,
        "HIT",
        "only its own post"
    );

    child.stdin.take().unwrap().write_all(b"done\n").ok();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the second node failed");
    if let Ok(admin) = sqlx::PgPool::connect(&server_url()).await {
        let name = url.rsplit('/').next().unwrap_or_default();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
    }
}

/// The second node of the test above: serves the blog until told to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the two-node test as its second node"]
async fn second_blog_node() {
    let Ok(url) = std::env::var(CHILD) else {
        return;
    };
    let base = serve(&url).await;
    println!("serving {base}");
    // Until the first node is done (or gone: end of input).
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await
    .unwrap();
}
