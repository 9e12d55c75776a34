//! A console tour of ultracache on the embedded default (in-process store):
//! cached functions record what they read, and writes drop exactly the
//! entries that depend on what was written.
//!
//! Run it with `cargo run --example quickstart`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use ultracache::{cached, invalidates, tracks, Trackable};

/// A blog post: a model, recorded under the kind `blog.post`.
#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "blog.post")]
struct Post {
    id: i64,
    title: String,
}

/// Our "database": a table of posts, and a counter of the queries it ran.
static POSTS: Mutex<BTreeMap<i64, String>> = Mutex::new(BTreeMap::new());
static QUERIES: AtomicUsize = AtomicUsize::new(0);

/// Loaders are `#[tracks]`: every post they return is recorded as read.
#[tracks]
fn load_post(id: i64) -> Option<Post> {
    QUERIES.fetch_add(1, Ordering::Relaxed);
    let title = POSTS.lock().ok()?.get(&id).cloned()?;
    Some(Post { id, title })
}

/// A list also records the kind itself: creating a post must refresh it.
#[tracks]
fn all_posts() -> Vec<Post> {
    QUERIES.fetch_add(1, Ordering::Relaxed);
    let posts = POSTS.lock().map(|p| p.clone()).unwrap_or_default();
    posts
        .into_iter()
        .map(|(id, title)| Post { id, title })
        .collect()
}

/// Writers are `#[invalidates]`: when they succeed, what read the post goes.
#[invalidates(Post)]
fn save_post(post: Post) -> Result<Post, String> {
    let mut posts = POSTS.lock().map_err(|e| e.to_string())?;
    posts.insert(post.id, post.title.clone());
    Ok(post)
}

/// A page cached for a day: it only changes when the post it shows does.
#[cached(timeout = 86_400)]
fn post_page(id: i64) -> String {
    match load_post(id) {
        Some(post) => format!("<h1>{}</h1>", post.title),
        None => "<h1>Not found</h1>".to_owned(),
    }
}

/// The index nests the sidebar: an entry built from an inner cached call
/// depends on what the inner call read, even when the inner call was a hit.
#[cached(timeout = 86_400)]
fn index_page() -> String {
    let titles: Vec<String> = all_posts().into_iter().map(|p| p.title).collect();
    format!("<ul>{}</ul>{}", titles.join(", "), sidebar())
}

#[cached(timeout = 86_400)]
fn sidebar() -> String {
    load_post(1)
        .map(|p| format!("<aside>Featured: {}</aside>", p.title))
        .unwrap_or_default()
}

fn visit(what: &str, page: impl FnOnce() -> String) {
    let before = QUERIES.load(Ordering::Relaxed);
    let html = page();
    let queries = QUERIES.load(Ordering::Relaxed) - before;
    let verdict = if queries == 0 { "HIT " } else { "MISS" };
    println!("{verdict} {what:<12} {queries} queries  {html}");
}

fn main() -> Result<(), String> {
    for (id, title) in [(1, "Hello"), (2, "Caching"), (3, "Invalidation")] {
        save_post(Post {
            id,
            title: title.into(),
        })?;
    }

    println!("-- first visits compute, second visits are hits");
    visit("/posts/1", || post_page(1));
    visit("/posts/2", || post_page(2));
    visit("/", index_page);
    visit("/posts/1", || post_page(1));
    visit("/", index_page);

    println!("\n-- editing post 2 drops /posts/2 and the index; /posts/1 stays");
    save_post(Post {
        id: 2,
        title: "Caching, revised".into(),
    })?;
    visit("/posts/1", || post_page(1));
    visit("/posts/2", || post_page(2));
    visit("/", index_page);

    println!("\n-- creating post 4 drops the index (it listed every post)");
    visit("/posts/4", || post_page(4));
    save_post(Post {
        id: 4,
        title: "New".into(),
    })?;
    visit("/", index_page);
    visit("/posts/4", || post_page(4));
    visit("/posts/1", || post_page(1));

    println!("\n-- the cache's statistics");
    let stats = ultracache::stats();
    for c in &stats.caches {
        println!(
            "{:<12} entries {:>2}  hits {:>2}  misses {:>2}  invalidated {:>2}",
            c.name, c.entries, c.hits, c.misses, c.invalidations
        );
    }
    println!("{} dependencies recorded", stats.dependencies);
    Ok(())
}
