//! The blog itself: models, loaders, writers, pages. `main.rs` serves it; the
//! end-to-end test (`tests/blog.rs`) drives it over real HTTP.
//!
//! The pattern to copy:
//! - models derive `Trackable`;
//! - loaders are `#[tracks]` functions (or record their reads by hand);
//! - models say which table they come from (`#[trackable(table = …)]`) and
//!   which object a row belongs to (`#[trackable(belongs_to = …)]`);
//! - writers are plain sqlx: every committed write — the app's, the
//!   `sqlite3` shell's or `psql`'s, a cron job's — is captured from the
//!   database itself (`ultracache::db::{sqlite, postgres}::Capture`), and on
//!   SQLite it is applied before the writing statement returns, so the
//!   writer's next page already shows it;
//! - what the database does not hold (the site notice, in memory) is written
//!   by an `#[invalidates]` function;
//! - pages sit behind one `CacheLayer`, and never think about keys;
//! - data several pages share is a `CacheModel`, built once from tracked reads.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use minijinja::value::Serde;
use minijinja::{context, Environment};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::SqlitePool;
use ultracache::db::{postgres, sqlite, Table};
use ultracache::http::CacheLayer;
use ultracache::minijinja::models;
use ultracache::{invalidates, track, track_id, tracks, CacheModel, Trackable};

// ---------------------------------------------------------------- models --

#[derive(Clone, Debug, Serialize, Trackable)]
#[trackable(kind = "blog.author", table = "authors")]
pub struct Author {
    pub id: i64,
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Trackable)]
#[trackable(kind = "blog.post", table = "posts")]
pub struct Post {
    pub id: i64,
    pub slug: String,
    pub title: String,
    pub body: String,
    /// A post belongs to its author: a new post refreshes the author's pages.
    #[trackable(belongs_to = Author)]
    pub author_id: i64,
}

#[derive(Clone, Debug, Serialize, Trackable)]
#[trackable(kind = "blog.comment", table = "comments")]
pub struct Comment {
    pub id: i64,
    /// A comment belongs to its post: a new comment on post 5 refreshes post
    /// 5's pages (its comment list and count), and no other post's.
    #[trackable(belongs_to = Post)]
    pub post_id: i64,
    pub name: String,
    pub body: String,
}

/// What every page of an author shows about them: a cache model, built once
/// from three queries and shared by all those pages. It depends on what it
/// read (the author, whose posts it counts, and the latest post), so writing
/// one of them rebuilds it, and the pages that showed it.
#[derive(Clone, Debug, Serialize, Deserialize, CacheModel)]
#[cache(name = "blog.author_card", timeout = 86_400)]
pub struct AuthorCard {
    #[cache(key)]
    pub author_id: i64,
    pub name: String,
    pub posts: i64,
    pub latest: Option<String>,
}

/// The blog's database: SQLite (the default, a file) or PostgreSQL
/// (`BLOG_DATABASE_URL=postgres://…`). Every query is the same SQL on both.
#[derive(Clone, Debug)]
pub struct Db {
    pool: Pool,
    /// PostgreSQL's change capture, for the writer's own next read.
    capture: Option<Arc<postgres::Capture>>,
}

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the pool the blog runs on.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match &$db.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

impl Db {
    /// After a write: its changes are applied before the writer's next page.
    /// On SQLite the pool's hooks already did it when the commit returned;
    /// on PostgreSQL the capture reads what was committed now (other nodes
    /// hear of it by notification).
    async fn written(&self) -> Result<(), sqlx::Error> {
        if let Some(capture) = &self.capture {
            capture.sync().await?;
        }
        Ok(())
    }
}
type PostRow = (i64, String, String, String, i64);

fn post_of((id, slug, title, body, author_id): PostRow) -> Post {
    Post {
        id,
        slug,
        title,
        body,
        author_id,
    }
}

/// Every SQL query the blog runs, counted (the test checks that hits run none).
static QUERIES: AtomicUsize = AtomicUsize::new(0);

pub fn queries() -> usize {
    QUERIES.load(Ordering::SeqCst)
}

fn query() {
    QUERIES.fetch_add(1, Ordering::SeqCst);
}

// --------------------------------------------------------------- loaders --
// `#[tracks]` records every model a loader returns as read by the page being
// cached; a list also records the kind, so creating a post refreshes it.

const POST_COLUMNS: &str = "SELECT id, slug, title, body, author_id FROM posts";

#[tracks]
pub async fn author(db: &Db, id: i64) -> Result<Option<Author>, sqlx::Error> {
    query();
    let row: Option<(i64, String)> = on_db!(db, pool => {
        sqlx::query_as("SELECT id, name FROM authors WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?
    });
    Ok(row.map(|(id, name)| Author { id, name }))
}

#[tracks]
pub async fn post_by_slug(db: &Db, slug: &str) -> Result<Option<Post>, sqlx::Error> {
    query();
    let sql = format!("{POST_COLUMNS} WHERE slug = $1");
    let row: Option<PostRow> = on_db!(db, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(slug)
            .fetch_optional(pool)
            .await?
    });
    Ok(row.map(post_of))
}

#[tracks]
pub async fn latest_posts(db: &Db, limit: i64) -> Result<Vec<Post>, sqlx::Error> {
    query();
    let sql = format!("{POST_COLUMNS} ORDER BY id DESC LIMIT $1");
    let rows: Vec<PostRow> = on_db!(db, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(pool)
            .await?
    });
    Ok(rows.into_iter().map(post_of).collect())
}

#[tracks]
pub async fn popular_posts(db: &Db, limit: i64) -> Result<Vec<Post>, sqlx::Error> {
    query();
    let rows: Vec<PostRow> = on_db!(db, pool => {
        sqlx::query_as(
            "SELECT p.id, p.slug, p.title, p.body, p.author_id FROM posts p \
             JOIN comments c ON c.post_id = p.id \
             GROUP BY p.id ORDER BY COUNT(*) DESC, p.id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(pool)
        .await?
    });
    Ok(rows.into_iter().map(post_of).collect())
}

// Lists scoped to a parent depend on the parent: an author's posts on the
// author, a post's comments on the post. The models' `belongs_to` mappings
// turn a new, changed, moved or deleted row into exactly that dependency, so
// a comment on one post leaves every other post's page cached.

pub async fn posts_by_author(db: &Db, author_id: i64) -> Result<Vec<Post>, sqlx::Error> {
    query();
    let sql = format!("{POST_COLUMNS} WHERE author_id = $1 ORDER BY id DESC");
    let rows: Vec<PostRow> = on_db!(db, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(author_id)
            .fetch_all(pool)
            .await?
    });
    let posts: Vec<Post> = rows.into_iter().map(post_of).collect();
    track_id::<Author>(author_id);
    posts.iter().for_each(track);
    Ok(posts)
}

pub async fn comments_of(db: &Db, post_id: i64) -> Result<Vec<Comment>, sqlx::Error> {
    query();
    let rows: Vec<(i64, i64, String, String)> = on_db!(db, pool => {
        sqlx::query_as("SELECT id, post_id, name, body FROM comments WHERE post_id = $1 ORDER BY id")
            .bind(post_id)
            .fetch_all(pool)
            .await?
    });
    let comments: Vec<Comment> = rows
        .into_iter()
        .map(|(id, post_id, name, body)| Comment {
            id,
            post_id,
            name,
            body,
        })
        .collect();
    track_id::<Post>(post_id);
    comments.iter().for_each(track);
    Ok(comments)
}

pub async fn comment_count(db: &Db, post_id: i64) -> Result<i64, sqlx::Error> {
    query();
    let (n,): (i64,) = on_db!(db, pool => {
        sqlx::query_as("SELECT COUNT(*) FROM comments WHERE post_id = $1")
            .bind(post_id)
            .fetch_one(pool)
            .await?
    });
    track_id::<Post>(post_id);
    Ok(n)
}

/// How many posts an author wrote, and the latest: depends on the author
/// (a post belongs to its author) and on the latest post.
pub async fn author_activity(db: &Db, author_id: i64) -> Result<(i64, Option<Post>), sqlx::Error> {
    query();
    let (n,): (i64,) = on_db!(db, pool => {
        sqlx::query_as("SELECT COUNT(*) FROM posts WHERE author_id = $1")
            .bind(author_id)
            .fetch_one(pool)
            .await?
    });
    query();
    let sql = format!("{POST_COLUMNS} WHERE author_id = $1 ORDER BY id DESC LIMIT 1");
    let latest: Option<PostRow> = on_db!(db, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(author_id)
            .fetch_optional(pool)
            .await?
    });
    let latest = latest.map(post_of);
    track_id::<Author>(author_id);
    latest.iter().for_each(track);
    Ok((n, latest))
}

/// The author's card, from the cache or built from the database (once,
/// however many pages ask together). `None`: no such author.
pub async fn author_card(db: &Db, author_id: i64) -> Result<Option<AuthorCard>, sqlx::Error> {
    let mut failed = None;
    let card = AuthorCard::get_or_build_async(&AuthorCardKey::new(author_id), async {
        let built = async {
            let Some(author) = author(db, author_id).await? else {
                return Ok(None);
            };
            let (posts, latest) = author_activity(db, author_id).await?;
            Ok(Some(AuthorCard {
                author_id,
                name: author.name,
                posts,
                latest: latest.map(|p| p.title),
            }))
        };
        built.await.unwrap_or_else(|e| {
            failed = Some(e);
            None
        })
    })
    .await;
    match failed {
        Some(e) => Err(e),
        None => Ok(card.ok()),
    }
}

// --------------------------------------------------------------- writers --
// Plain sqlx: the database's change capture drops every cached page that
// read what a commit changed (see `open`).

/// Adding a comment: its post's page and comment count refresh (the comment
/// belongs to the post).
pub async fn add_comment(
    db: &Db,
    post_id: i64,
    name: &str,
    body: &str,
) -> Result<Comment, sqlx::Error> {
    query();
    // In a transaction: a single-row fetch in autocommit would commit when
    // sqlx resets the statement, where SQLite calls no hook (see
    // `ultracache::db::sqlite`); a transaction's commit is always seen.
    let (id,): (i64,) = on_db!(db, pool => {
        let mut tx = pool.begin().await?;
        let row = sqlx::query_as(
            "INSERT INTO comments (post_id, name, body) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(post_id)
        .bind(name)
        .bind(body)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        row
    });
    db.written().await?;
    Ok(Comment {
        id,
        post_id,
        name: name.to_owned(),
        body: body.to_owned(),
    })
}

/// Every page that showed the post refreshes.
pub async fn save_post(db: &Db, post: Post) -> Result<Post, sqlx::Error> {
    query();
    on_db!(db, pool => {
        sqlx::query("UPDATE posts SET title = $1, body = $2 WHERE id = $3")
            .bind(&post.title)
            .bind(&post.body)
            .bind(post.id)
            .execute(pool)
            .await?;
    });
    db.written().await?;
    Ok(post)
}

/// A new post: lists of posts (the kind) and its author's pages refresh.
pub async fn create_post(
    db: &Db,
    author_id: i64,
    title: &str,
    body: &str,
) -> Result<Post, sqlx::Error> {
    query();
    let (id, slug): (i64, String) = on_db!(db, pool => {
        let mut tx = pool.begin().await?;
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO posts (slug, title, body, author_id) VALUES ('', $1, $2, $3) RETURNING id",
        )
        .bind(title)
        .bind(body)
        .bind(author_id)
        .fetch_one(&mut *tx)
        .await?;
        let slug = format!("post-{id}");
        sqlx::query("UPDATE posts SET slug = $1 WHERE id = $2")
            .bind(&slug)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        (id, slug)
    });
    db.written().await?;
    Ok(Post {
        id,
        slug,
        title: title.to_owned(),
        body: body.to_owned(),
        author_id,
    })
}

// ---------------------------------------------------------------- notice --
// The site notice lives in this process's memory, not in the database: its
// writer says what it changed with `#[invalidates]`.

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "blog.notice")]
pub struct Notice {
    pub id: u8,
}

static NOTICE: std::sync::RwLock<String> = std::sync::RwLock::new(String::new());

/// The notice every page shows (empty: none).
pub fn notice() -> String {
    track_id::<Notice>(0u8);
    NOTICE
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Sets the notice: every page that showed one refreshes.
#[invalidates(Notice, id = 0u8)]
pub fn set_notice(text: &str) {
    *NOTICE
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = text.to_owned();
}

// ------------------------------------------------------------- database --

/// Opens (and on first start creates and seeds) the database — a SQLite
/// file, or PostgreSQL when `target` is a `postgres://` URL — and captures
/// its changes: every committed write, whoever made it, drops the pages
/// that showed what it changed.
pub async fn open(target: &str) -> Result<Db, sqlx::Error> {
    let tables = [
        Table::model::<Post>(),
        Table::model::<Author>(),
        Table::model::<Comment>(),
    ]
    .concat();
    if target.starts_with("postgres://") || target.starts_with("postgresql://") {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(target)
            .await?;
        let mut db = Db {
            pool: Pool::Postgres(pool.clone()),
            capture: None,
        };
        seed(&db).await?;
        // Changes reach this node by notification once committed, from any
        // client and any node.
        db.capture = Some(postgres::Capture::start(&pool, tables).await?);
        return Ok(db);
    }
    let options = SqliteConnectOptions::new()
        .filename(target)
        .create_if_missing(true)
        .busy_timeout(Duration::from_secs(5));
    // Hooked connections apply their own commits before they return;
    // another process's (the `sqlite3` shell's) are read within 100 ms.
    let pool = sqlite::pool_options()
        .max_connections(4)
        .connect_with(options)
        .await?;
    let db = Db {
        pool: Pool::Sqlite(pool.clone()),
        capture: None,
    };
    seed(&db).await?;
    let capture = sqlite::Capture::start(&pool, tables).await?;
    // Captures run as long as the process (one per database opened).
    CAPTURES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(capture);
    Ok(db)
}

static CAPTURES: std::sync::Mutex<Vec<Arc<sqlite::Capture>>> = std::sync::Mutex::new(Vec::new());

/// Creates the tables and, on first start, the authors, posts and comments.
async fn seed(db: &Db) -> Result<(), sqlx::Error> {
    let (schema, lock, after) = match db.pool {
        Pool::Sqlite(_) => (
            "CREATE TABLE IF NOT EXISTS authors (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS posts (id INTEGER PRIMARY KEY, slug TEXT NOT NULL,
                 title TEXT NOT NULL, body TEXT NOT NULL, author_id INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS comments (id INTEGER PRIMARY KEY,
                 post_id INTEGER NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL);",
            "",
            "",
        ),
        Pool::Postgres(_) => (
            "CREATE TABLE IF NOT EXISTS authors (
                 id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS posts (
                 id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, slug TEXT NOT NULL,
                 title TEXT NOT NULL, body TEXT NOT NULL, author_id BIGINT NOT NULL);
             CREATE TABLE IF NOT EXISTS comments (
                 id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                 post_id BIGINT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL);",
            // Nodes starting together seed once.
            "SELECT pg_advisory_xact_lock(7461822302)",
            // The seeded ids were given: new rows number after them.
            "SELECT setval(pg_get_serial_sequence('authors', 'id'), 4);
             SELECT setval(pg_get_serial_sequence('posts', 'id'), (SELECT MAX(id) FROM posts));
             SELECT setval(pg_get_serial_sequence('comments', 'id'),
                 (SELECT MAX(id) FROM comments));",
        ),
    };
    let indexes = "CREATE INDEX IF NOT EXISTS posts_slug ON posts (slug);
         CREATE INDEX IF NOT EXISTS posts_author ON posts (author_id);
         CREATE INDEX IF NOT EXISTS comments_post ON comments (post_id);";
    on_db!(db, pool => {
        let mut tx = pool.begin().await?;
        if !lock.is_empty() {
            sqlx::raw_sql(sqlx::AssertSqlSafe(lock)).execute(&mut *tx).await?;
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(schema)).execute(&mut *tx).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(indexes)).execute(&mut *tx).await?;
        let (authors,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM authors")
            .fetch_one(&mut *tx)
            .await?;
        if authors == 0 {
            let names = [
                "Ada Lovelace",
                "Alan Turing",
                "Grace Hopper",
                "Edsger Dijkstra",
            ];
            for (i, name) in names.iter().enumerate() {
                sqlx::query("INSERT INTO authors (id, name) VALUES ($1, $2)")
                    .bind(i as i64 + 1)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
            for id in 1..=200i64 {
                sqlx::query(
                    "INSERT INTO posts (id, slug, title, body, author_id) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id)
                .bind(format!("post-{id}"))
                .bind(format!("Post number {id}"))
                .bind("Caching is easy; knowing when to forget is the hard part.")
                .bind(id % 4 + 1)
                .execute(&mut *tx)
                .await?;
            }
            for id in 1..=2000i64 {
                // Ten comments per post, a few more on some to make them popular.
                let post = if id % 7 == 0 {
                    id % 5 + 1
                } else {
                    (id - 1) % 200 + 1
                };
                sqlx::query("INSERT INTO comments (id, post_id, name, body) VALUES ($1, $2, $3, $4)")
                    .bind(id)
                    .bind(post)
                    .bind(format!("reader{}", id % 37))
                    .bind("Nice post.")
                    .execute(&mut *tx)
                    .await?;
            }
            if !after.is_empty() {
                sqlx::raw_sql(sqlx::AssertSqlSafe(after)).execute(&mut *tx).await?;
            }
        }
        tx.commit().await
    })
}

// ----------------------------------------------------------------- pages --

#[derive(Clone)]
pub struct Blog {
    db: Db,
    templates: Arc<Environment<'static>>,
}

/// The whole site. Every page goes through one `CacheLayer`: GET pages are
/// cached for an hour and dropped the moment something they showed changes;
/// POSTs pass through; `/stats` is never cached.
pub fn router(db: Db) -> Router {
    router_with_admin(db, None)
}

/// The site, with the admin page at `/_cache` when a token is given.
pub fn router_with_admin(db: Db, admin_token: Option<String>) -> Router {
    let mut env = Environment::new();
    ultracache::minijinja::register(&mut env);
    for (name, source) in TEMPLATES {
        env.add_template(name, source).expect("the templates parse");
    }
    let blog = Blog {
        db,
        templates: Arc::new(env),
    };
    let router = Router::new()
        .route("/", get(index))
        .route("/posts", axum::routing::post(new_post))
        .route("/posts/{slug}", get(show_post).post(comment))
        .route("/posts/{slug}/edit", get(edit_form).post(edit))
        .route("/authors/{id}", get(show_author))
        .route("/stats", get(stats))
        .layer(
            CacheLayer::new(Duration::from_secs(3600))
                .name("pages")
                .ignore_paths(["/stats"])
                // No page reads a cookie: visitors with cookies share them.
                .cache_requests_with_cookies(),
        )
        .with_state(blog);
    match admin_token {
        Some(token) => router.nest(
            "/_cache",
            ultracache::admin::router(ultracache::admin::Auth::bearer(token)),
        ),
        None => router,
    }
}

/// What goes wrong in a handler: a missing page or a database error.
pub enum AppError {
    NotFound,
    Db(sqlx::Error),
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Db(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::NotFound => {
                (StatusCode::NOT_FOUND, Html("<h1>Not found</h1>")).into_response()
            }
            AppError::Db(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("database error: {e}"),
            )
                .into_response(),
        }
    }
}

type Page = Result<Response, AppError>;

impl Blog {
    /// Renders a page, with the site notice (which every page then depends on).
    fn render(&self, name: &str, ctx: minijinja::Value) -> Result<Html<String>, AppError> {
        let ctx = context! { notice => notice(), ..ctx };
        let html = self
            .templates
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .map_err(|e| AppError::Db(sqlx::Error::Protocol(e.to_string())))?;
        Ok(Html(html))
    }
}

#[derive(Serialize)]
struct Summary {
    post: Post,
    author: String,
    comments: i64,
}

async fn index(State(blog): State<Blog>) -> Page {
    let db = &blog.db;
    let mut summaries = Vec::new();
    for post in latest_posts(db, 20).await? {
        let author = author(db, post.author_id).await?.map(|a| a.name);
        let comments = comment_count(db, post.id).await?;
        summaries.push(Summary {
            post,
            author: author.unwrap_or_default(),
            comments,
        });
    }
    // The sidebar is a template block cached on its own: `models` lets it
    // record the posts it shows.
    let popular = models(popular_posts(db, 5).await?);
    Ok(blog
        .render(
            "index.html",
            context! { summaries => Serde(&summaries), popular },
        )?
        .into_response())
}

async fn post_page(blog: &Blog, slug: &str, error: Option<&str>) -> Page {
    let db = &blog.db;
    let post = post_by_slug(db, slug).await?.ok_or(AppError::NotFound)?;
    let card = author_card(db, post.author_id).await?;
    let comments = comments_of(db, post.id).await?;
    Ok(blog
        .render("post.html", context! { post => Serde(&post), card => Serde(&card), comments => Serde(&comments), error })?
        .into_response())
}

async fn show_post(State(blog): State<Blog>, Path(slug): Path<String>) -> Page {
    post_page(&blog, &slug, None).await
}

#[derive(Deserialize)]
struct CommentForm {
    name: String,
    body: String,
}

async fn comment(
    State(blog): State<Blog>,
    Path(slug): Path<String>,
    Form(form): Form<CommentForm>,
) -> Page {
    if form.body.trim().is_empty() {
        // The page with an error: a POST response, never cached.
        let page = post_page(&blog, &slug, Some("A comment needs some text.")).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    let post = post_by_slug(&blog.db, &slug)
        .await?
        .ok_or(AppError::NotFound)?;
    let name = if form.name.trim().is_empty() {
        "anonymous"
    } else {
        form.name.trim()
    };
    add_comment(&blog.db, post.id, name, form.body.trim()).await?;
    Ok(Redirect::to(&format!("/posts/{slug}")).into_response())
}

async fn edit_form(State(blog): State<Blog>, Path(slug): Path<String>) -> Page {
    let post = post_by_slug(&blog.db, &slug)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(blog
        .render("edit.html", context! { post => Serde(&post) })?
        .into_response())
}

#[derive(Deserialize)]
struct EditForm {
    title: String,
}

async fn edit(
    State(blog): State<Blog>,
    Path(slug): Path<String>,
    Form(form): Form<EditForm>,
) -> Page {
    let mut post = post_by_slug(&blog.db, &slug)
        .await?
        .ok_or(AppError::NotFound)?;
    if form.title.trim().is_empty() {
        let page = blog.render(
            "edit.html",
            context! { post => Serde(&post), error => "A title is required." },
        )?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    post.title = form.title.trim().to_owned();
    save_post(&blog.db, post).await?;
    Ok(Redirect::to(&format!("/posts/{slug}")).into_response())
}

#[derive(Deserialize)]
struct NewPostForm {
    author_id: i64,
    title: String,
    body: String,
}

async fn new_post(State(blog): State<Blog>, Form(form): Form<NewPostForm>) -> Page {
    author(&blog.db, form.author_id)
        .await?
        .ok_or(AppError::NotFound)?;
    let post = create_post(&blog.db, form.author_id, &form.title, &form.body).await?;
    Ok(Redirect::to(&format!("/posts/{}", post.slug)).into_response())
}

async fn show_author(State(blog): State<Blog>, Path(id): Path<i64>) -> Page {
    let card = author_card(&blog.db, id).await?.ok_or(AppError::NotFound)?;
    let posts = posts_by_author(&blog.db, id).await?;
    Ok(blog
        .render(
            "author.html",
            context! { card => Serde(&card), posts => Serde(&posts) },
        )?
        .into_response())
}

#[derive(Serialize)]
struct Row {
    name: String,
    entries: u64,
    hits: u64,
    misses: u64,
}

async fn stats(State(blog): State<Blog>) -> Page {
    let routes: Vec<Row> = ultracache::http::route_stats()
        .into_iter()
        .map(|r| Row {
            name: r.name,
            entries: 0,
            hits: r.hits,
            misses: r.misses,
        })
        .collect();
    let caches: Vec<Row> = ultracache::stats()
        .caches
        .into_iter()
        .map(|c| Row {
            name: c.name.to_owned(),
            entries: c.entries,
            hits: c.hits,
            misses: c.misses,
        })
        .collect();
    Ok(blog
        .render(
            "stats.html",
            context! { routes => Serde(&routes), caches => Serde(&caches) },
        )?
        .into_response())
}

// ------------------------------------------------------------- templates --

const TEMPLATES: [(&str, &str); 7] = [
    (
        "card.html",
        r#"{% if card %}<aside class="card">{{ card.name }} has written {{ card.posts }} posts{% if card.latest %}; latest: {{ card.latest }}{% endif %}</aside>{% endif %}"#,
    ),
    (
        "layout.html",
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>{% block title %}Blog{% endblock %}</title></head>
<body><nav><a href="/">Home</a> · <a href="/stats">Cache stats</a></nav>
{% if notice %}<p class="notice">{{ notice }}</p>{% endif %}
{% block main %}{% endblock %}
</body></html>"#,
    ),
    (
        "index.html",
        r#"{% extends "layout.html" %}
{% block main %}
<h1>Latest posts</h1>
<ul>
{% for s in summaries %}  <li><a href="/posts/{{ s.post.slug }}">{{ s.post.title }}</a>
    by <a href="/authors/{{ s.post.author_id }}">{{ s.author }}</a> · {{ s.comments }} comments</li>
{% endfor %}</ul>
{% call ultracache(600, "sidebar") %}<aside><h2>Popular</h2><ol>
{% for p in popular %}  <li><a href="/posts/{{ p.slug }}">{{ p.title }}</a></li>
{% endfor %}</ol></aside>{% endcall %}
{% endblock %}"#,
    ),
    (
        "post.html",
        r#"{% extends "layout.html" %}
{% block title %}{{ post.title }}{% endblock %}
{% block main %}
<article><h1>{{ post.title }}</h1>
<p>by <a href="/authors/{{ post.author_id }}">{{ card.name }}</a> · <a href="/posts/{{ post.slug }}/edit">edit</a></p>
<p>{{ post.body }}</p></article>
{% include "card.html" %}
<h2>{{ comments|length }} comments</h2>
<ul>{% for c in comments %}<li><b>{{ c.name }}</b>: {{ c.body }}</li>{% endfor %}</ul>
{% if error %}<p class="error">{{ error }}</p>{% endif %}
<form method="post" action="/posts/{{ post.slug }}">
  <input name="name" placeholder="Your name"> <textarea name="body"></textarea>
  <button>Comment</button>
</form>
{% endblock %}"#,
    ),
    (
        "edit.html",
        r#"{% extends "layout.html" %}
{% block main %}
<h1>Edit “{{ post.title }}”</h1>
{% if error %}<p class="error">{{ error }}</p>{% endif %}
<form method="post" action="/posts/{{ post.slug }}/edit">
  <input name="title" value="{{ post.title }}"> <button>Save</button>
</form>
{% endblock %}"#,
    ),
    (
        "author.html",
        r#"{% extends "layout.html" %}
{% block title %}{{ card.name }}{% endblock %}
{% block main %}
<h1>{{ card.name }}</h1>
{% include "card.html" %}
<ul>{% for p in posts %}<li><a href="/posts/{{ p.slug }}">{{ p.title }}</a></li>{% endfor %}</ul>
{% endblock %}"#,
    ),
    (
        "stats.html",
        r#"{% extends "layout.html" %}
{% block main %}
<h1>Cache statistics</h1>
<h2>Per route</h2>
<table><tr><th>route</th><th>hits</th><th>misses</th></tr>
{% for r in routes %}<tr><td>{{ r.name }}</td><td>{{ r.hits }}</td><td>{{ r.misses }}</td></tr>
{% endfor %}</table>
<h2>Per cache</h2>
<table><tr><th>cache</th><th>entries</th><th>hits</th><th>misses</th></tr>
{% for c in caches %}<tr><td>{{ c.name }}</td><td>{{ c.entries }}</td><td>{{ c.hits }}</td><td>{{ c.misses }}</td></tr>
{% endfor %}</table>
{% endblock %}"#,
    ),
];
