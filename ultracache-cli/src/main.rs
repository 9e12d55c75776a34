//! `ultracache`: look into and operate the cache of a running app (through its
//! admin JSON, `--url`) or of the shared Redis tier (`--redis`), and warm
//! pages up.
//!
//! ```text
//! ultracache --url http://127.0.0.1:8000/_cache --token T stats
//! ultracache --url … keys '/posts/*'
//! ultracache --url … purge '/posts/*' /
//! ultracache --url … invalidate blog.post:42
//! ultracache --redis redis://127.0.0.1 --prefix myapp keys
//! ultracache warm --concurrency 8 http://127.0.0.1:8000/ http://127.0.0.1:8000/posts/a
//! ```

mod admin;
mod proxy;
mod shared;
mod warm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ultracache",
    version,
    about = "Operate an ultracache: stats, keys, purge, invalidate, clear, warm"
)]
struct Cli {
    /// The admin page of a running app (its JSON API), e.g. http://127.0.0.1:8000/_cache.
    #[arg(long, global = true, env = "ULTRACACHE_ADMIN_URL")]
    url: Option<String>,
    /// The admin page's bearer token.
    #[arg(
        long,
        global = true,
        env = "ULTRACACHE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// The shared Redis tier, e.g. redis://127.0.0.1:6379.
    #[arg(long, global = true, env = "ULTRACACHE_REDIS_URL")]
    redis: Option<String>,
    /// The shared tier's key prefix.
    #[arg(
        long,
        global = true,
        env = "ULTRACACHE_REDIS_PREFIX",
        default_value = "ultracache"
    )]
    prefix: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Hits, misses and hit ratio per cache and per route.
    Stats,
    /// Cached entries (with expiry and dependencies), optionally matching a
    /// path pattern (`*` wildcards).
    Keys {
        /// A path pattern such as `/posts/*`.
        pattern: Option<String>,
    },
    /// Drops the cached pages of every path matching the patterns.
    Purge {
        /// Path patterns (`*` wildcards; exact otherwise).
        #[arg(required = true)]
        patterns: Vec<String>,
    },
    /// Drops every entry that depends on an object (`kind:id`) or a kind.
    Invalidate {
        /// `blog.post:42` or `blog.post`.
        dependency: String,
    },
    /// Drops everything (or one named store of the app, with --store).
    Clear {
        /// A named store of the app (`Config::store`).
        #[arg(long)]
        store: Option<String>,
    },
    /// Requests a list of URLs so that they are cached when visitors come.
    Warm(Box<warm::WarmArgs>),
    /// Serves pages straight from the shared tier in front of the origin app
    /// (needs --redis); with --http-cache, a caching reverse proxy for any
    /// HTTP origin.
    Proxy(proxy::ProxyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let command = match cli.command {
        Command::Warm(args) => return warm::run(*args).await,
        Command::Proxy(args) if args.http_cache => return proxy::run_http_cache(args).await,
        Command::Proxy(args) => {
            let redis = cli
                .redis
                .as_deref()
                .ok_or("the proxy serves pages from the shared tier: give --redis")?;
            return proxy::run(args, redis, &cli.prefix).await;
        }
        other => other,
    };
    match (&cli.url, &cli.redis) {
        (Some(url), _) => {
            let admin = admin::Admin::new(url, cli.token.as_deref())?;
            match command {
                Command::Stats => admin.stats().await,
                Command::Keys { pattern } => admin.keys(pattern.as_deref()).await,
                Command::Purge { patterns } => admin.purge(&patterns).await,
                Command::Invalidate { dependency } => admin.invalidate(&dependency).await,
                Command::Clear { store } => admin.clear(store.as_deref()).await,
                Command::Warm(_) | Command::Proxy(_) => Ok(()),
            }
        }
        (None, Some(redis)) => {
            let tier = shared::Shared::new(redis, &cli.prefix)?;
            match command {
                Command::Stats => tier.stats(),
                Command::Keys { pattern } => tier.keys(pattern.as_deref()),
                Command::Purge { .. } => Err(
                    "purging URLs needs the app (--url): the shared tier keeps values, not URLs"
                        .into(),
                ),
                Command::Invalidate { dependency } => tier.invalidate(&dependency),
                Command::Clear { store: None } => tier.clear(),
                Command::Clear { store: Some(_) } => {
                    Err("named stores live in the app: use --url to clear one".into())
                }
                Command::Warm(_) | Command::Proxy(_) => Ok(()),
            }
        }
        (None, None) => Err("say where the cache is: --url <admin page> or --redis <URL>".into()),
    }
}
