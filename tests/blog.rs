//! The flagship blog, end to end over real HTTP: second visits are hits that
//! run no SQL; comments, edits and new posts refresh exactly the pages that
//! showed what changed; POSTs and form errors are never cached.

#[path = "../examples/blog/app.rs"]
mod app;

use std::collections::HashMap;

struct Site {
    base: String,
    client: reqwest::Client,
}

impl Site {
    async fn get(&self, path: &str) -> (String, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        let cache = r.headers()["x-cache"].to_str().unwrap().to_owned();
        (cache, r.text().await.unwrap())
    }

    /// Visits each path; returns how each was served.
    async fn visit(&self, paths: &[&str]) -> HashMap<String, String> {
        let mut served = HashMap::new();
        for path in paths {
            served.insert(path.to_string(), self.get(path).await.0);
        }
        served
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .unwrap()
    }
}

fn expect(served: &HashMap<String, String>, path: &str, cache: &str) {
    assert_eq!(served[path], cache, "{path} should be a {cache}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blog_serves_hits_without_sql_and_refreshes_exactly_what_changed() {
    let db_path = std::env::temp_dir().join(format!("ultracache-blog-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&db_path);
    let db = app::open(db_path.to_str().unwrap()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app::router(db)).await.unwrap() });
    let site = Site {
        base,
        client: reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    };

    // Post A (post-200) is by author 1; post B (post-199) by author 4; author
    // 2 wrote neither.
    let pages = [
        "/",
        "/posts/post-200",
        "/posts/post-199",
        "/authors/1",
        "/authors/4",
        "/authors/2",
        "/posts/post-200/edit",
    ];
    let first = site.visit(&pages).await;
    for p in pages {
        expect(&first, p, "MISS");
    }
    // An author's pages share one card (a cache model): built for authors 1,
    // 4 and 2, then found by the second page of authors 1 and 4.
    let cards = ultracache::stats()
        .cache("blog.author_card")
        .cloned()
        .unwrap();
    assert_eq!((cards.misses, cards.hits), (3, 2));
    let (_, a) = site.get("/posts/post-200").await;
    let (_, b) = site.get("/authors/1").await;
    let card = |page: &str| {
        let start = page.find("<aside class=\"card\">").expect("a card");
        page[start..].split("</aside>").next().unwrap().to_owned()
    };
    assert_eq!(card(&a), card(&b));
    let before = app::queries();
    let second = site.visit(&pages).await;
    for p in pages {
        expect(&second, p, "HIT");
    }
    assert_eq!(app::queries(), before, "hits run no SQL");

    // A comment on post A.
    let r = site
        .post("/posts/post-200", &[("name", "Eve"), ("body", "First!")])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["x-cache"], "MISS", "POSTs are not cached");
    let after = site.visit(&pages).await;
    expect(&after, "/posts/post-200", "MISS");
    expect(&after, "/", "MISS"); // its comment count changed
    expect(&after, "/authors/1", "MISS"); // lists post A
    expect(&after, "/posts/post-199", "HIT");
    expect(&after, "/authors/4", "HIT");
    expect(&after, "/authors/2", "HIT");
    let (_, a) = site.get("/posts/post-200").await;
    assert!(a.contains("<b>Eve</b>: First!"), "the new comment shows");

    // Editing post A's title.
    let r = site
        .post("/posts/post-200/edit", &[("title", "A brand new title")])
        .await;
    assert_eq!(r.status(), 303);
    let after = site.visit(&pages).await;
    for p in ["/", "/posts/post-200", "/authors/1", "/posts/post-200/edit"] {
        expect(&after, p, "MISS");
    }
    for p in ["/posts/post-199", "/authors/4", "/authors/2"] {
        expect(&after, p, "HIT");
    }
    for p in ["/", "/posts/post-200", "/authors/1"] {
        assert!(site.get(p).await.1.contains("A brand new title"), "{p}");
    }

    // A new post by author 2: the index and author 2's page (the new-object
    // problem).
    let r = site
        .post(
            "/posts",
            &[
                ("author_id", "2"),
                ("title", "Fresh off the press"),
                ("body", "New."),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let after = site.visit(&pages).await;
    expect(&after, "/", "MISS");
    expect(&after, "/authors/2", "MISS");
    expect(&after, "/posts/post-199", "HIT");
    expect(&after, "/authors/4", "HIT");
    assert!(site.get("/").await.1.contains("Fresh off the press"));
    let (_, author2) = site.get("/authors/2").await;
    assert!(author2.contains("Fresh off the press"));
    assert!(
        author2.contains("; latest: Fresh off the press</aside>"),
        "author 2's card was rebuilt"
    );

    // A form error: 422, not cached, and never served to the next visitor.
    let r = site
        .post("/posts/post-199", &[("name", "x"), ("body", "  ")])
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("A comment needs some text."));
    let (cache, page) = site.get("/posts/post-199").await;
    assert_eq!(cache, "HIT");
    assert!(!page.contains("class=\"error\""));

    // The stats page is never cached and counts per route.
    let (cache, stats) = site.get("/stats").await;
    assert_eq!(cache, "MISS");
    assert!(stats.contains("&#x2f;posts&#x2f;{slug}"));

    let _ = std::fs::remove_file(&db_path);
}
