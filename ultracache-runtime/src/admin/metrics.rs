//! The counters in the Prometheus text exposition format (version 0.0.4),
//! at `metrics` under the admin router: what a Prometheus server scrapes,
//! with the admin page's bearer token.

use std::fmt::Write as _;

use super::*;

pub(super) async fn metrics(_: Granted) -> Response {
    let body = render(&crate::stats(), &route_stats());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// A label value, escaped as the format requires (backslash, double quote,
/// line feed).
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One metric family: its help, its type, and a sample per cache.
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl Iterator<Item = (String, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

pub(super) fn render(stats: &crate::Stats, routes: &[crate::http::UrlStats]) -> String {
    let mut out = String::new();
    let labels = |c: &crate::CacheStats| {
        format!(
            "cache=\"{}\",module=\"{}\",store=\"{}\"",
            label(c.name),
            label(c.module),
            label(&c.store)
        )
    };
    type Field = fn(&crate::CacheStats) -> u64;
    let per_cache: [(&str, &str, &str, Field); 11] = [
        (
            "ultracache_hits_total",
            "counter",
            "Calls answered from the cache.",
            |c| c.hits,
        ),
        (
            "ultracache_misses_total",
            "counter",
            "Calls that ran the computation.",
            |c| c.misses,
        ),
        (
            "ultracache_inserts_total",
            "counter",
            "Values stored.",
            |c| c.inserts,
        ),
        (
            "ultracache_invalidations_total",
            "counter",
            "Entries dropped because something they read was written.",
            |c| c.invalidations,
        ),
        (
            "ultracache_evictions_total",
            "counter",
            "Entries dropped to stay within capacity.",
            |c| c.evictions,
        ),
        (
            "ultracache_expirations_total",
            "counter",
            "Entries dropped because their timeout passed.",
            |c| c.expirations,
        ),
        (
            "ultracache_refused_total",
            "counter",
            "Values not stored because a dependency was written while they were computed.",
            |c| c.stale,
        ),
        (
            "ultracache_coalesced_total",
            "counter",
            "Calls that waited for another caller's computation of the same key.",
            |c| c.coalesced,
        ),
        (
            "ultracache_shared_hits_total",
            "counter",
            "Hits answered by the shared tier after an in-process miss.",
            |c| c.shared_hits,
        ),
        (
            "ultracache_served_stale_total",
            "counter",
            "Calls answered with a value past its timeout because computing it again failed.",
            |c| c.served_stale,
        ),
        ("ultracache_entries", "gauge", "Entries held.", |c| {
            c.entries
        }),
    ];
    for (name, kind, help, field) in per_cache {
        family(
            &mut out,
            name,
            kind,
            help,
            stats.caches.iter().map(|c| (labels(c), field(c))),
        );
    }
    family(
        &mut out,
        "ultracache_bytes",
        "gauge",
        "Estimated memory of the entries held.",
        stats.caches.iter().map(|c| (labels(c), c.bytes)),
    );
    let _ = writeln!(
        out,
        "# HELP ultracache_dependencies Distinct dependencies some entry depends on.\n\
         # TYPE ultracache_dependencies gauge\nultracache_dependencies {}",
        stats.dependencies
    );
    family(
        &mut out,
        "ultracache_route_hits_total",
        "counter",
        "Requests of a route answered from the cache.",
        routes
            .iter()
            .map(|r| (format!("route=\"{}\"", label(&r.name)), r.hits)),
    );
    family(
        &mut out,
        "ultracache_route_misses_total",
        "counter",
        "Requests of a route that ran the handler.",
        routes
            .iter()
            .map(|r| (format!("route=\"{}\"", label(&r.name)), r.misses)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label("x\ny"), "x\\ny");
    }

    #[test]
    fn every_sample_line_names_its_family_and_ends_in_a_number() {
        let routes = vec![crate::http::UrlStats {
            name: "/posts/{id}\"".into(),
            hits: 3,
            misses: 1,
        }];
        let text = render(&crate::Stats::default(), &routes);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').expect("name and value");
            assert!(name.starts_with("ultracache_"), "{line}");
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
        assert!(text.contains(r#"ultracache_route_hits_total{route="/posts/{id}\""} 3"#));
    }
}
