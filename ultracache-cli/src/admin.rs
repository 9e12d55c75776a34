//! Commands against a running app's admin JSON API.

use serde_json::{json, Value};

pub(crate) struct Admin {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

fn secs(v: &Value) -> String {
    match v.as_u64() {
        None => "never".into(),
        Some(s) if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        Some(s) if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        Some(s) => format!("{s}s"),
    }
}

fn ratio(hits: u64, misses: u64) -> String {
    if hits + misses == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * hits as f64 / (hits + misses) as f64)
    }
}

impl Admin {
    pub(crate) fn new(base: &str, token: Option<&str>) -> Result<Self, String> {
        Ok(Admin {
            base: base.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .map_err(|e| e.to_string())?,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self
            .client
            .request(method, format!("{}/api/{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, String> {
        let response = request
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.base))?;
        let status = response.status();
        if status == 401 || status == 403 {
            return Err(format!(
                "the admin page refused the request ({status}): check --token"
            ));
        }
        if !status.is_success() {
            return Err(format!("the admin page answered {status}"));
        }
        if status == 204 {
            return Ok(Value::Null);
        }
        response
            .json()
            .await
            .map_err(|e| format!("unexpected answer: {e}"))
    }

    pub(crate) async fn stats(&self) -> Result<(), String> {
        let stats = self
            .send(self.request(reqwest::Method::GET, "stats"))
            .await?;
        let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
        println!(
            "entries {}  dependencies {}  hit ratio {}",
            n(&stats, "entries"),
            n(&stats, "dependencies"),
            ratio(n(&stats, "hits"), n(&stats, "misses"))
        );
        println!(
            "\n{:<28} {:>9} {:>9} {:>9} {:>8}",
            "cache", "entries", "hits", "misses", "ratio"
        );
        for c in stats["caches"].as_array().into_iter().flatten() {
            println!(
                "{:<28} {:>9} {:>9} {:>9} {:>8}",
                c["name"].as_str().unwrap_or(""),
                n(c, "entries"),
                n(c, "hits"),
                n(c, "misses"),
                ratio(n(c, "hits"), n(c, "misses"))
            );
        }
        println!(
            "\n{:<28} {:>9} {:>9} {:>8}",
            "route", "hits", "misses", "ratio"
        );
        for r in stats["routes"].as_array().into_iter().flatten() {
            println!(
                "{:<28} {:>9} {:>9} {:>8}",
                r["name"].as_str().unwrap_or(""),
                n(r, "hits"),
                n(r, "misses"),
                ratio(n(r, "hits"), n(r, "misses"))
            );
        }
        Ok(())
    }

    pub(crate) async fn keys(&self, pattern: Option<&str>) -> Result<(), String> {
        let q = pattern.unwrap_or("*");
        let rows = self
            .send(
                self.request(reqwest::Method::GET, "urls")
                    .query(&[("q", q)]),
            )
            .await?;
        for r in rows.as_array().into_iter().flatten() {
            let deps: Vec<&str> = r["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            println!(
                "{}\texpires {}\thits {}\tdepends on {}",
                r["url"].as_str().unwrap_or(""),
                secs(&r["expires_in_secs"]),
                r["hits"].as_u64().unwrap_or(0),
                deps.join(" ")
            );
        }
        Ok(())
    }

    pub(crate) async fn purge(&self, patterns: &[String]) -> Result<(), String> {
        let purged = self
            .send(
                self.request(reqwest::Method::POST, "purge")
                    .json(&json!({ "patterns": patterns })),
            )
            .await?;
        let purged: Vec<&str> = purged
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!("purged {} cached URL(s)", purged.len());
        for u in purged {
            println!("  {u}");
        }
        Ok(())
    }

    pub(crate) async fn invalidate(&self, dependency: &str) -> Result<(), String> {
        let dropped = self
            .send(
                self.request(reqwest::Method::POST, "invalidate")
                    .json(&json!({ "dep": dependency })),
            )
            .await?;
        println!(
            "invalidated {dependency}: {} entr(ies) dropped",
            dropped.as_u64().unwrap_or(0)
        );
        Ok(())
    }

    pub(crate) async fn clear(&self, store: Option<&str>) -> Result<(), String> {
        let body = match store {
            Some(s) => json!({ "store": s }),
            None => json!({}),
        };
        self.send(self.request(reqwest::Method::POST, "clear").json(&body))
            .await?;
        match store {
            Some(s) => println!("cleared store {s}"),
            None => println!("cleared"),
        }
        Ok(())
    }
}
