//! The flagship blog and writes it did not make: the `sqlite3` shell
//! changes a post, and the next page load shows it (change capture). Its own
//! process: the blog's statistics are the other blog test's to count.

#[path = "../examples/blog/app.rs"]
mod app;

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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite3_shell_write_shows_on_the_next_page_load() {
    let db_path =
        std::env::temp_dir().join(format!("ultracache-blog-shell-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&db_path);
    let db = app::open(db_path.to_str().unwrap()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app::router(db)).await.unwrap() });
    let site = Site {
        base,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
    };
    let (_, page) = site.get("/posts/post-150").await;
    assert!(page.contains("Post number 150"));
    let (cache, _) = site.get("/posts/post-150").await;
    assert_eq!(cache, "HIT");
    let (_, author) = site.get("/authors/3").await;
    assert!(author.contains("Post number 150"));

    // Another process writes the file: nobody told the app.
    let status = std::process::Command::new("sqlite3")
        .arg(&db_path)
        .arg("UPDATE posts SET title = 'Edited in the shell' WHERE slug = 'post-150'")
        .status();
    let status = match status {
        Ok(s) => s,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("sqlite3 is needed in CI: {e}")
        }
        Err(e) => {
            eprintln!("\n*** SKIPPED: no sqlite3 shell: {e} ***\n");
            return;
        }
    };
    assert!(status.success());
    // Captured within a poll (100 ms); bounded at 5 s.
    let start = std::time::Instant::now();
    loop {
        let (_, page) = site.get("/posts/post-150").await;
        if page.contains("Edited in the shell") {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "the shell's write never showed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Its author's page (a list of their posts) shows it too.
    let (_, author) = site.get("/authors/3").await;
    assert!(author.contains("Edited in the shell"));
    let _ = std::fs::remove_file(&db_path);
}
