//! The real `ultracache` binary against a running blog (the flagship example),
//! a small app with a form login, and a real Redis.

#[path = "../../examples/blog/app.rs"]
mod app;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use serde::Deserialize;
use ultracache::http::CacheLayer;

const TOKEN: &str = "cli-test-token";

fn ultracache(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ultracache"))
        .args(args)
        .env_remove("ULTRACACHE_ADMIN_URL")
        .env_remove("ULTRACACHE_REDIS_URL")
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn blog() -> String {
    let path = std::env::temp_dir().join(format!("ultracache-cli-blog-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let db = app::open(path.to_str().unwrap()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = app::router_with_admin(db, Some(TOKEN.to_owned()));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_keys_purge_invalidate_and_clear_against_a_running_blog() {
    let base = blog().await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for path in ["/", "/posts/post-5", "/posts/post-6", "/authors/2"] {
        client.get(format!("{base}{path}")).send().await.unwrap();
    }
    let admin = format!("{base}/_cache");
    let run = |args: &[&str]| {
        let mut all = vec!["--url", admin.as_str(), "--token", TOKEN];
        all.extend_from_slice(args);
        ultracache(&all)
    };

    let out = tokio::task::block_in_place(|| run(&["stats"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("pages"), "{}", stdout(&out));

    let out = tokio::task::block_in_place(|| run(&["keys", "/posts/*"]));
    let keys = stdout(&out);
    assert!(
        keys.contains("/posts/post-5") && keys.contains("/posts/post-6"),
        "{keys}"
    );
    assert!(
        keys.contains("blog.post:5"),
        "dependencies are listed: {keys}"
    );
    assert!(!keys.contains("/authors/2"), "the pattern filters");

    let out = tokio::task::block_in_place(|| run(&["purge", "/posts/post-5"]));
    assert!(stdout(&out).contains("purged 1"), "{}", stdout(&out));
    let keys = stdout(&tokio::task::block_in_place(|| run(&["keys"])));
    assert!(!keys.contains("/posts/post-5") && keys.contains("/posts/post-6"));

    let out = tokio::task::block_in_place(|| run(&["invalidate", "blog.post:6"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let keys = stdout(&tokio::task::block_in_place(|| run(&["keys"])));
    assert!(!keys.contains("/posts/post-6"), "{keys}");

    let out = tokio::task::block_in_place(|| run(&["clear", "--store", "no-such-store"]));
    assert!(!out.status.success(), "an unknown store is an error");
    let out = tokio::task::block_in_place(|| run(&["clear", "--store", "default"]));
    assert!(
        stdout(&out).contains("cleared store default"),
        "{}",
        stderr(&out)
    );
    let keys = stdout(&tokio::task::block_in_place(|| run(&["keys"])));
    assert!(keys.trim().is_empty(), "{keys}");
    let out = tokio::task::block_in_place(|| run(&["clear"]));
    assert!(stdout(&out).contains("cleared"));

    // A wrong token is an error with a message, not an empty listing.
    let out =
        tokio::task::block_in_place(|| ultracache(&["--url", &admin, "--token", "nope", "keys"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("check --token"), "{}", stderr(&out));
}

/// A site with a form login (CSRF field and session cookie), a members page,
/// and a page cached forever that only the warm-up may regenerate.
#[derive(Clone, Default)]
struct Site {
    forever_runs: Arc<AtomicUsize>,
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    csrfmiddlewaretoken: String,
}

const LOGIN_PAGE: &str =
    "<form method=post><input type=hidden name=\"csrfmiddlewaretoken\" value=\"csrf-123\">\
    <input name=\"username\"><input name=\"password\" type=password></form>";

async fn login_page() -> Html<&'static str> {
    Html(LOGIN_PAGE)
}

async fn login(Form(form): Form<LoginForm>) -> Response {
    if form.username == "warmer"
        && form.password == "s3cret"
        && form.csrfmiddlewaretoken == "csrf-123"
    {
        (
            StatusCode::OK,
            [("set-cookie", "session=ok; Path=/")],
            Html("welcome"),
        )
            .into_response()
    } else {
        Html(LOGIN_PAGE).into_response()
    }
}

async fn members(headers: HeaderMap) -> Response {
    let signed_in = headers
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("session=ok"));
    if signed_in {
        "members only".into_response()
    } else {
        StatusCode::FORBIDDEN.into_response()
    }
}

async fn forever(State(site): State<Site>) -> String {
    format!(
        "run {}",
        site.forever_runs.fetch_add(1, Ordering::SeqCst) + 1
    )
}

async fn site() -> (String, Site) {
    let site = Site::default();
    let app = Router::new()
        .route("/login", get(login_page).post(login))
        .route("/members", get(members))
        .route(
            "/forever",
            get(forever).layer(CacheLayer::forever().warm_token("warm-secret")),
        )
        .with_state(site.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, site)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_signs_in_requests_with_workers_and_refuses_a_failed_login() {
    let (base, _) = site().await;
    let login = format!("{base}/login");
    let members = format!("{base}/members");
    let members_fr = format!("{base}/members?x=1");
    let out = tokio::task::block_in_place(|| {
        ultracache(&[
            "warm",
            "--concurrency",
            "2",
            "--languages",
            "en,fr",
            "--login",
            &login,
            "--username",
            "warmer",
            "--password",
            "s3cret",
            &members,
            &members_fr,
        ])
    });
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = stdout(&out);
    assert!(summary.contains("warmed 4 request(s)"), "{summary}");
    assert!(
        summary.contains("200: 4"),
        "signed in, every page answered: {summary}"
    );

    let out = tokio::task::block_in_place(|| {
        ultracache(&[
            "warm",
            "--login",
            &login,
            "--username",
            "warmer",
            "--password",
            "wrong",
            &members,
        ])
    });
    assert!(!out.status.success(), "a failed login is an error");
    assert!(stderr(&out).contains("login at"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_warm_up_token_regenerates_a_page_cached_forever() {
    let (base, site) = site().await;
    let url = format!("{base}/forever");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    client.get(&url).send().await.unwrap();
    client.get(&url).send().await.unwrap();
    assert_eq!(site.forever_runs.load(Ordering::SeqCst), 1);

    // A stranger's header does nothing.
    let r = client
        .get(&url)
        .header("x-ultracache-warm", "guess")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "run 1");

    let out =
        tokio::task::block_in_place(|| ultracache(&["warm", "--warm-token", "warm-secret", &url]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        site.forever_runs.load(Ordering::SeqCst),
        2,
        "regenerated by the warm-up"
    );
    assert_eq!(
        client.get(&url).send().await.unwrap().text().await.unwrap(),
        "run 2"
    );
}

#[test]
fn against_the_shared_redis_tier() {
    let url =
        std::env::var("ULTRACACHE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let reachable = redis::Client::open(url.as_str())
        .ok()
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)).ok())
        .is_some();
    if !reachable {
        let message = format!("no Redis at {url}: the CLI's shared-tier test cannot run");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message} (CI=true: a skipped test is a failed test)");
        }
        eprintln!("\n*** SKIPPED: {message} ***\n");
        return;
    }
    let prefix = format!("cli-{}", std::process::id());
    ultracache::Config::new()
        .redis(url.clone())
        .redis_prefix(prefix.clone())
        .install()
        .unwrap();

    #[derive(ultracache::Trackable)]
    #[trackable(kind = "cli.post")]
    struct Post {
        id: i64,
    }
    static PAGES: ultracache::Cache<u32, String> =
        ultracache::Cache::new("cli-pages").forever().shared();
    for id in 1..=3u32 {
        PAGES.get_or_compute(id, || {
            ultracache::track(&Post { id: i64::from(id) });
            format!("page {id}")
        });
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while ultracache::redis::tier_stats().stores < 3 {
        assert!(Instant::now() < deadline, "the pages reach Redis");
        std::thread::sleep(Duration::from_millis(10));
    }

    let run = |args: &[&str]| {
        let mut all = vec!["--redis", url.as_str(), "--prefix", prefix.as_str()];
        all.extend_from_slice(args);
        ultracache(&all)
    };
    let keys = stdout(&run(&["keys"]));
    assert_eq!(
        keys.lines().filter(|l| l.contains("e:cli-pages:")).count(),
        3,
        "{keys}"
    );
    assert!(stdout(&run(&["stats"])).contains("cli-pages"));

    // Invalidating through the CLI reaches this process too (pub/sub).
    let out = run(&["invalidate", "cli.post:2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(15);
    while PAGES.get(&2).is_some() {
        assert!(
            Instant::now() < deadline,
            "this node hears of the invalidation"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(PAGES.get(&1).is_some());
    assert_eq!(stdout(&run(&["keys"])).lines().count(), 2);

    let out = run(&["clear"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&run(&["keys"])).trim().is_empty());
}
