//! Commands against the shared Redis tier: entries by cache, their expiry,
//! and invalidation or clearing through the same scripts the apps use (so
//! every node hears of it).

use std::collections::BTreeMap;
use std::time::Duration;

pub(crate) struct Shared {
    url: String,
    prefix: String,
    client: redis::Client,
}

impl Shared {
    pub(crate) fn new(url: &str, prefix: &str) -> Result<Self, String> {
        Ok(Shared {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            client: redis::Client::open(url).map_err(|e| format!("{url}: {e}"))?,
        })
    }

    fn connection(&self) -> Result<redis::Connection, String> {
        self.client
            .get_connection_with_timeout(Duration::from_secs(3))
            .map_err(|e| format!("{}: {e}", self.url))
    }

    fn entry_keys(&self, con: &mut redis::Connection) -> Result<Vec<String>, String> {
        let pattern = format!("{{{}}}e:*", self.prefix);
        let iter: redis::Iter<'_, String> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .clone()
            .iter(con)
            .map_err(|e| e.to_string())?;
        let mut keys: Vec<String> = iter.filter_map(Result::ok).collect();
        keys.sort();
        Ok(keys)
    }

    pub(crate) fn stats(&self) -> Result<(), String> {
        let mut con = self.connection()?;
        let mut per_cache: BTreeMap<String, u64> = BTreeMap::new();
        for key in self.entry_keys(&mut con)? {
            let cache = key.split(':').nth(1).unwrap_or("?").to_owned();
            *per_cache.entry(cache).or_default() += 1;
        }
        println!("{:<28} {:>9}", "cache (shared tier)", "entries");
        for (cache, n) in per_cache {
            println!("{cache:<28} {n:>9}");
        }
        Ok(())
    }

    pub(crate) fn keys(&self, pattern: Option<&str>) -> Result<(), String> {
        let mut con = self.connection()?;
        for key in self.entry_keys(&mut con)? {
            let cache = key.split(':').nth(1).unwrap_or("?");
            if pattern.is_some_and(|p| !glob(p, cache)) {
                continue;
            }
            let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut con).unwrap_or(-2);
            let expires = match ttl {
                -1 => "never".to_owned(),
                t if t >= 0 => format!("{}s", t / 1000),
                _ => continue,
            };
            println!("{key}\texpires {expires}");
        }
        Ok(())
    }

    fn runtime(&self) -> Result<(), String> {
        ultracache::Config::new()
            .redis(self.url.clone())
            .redis_prefix(self.prefix.clone())
            .install()
            .map_err(|e| e.to_string())
    }

    pub(crate) fn invalidate(&self, dependency: &str) -> Result<(), String> {
        self.connection()?;
        self.runtime()?;
        let dep = ultracache::Dep::parse(dependency)
            .ok_or_else(|| format!("{dependency:?}: expected kind:id or kind"))?;
        ultracache::invalidate_deps(&[dep]);
        let stats = ultracache::redis::tier_stats();
        if stats.errors > 0 {
            return Err("Redis did not take the invalidation".into());
        }
        println!("invalidated {dependency} on every node");
        Ok(())
    }

    pub(crate) fn clear(&self) -> Result<(), String> {
        self.connection()?;
        self.runtime()?;
        ultracache::clear();
        println!("cleared the shared tier (prefix {})", self.prefix);
        Ok(())
    }
}

fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head) && text[head.len()..].ends_with(tail.trim_start_matches('*'))
        }
    }
}
