//! The flagship example: a blog on axum, SQLite (sqlx) and minijinja, with
//! every page cached by ultracache and kept exact by invalidation.
//!
//! `cargo run --example blog`, then open <http://127.0.0.1:8000>.
//! `BLOG_ADDR` and `BLOG_DB` change the address and the database file;
//! `BLOG_DATABASE_URL=postgres://…` runs it on PostgreSQL instead (schema
//! created and seeded on first start; several nodes may share it).

mod app;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("BLOG_ADDR").unwrap_or_else(|_| "127.0.0.1:8000".into());
    let db_path = std::env::var("BLOG_DATABASE_URL")
        .or_else(|_| std::env::var("BLOG_DB"))
        .unwrap_or_else(|_| "blog.db".into());
    let db = app::open(&db_path).await?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    // The admin page's token: BLOG_ADMIN_TOKEN, or a fresh one each start.
    let token = std::env::var("BLOG_ADMIN_TOKEN").unwrap_or_else(|_| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        format!("{:016x}", h.finish())
    });
    println!("blog on http://{addr} (database {db_path})");
    println!("try: curl -i http://{addr}/   (twice: X-Cache MISS, then HIT)");
    println!("admin: http://{addr}/_cache/login?token={token}");
    axum::serve(listener, app::router_with_admin(db, Some(token))).await?;
    Ok(())
}
