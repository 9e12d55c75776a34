//! The admin page over real HTTP: closed by default, overview, cached URLs
//! (sortable), the model view, purging with CSRF protection, the JSON API —
//! and in headless Chromium, a page that renders and sorts.

use std::process::Command;
use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use ultracache::admin::{self, Auth};
use ultracache::http::CacheLayer;
use ultracache::{tracks, Trackable};

const TOKEN: &str = "t0ken-for-tests";

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "admin.post")]
struct Post {
    id: i64,
}

#[tracks]
fn load(id: i64) -> Post {
    Post { id }
}

async fn serve() -> String {
    let app = Router::new()
        .route(
            "/admin-test/posts/{id}",
            get(|Path(id): Path<i64>| async move { format!("post {}", load(id).id) }),
        )
        .layer(CacheLayer::new(Duration::from_secs(3600)).name("admin-pages"))
        .nest("/_cache", admin::router(Auth::bearer(TOKEN)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn csrf_of(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_is_closed_shows_the_cache_and_purges_with_csrf() {
    let base = serve().await;
    let c = client();
    // Warm three pages; post 2 gets extra hits.
    for (id, visits) in [(1, 2), (2, 5), (3, 1)] {
        for _ in 0..visits {
            c.get(format!("{base}/admin-test/posts/{id}"))
                .send()
                .await
                .unwrap();
        }
    }

    // Closed by default.
    let r = c.get(format!("{base}/_cache")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = c
        .get(format!("{base}/_cache"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        c.get(format!("{base}/_cache/login?token=wrong"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    // The overview.
    let html = c
        .get(format!("{base}/_cache"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("admin-pages"), "the cache is listed: {html}");
    assert!(html.contains("<svg"), "the hit-ratio chart");

    // Cached URLs, sorted by hits.
    let html = c
        .get(format!("{base}/_cache/urls?sort=hits&q=/admin-test/*"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let order: Vec<usize> = [
        "/admin-test/posts/2",
        "/admin-test/posts/1",
        "/admin-test/posts/3",
    ]
    .iter()
    .map(|u| html.find(&format!("<td class=\"url\">{u}</td>")).expect(u))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "most hits first");
    assert!(html.contains("admin.post:2"), "dependencies are shown");

    // A browser session: the login cookie, then forms that need the CSRF token.
    let r = c
        .get(format!(
            "{base}/_cache/login?token={TOKEN}&next=/_cache/urls"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = c
        .get(format!("{base}/_cache/urls"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&html);
    let forged = c
        .post(format!("{base}/_cache/purge"))
        .header("cookie", &cookie)
        .form(&[("pattern", "/admin-test/posts/3")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403, "no CSRF token, no purge");
    let purged = c
        .post(format!("{base}/_cache/purge"))
        .header("cookie", &cookie)
        .form(&[("pattern", "/admin-test/posts/3"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 303);
    let rows: serde_json::Value = c
        .get(format!("{base}/_cache/api/urls?q=/admin-test/*"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let urls: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["url"].as_str().unwrap())
        .collect();
    // (The browser tests, running alongside, cache posts 11 to 22.)
    assert!(urls.contains(&"/admin-test/posts/1") && urls.contains(&"/admin-test/posts/2"));
    assert!(
        !urls.contains(&"/admin-test/posts/3"),
        "post 3 is gone: {urls:?}"
    );

    // The model view, and invalidating from it.
    let view: serde_json::Value = c
        .get(format!("{base}/_cache/api/models?dep=admin.post:1"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["entries"], 1);
    assert_eq!(view["urls"][0], "/admin-test/posts/1");
    let r = c
        .post(format!("{base}/_cache/invalidate"))
        .header("cookie", &cookie)
        .form(&[("dep", "admin.post:1"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let view: serde_json::Value = c
        .get(format!("{base}/_cache/api/models?dep=admin.post:1"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["entries"], 0);

    // The JSON API with a bearer token needs no CSRF token.
    let purged: Vec<String> = c
        .post(format!("{base}/_cache/api/purge"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "patterns": ["/admin-test/posts/2"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(purged, ["/admin-test/posts/2"]);
    let stats: serde_json::Value = c
        .get(format!("{base}/_cache/api/stats"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(stats["caches"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "admin-pages"));
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

fn headless(browser: &str, profile: &std::path::Path) -> Command {
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1200,900",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_the_page_renders_sorts_and_is_not_blank() {
    let Some(browser) = chromium() else {
        let message = "no Chromium (apt-get install chromium): the browser test cannot run";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message} (CI=true: a skipped test is a failed test)");
        }
        eprintln!("\n*** SKIPPED: {message} ***\n");
        return;
    };
    let base = serve().await;
    let c = client();
    for (id, visits) in [(11, 1), (12, 4)] {
        for _ in 0..visits {
            c.get(format!("{base}/admin-test/posts/{id}"))
                .send()
                .await
                .unwrap();
        }
    }
    let profile = std::env::temp_dir().join(format!("ultracache-chromium-{}", std::process::id()));
    let login = |next: &str| format!("{base}/_cache/login?token={TOKEN}&next={next}");

    // The DOM after signing in and sorting by hits.
    let url = login("/_cache/urls%3Fsort%3Dhits%26q%3D/admin-test/posts/1*");
    let dom = tokio::task::spawn_blocking({
        let (browser, profile) = (browser.to_owned(), profile.clone());
        move || {
            headless(&browser, &profile)
                .arg("--dump-dom")
                .arg(url)
                .output()
        }
    })
    .await
    .unwrap()
    .expect("chromium runs");
    let dom = String::from_utf8_lossy(&dom.stdout);
    let twelve = dom
        .find("/admin-test/posts/12</td>")
        .expect("post 12 is listed");
    let eleven = dom
        .find("/admin-test/posts/11</td>")
        .expect("post 11 is listed");
    assert!(twelve < eleven, "sorted by hits in the browser too");

    // A screenshot of the overview that is not blank.
    let shot = profile.join("overview.png");
    let out = tokio::task::spawn_blocking({
        let (browser, profile, shot, url) = (
            browser.to_owned(),
            profile.clone(),
            shot.clone(),
            login("/_cache"),
        );
        move || {
            headless(&browser, &profile)
                .arg(format!("--screenshot={}", shot.display()))
                .arg(url)
                .output()
        }
    })
    .await
    .unwrap()
    .expect("chromium runs");
    assert!(
        out.status.success(),
        "screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    let mut colors = std::collections::HashSet::new();
    for px in pixels[..info.buffer_size()].chunks(channels) {
        colors.insert(px.to_vec());
        if colors.len() > 8 {
            break;
        }
    }
    assert!(colors.len() > 8, "the screenshot shows a page, not a blank");
    let _ = std::fs::remove_dir_all(&profile);
}

/// Drives a headless Chromium over the DevTools protocol.
struct Devtools {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
}

impl Devtools {
    async fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use futures_util::{SinkExt, StreamExt};
        self.next += 1;
        let id = self.next;
        let message = serde_json::json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(tokio_tungstenite::tungstenite::Message::Text(
                message.to_string().into(),
            ))
            .await
            .expect("devtools send");
        while let Some(Ok(msg)) = self.socket.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = msg {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                if v["id"] == id {
                    return v;
                }
            }
        }
        panic!("devtools closed");
    }

    async fn eval(&mut self, expression: &str) -> serde_json::Value {
        let r = self
            .call(
                "Runtime.evaluate",
                serde_json::json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        r["result"]["result"]["value"].clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_a_click_on_purge_removes_the_url() {
    let Some(browser) = chromium() else {
        let message = "no Chromium (apt-get install chromium): the browser test cannot run";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message} (CI=true: a skipped test is a failed test)");
        }
        eprintln!("\n*** SKIPPED: {message} ***\n");
        return;
    };
    let base = serve().await;
    let c = client();
    for id in [21, 22] {
        c.get(format!("{base}/admin-test/posts/{id}"))
            .send()
            .await
            .unwrap();
    }
    let profile = std::env::temp_dir().join(format!("ultracache-devtools-{}", std::process::id()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut chrome = headless(browser, &profile)
        .arg(format!("--remote-debugging-port={port}"))
        .arg("about:blank")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromium starts");
    // The page target's socket.
    let list_url = format!("http://127.0.0.1:{port}/json/list");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let socket_url = loop {
        if let Ok(r) = c.get(&list_url).send().await {
            if let Ok(targets) = r.json::<serde_json::Value>().await {
                if let Some(url) = targets
                    .as_array()
                    .and_then(|t| t.iter().find(|t| t["type"] == "page"))
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                {
                    break url.to_owned();
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "chromium's devtools answer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (socket, _) = tokio_tungstenite::connect_async(socket_url.as_str())
        .await
        .expect("devtools");
    let mut tools = Devtools { socket, next: 0 };
    let page =
        format!("{base}/_cache/login?token={TOKEN}&next=/_cache/urls%3Fq%3D/admin-test/posts/2*");
    tools
        .call("Page.navigate", serde_json::json!({ "url": page }))
        .await;

    let listed = "[...document.querySelectorAll('td.url')].map(t => t.textContent).join(',')";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let urls = tools.eval(listed).await;
        if urls
            .as_str()
            .is_some_and(|u| u.contains("/admin-test/posts/21"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the page lists the URLs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Click "Purge" on the row of post 21.
    let clicked = tools
        .eval(
            "(() => { const row = [...document.querySelectorAll('tr')].find(r => \
             r.querySelector('td.url')?.textContent === '/admin-test/posts/21'); \
             row.querySelector('button').click(); return true; })()",
        )
        .await;
    assert_eq!(clicked, true);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let urls = tools.eval(listed).await;
        if let Some(urls) = urls.as_str() {
            if urls.contains("/admin-test/posts/22") && !urls.contains("/admin-test/posts/21") {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "post 21 disappears from the page"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = chrome.kill();
    let _ = chrome.wait();
    let _ = std::fs::remove_dir_all(&profile);
}

// ---- attacks on the admin page ----

/// An app with the admin under a router that has a `CacheLayer` around
/// everything, as a careless mount would.
async fn serve_admin_under_a_cache(auth: Auth) -> String {
    let app = Router::new()
        .nest("/_cache", admin::router(auth))
        .layer(CacheLayer::new(Duration::from_secs(3600)).name("admin-outer"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_responses_are_never_served_to_a_stranger_from_a_cache() {
    let base = serve_admin_under_a_cache(Auth::bearer(TOKEN)).await;
    let c = client();
    for path in ["/_cache/urls", "/_cache/api/urls", "/_cache"] {
        let r = c
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let cc = r.headers()["cache-control"].to_str().unwrap().to_owned();
        assert!(
            cc.contains("no-store") && cc.contains("private"),
            "{path}: {cc}"
        );
        // A stranger asks next.
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} served to a stranger");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_bearer_token_opens_nothing() {
    let base = serve_admin_under_a_cache(Auth::bearer("")).await;
    let c = client();
    let with_empty_cookie = c
        .get(format!("{base}/_cache/api/stats"))
        .header("cookie", "ultracache_admin=")
        .send()
        .await
        .unwrap();
    assert_eq!(with_empty_cookie.status(), 403);
    let with_empty_bearer = c
        .get(format!("{base}/_cache/api/stats"))
        .header("authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_eq!(with_empty_bearer.status(), 403);
    let login = c
        .get(format!("{base}/_cache/login?token="))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_cookie_is_not_the_token_and_is_scoped_to_the_admin() {
    let base = serve_admin_under_a_cache(Auth::bearer(TOKEN)).await;
    let c = client();
    let r = c
        .get(format!("{base}/_cache/login?token={TOKEN}"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        !cookie.contains(TOKEN),
        "the token leaks into the cookie: {cookie}"
    );
    assert!(cookie.contains("Path=/_cache"), "{cookie}");
    assert!(cookie.contains("Secure"), "over HTTPS: {cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    // The cookie works; the token as a cookie does not.
    let session = cookie.split(';').next().unwrap().to_owned();
    let ok = c
        .get(format!("{base}/_cache/api/stats"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let forged = c
        .get(format!("{base}/_cache/api/stats"))
        .header("cookie", format!("ultracache_admin={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_never_redirects_off_site() {
    let base = serve_admin_under_a_cache(Auth::bearer(TOKEN)).await;
    let c = client();
    for next in [
        "//evil.example",
        "/%5Cevil.example",
        "https:evil.example",
        "https://evil.example/",
        "evil.example",
        "/\\evil.example",
    ] {
        let url = reqwest::Url::parse_with_params(
            &format!("{base}/_cache/login"),
            &[("token", TOKEN), ("next", next)],
        )
        .unwrap();
        let r = c.get(url).send().await.unwrap();
        assert_eq!(r.status(), 303, "{next}");
        let location = r.headers()["location"].to_str().unwrap();
        assert!(
            location.starts_with('/') && !location.starts_with("//") && !location.contains('\\'),
            "next={next} sent the browser to {location}"
        );
        let landed = reqwest::Url::parse(&base).unwrap().join(location).unwrap();
        assert_eq!(
            landed.host_str(),
            Some("127.0.0.1"),
            "next={next} sent the browser to {landed}"
        );
    }
    let url = reqwest::Url::parse_with_params(
        &format!("{base}/_cache/login"),
        &[("token", TOKEN), ("next", "/_cache/urls?sort=hits")],
    )
    .unwrap();
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/_cache/urls?sort=hits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependency_names_from_requests_do_not_grow_memory_without_bound() {
    let base = serve_admin_under_a_cache(Auth::bearer(TOKEN)).await;
    let c = client();
    // Far more distinct kind names than any program has.
    for i in 0..5000 {
        let r = c
            .post(format!("{base}/_cache/api/invalidate"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "dep": format!("flood.kind{i}:1") }))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success() || r.status() == 400,
            "{}",
            r.status()
        );
    }
    // The table of names read from outside is full: a new one is refused
    // rather than kept forever.
    let r = c
        .post(format!("{base}/_cache/api/invalidate"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "dep": "flood.one-more:1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The program's own model kinds still parse.
    assert!(ultracache::Dep::parse("admin.post:1").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_login_gets_its_own_session_and_csrf_token() {
    let base = serve_admin_under_a_cache(Auth::bearer(TOKEN)).await;
    let c = client();
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let r = c
            .get(format!("{base}/_cache/login?token={TOKEN}"))
            .send()
            .await
            .unwrap();
        let cookie = r.headers()["set-cookie"].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let html = c
            .get(format!("{base}/_cache/urls"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        sessions.push((cookie, csrf_of(&html)));
    }
    let ((a_cookie, a_csrf), (b_cookie, b_csrf)) = (&sessions[0], &sessions[1]);
    assert_ne!(a_cookie, b_cookie);
    assert_ne!(a_csrf, b_csrf, "one CSRF token for every session");
    // Session B cannot act with session A's token.
    let r = c
        .post(format!("{base}/_cache/api/purge"))
        .header("cookie", b_cookie)
        .json(&serde_json::json!({ "csrf": a_csrf, "patterns": ["/nothing-here"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(format!("{base}/_cache/api/purge"))
        .header("cookie", b_cookie)
        .json(&serde_json::json!({ "csrf": b_csrf, "patterns": ["/nothing-here"] }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_counters_with_the_bearer_token() {
    let base = serve_admin_under_a_cache(Auth::bearer(TOKEN)).await;
    let c = client();
    let denied = c
        .get(format!("{base}/_cache/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        denied.status().is_client_error(),
        "closed without the token"
    );
    let r = c
        .get(format!("{base}/_cache/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = r.text().await.unwrap();
    for family in [
        "ultracache_hits_total",
        "ultracache_misses_total",
        "ultracache_invalidations_total",
        "ultracache_entries",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} is offered:\n{text}"
        );
    }
    // Every sample is `name{labels} value`, the value a number.
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (_, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}
