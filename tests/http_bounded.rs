//! A flood of long URLs cannot grow the process past a page store's bound:
//! a page's key (its URL, as a request chose it) weighs against the bound
//! as its body does.

mod common;

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::web::{client, fetch, serve};
use ultracache::http::CacheLayer;
use ultracache::{run_pending_tasks, stats, Config, StoreConfig};

const BOUND: u64 = 1 << 20;
/// Each URL's query: far heavier than the page it names.
const QUERY: usize = 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_urls_weigh_against_the_page_store_bound() {
    Config::new()
        .store("bounded.pages", StoreConfig::new().max_bytes(BOUND))
        .install()
        .expect("configured once");
    let app = Router::new()
        .route("/search", get(|| async { "ok" }))
        .layer(
            CacheLayer::new(Duration::from_secs(3600))
                .name("bounded.search")
                .store("bounded.pages"),
        );
    let base = serve(app).await;
    let c = client();
    let sent = 3 * BOUND as usize / QUERY;
    for n in 0..sent {
        let q = format!("{n:0>QUERY$}");
        let url = format!("{base}/search?q={q}");
        let (_, body) = tokio::time::timeout(Duration::from_secs(30), fetch(&c, &url, &[]))
            .await
            .expect("answered in time");
        assert_eq!(body, "ok");
    }
    // The last page is stored (its key is not refused for its length).
    let last = format!("{base}/search?q={:0>QUERY$}", sent - 1);
    assert_eq!(fetch(&c, &last, &[]).await.0, "HIT");
    run_pending_tasks();
    let s = stats();
    let pages = s.cache("bounded.search").expect("the layer's cache");
    let keys = pages.entries * QUERY as u64;
    println!(
        "{sent} URLs of {QUERY}-byte queries: {} pages held, {} bytes counted, {keys} bytes \
         of their keys, of a {BOUND}-byte bound",
        pages.entries, pages.bytes
    );
    assert!(
        keys <= BOUND,
        "{} pages held, their keys alone {keys} bytes, past the {BOUND}-byte bound",
        pages.entries
    );
    assert!(pages.bytes <= BOUND && pages.bytes >= keys);
    assert!(pages.entries >= 32, "the store keeps pages");
}
