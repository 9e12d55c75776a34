//! Warming up: requesting a list of URLs with several workers, optionally
//! signed in (form login with its CSRF token and cookies, or basic auth), once
//! per language, with a progress bar and a summary. A login that fails is an
//! error, never a silent anonymous warm-up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Semaphore;

/// The header that carries the warm-up token (the app's
/// `CacheLayer::warm_token`).
const WARM_HEADER: &str = "x-ultracache-warm";

#[derive(clap::Args)]
pub(crate) struct WarmArgs {
    /// URLs to request.
    urls: Vec<String>,
    /// A file with one URL per line (`#` starts a comment).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Languages: each URL is requested once per language (Accept-Language).
    #[arg(long, value_delimiter = ',')]
    languages: Vec<String>,
    /// Basic authentication, `user:password`.
    #[arg(long, env = "ULTRACACHE_WARM_BASIC", hide_env_values = true)]
    basic: Option<String>,
    /// Form login: the login page's URL (its form is posted back to it).
    #[arg(long)]
    login: Option<String>,
    /// Form login: the user name.
    #[arg(long)]
    username: Option<String>,
    /// Form login: the password.
    #[arg(long, env = "ULTRACACHE_WARM_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Form login: the name of the user-name field.
    #[arg(long, default_value = "username")]
    username_field: String,
    /// Form login: the name of the password field.
    #[arg(long, default_value = "password")]
    password_field: String,
    /// Form login: the name of the hidden CSRF field.
    #[arg(long, default_value = "csrfmiddlewaretoken")]
    csrf_field: String,
    /// The app's warm-up token: pages cached forever are computed again.
    #[arg(long, env = "ULTRACACHE_WARM_TOKEN", hide_env_values = true)]
    warm_token: Option<String>,
}

/// The value of the hidden input named `field` in `html`.
fn hidden_value(html: &str, field: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{field}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let v = tag.find("value=\"")? + 7;
    Some(tag[v..].split('"').next()?.to_owned())
}

async fn login(client: &reqwest::Client, args: &WarmArgs, url: &str) -> Result<(), String> {
    let (Some(user), Some(password)) = (&args.username, &args.password) else {
        return Err("--login needs --username and --password".into());
    };
    let page = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !page.status().is_success() {
        return Err(format!("login page {url} answered {}", page.status()));
    }
    let html = page.text().await.map_err(|e| e.to_string())?;
    let mut form = vec![
        (args.username_field.clone(), user.clone()),
        (args.password_field.clone(), password.clone()),
    ];
    if let Some(token) = hidden_value(&html, &args.csrf_field) {
        form.push((args.csrf_field.clone(), token));
    }
    let response = client
        .post(url)
        .header("referer", url)
        .form(&form)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    // Still (or again) on a page with the password field: not signed in.
    if !status.is_success() || body.contains(&format!("name=\"{}\"", args.password_field)) {
        return Err(format!(
            "login at {url} failed ({status}): check the credentials"
        ));
    }
    Ok(())
}

pub(crate) async fn run(args: WarmArgs) -> Result<(), String> {
    let mut urls = args.urls.clone();
    if let Some(file) = &args.file {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        urls.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    if urls.is_empty() {
        return Err("nothing to warm: give URLs or --file".into());
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .build()
        .map_err(|e| e.to_string())?;
    if let Some(login_url) = &args.login {
        login(&client, &args, login_url).await?;
    }
    let languages: Vec<Option<String>> = if args.languages.is_empty() {
        vec![None]
    } else {
        args.languages.iter().cloned().map(Some).collect()
    };
    let jobs: Vec<(String, Option<String>)> = urls
        .iter()
        .flat_map(|u| languages.iter().map(move |l| (u.clone(), l.clone())))
        .collect();

    let bar = ProgressBar::new(jobs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let basic = args.basic.clone();
    let token = args.warm_token.clone();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (url, lang) in jobs {
        let (client, permits, bar, basic, token) = (
            client.clone(),
            Arc::clone(&permits),
            bar.clone(),
            basic.clone(),
            token.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.ok()?;
            let mut request = client.get(&url);
            if let Some(lang) = &lang {
                request = request.header("accept-language", lang);
            }
            if let Some(basic) = &basic {
                let (user, password) = basic.split_once(':').unwrap_or((basic.as_str(), ""));
                request = request.basic_auth(user, Some(password));
            }
            if let Some(token) = &token {
                request = request.header(WARM_HEADER, token);
            }
            let begin = Instant::now();
            let result = request.send().await;
            let took = begin.elapsed();
            bar.inc(1);
            Some(match result {
                Ok(r) => (Ok(r.status().as_u16()), took, url),
                Err(e) => (Err(e.to_string()), took, url),
            })
        }));
    }
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut times: Vec<Duration> = Vec::new();
    let mut failures = Vec::new();
    for task in tasks {
        if let Ok(Some((status, took, url))) = task.await {
            times.push(took);
            match status {
                Ok(code) => {
                    *statuses.entry(code.to_string()).or_default() += 1;
                    if code >= 500 {
                        failures.push(format!("{url}: {code}"));
                    }
                }
                Err(e) => {
                    *statuses.entry("error".into()).or_default() += 1;
                    failures.push(format!("{url}: {e}"));
                }
            }
        }
    }
    bar.finish_and_clear();
    times.sort();
    let total = started.elapsed();
    let mean = times.iter().sum::<Duration>() / times.len().max(1) as u32;
    println!("warmed {} request(s) in {:.2?}", times.len(), total);
    for (status, n) in &statuses {
        println!("  {status}: {n}");
    }
    println!(
        "  time per request: mean {:.1?}, max {:.1?}",
        mean,
        times.last().copied().unwrap_or_default()
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} request(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        ))
    }
}
