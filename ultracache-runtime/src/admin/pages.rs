//! The HTML pages and their forms.

use super::*;

pub(super) async fn overview(
    State(admin): State<Shared>,
    granted: Granted,
    parts: Parts,
) -> Response {
    admin.sample();
    let stats = crate::stats();
    let (hits, misses) = totals();
    let mut body = format!(
        "<div class=\"cards\"><div><div class=\"big\">{}</div>entries</div>\
         <div><div class=\"big\">{}</div>memory</div>\
         <div><div class=\"big\">{}</div>hit ratio</div>\
         <div><div class=\"big\">{}</div>dependencies</div></div>{}",
        stats.entries,
        size(stats.caches.iter().map(|c| c.bytes).sum()),
        ratio(hits, misses),
        stats.dependencies,
        chart(&admin)
    );
    body.push_str("<h2>Per cache</h2><table><tr><th>cache</th><th>store</th><th class=num>entries</th><th class=num>memory</th><th class=num>hits</th><th class=num>misses</th><th class=num>ratio</th><th class=num>invalidated</th><th class=num>evicted</th></tr>");
    for c in &stats.caches {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td></tr>",
            esc(c.name), esc(&c.store), c.entries, size(c.bytes), c.hits, c.misses, ratio(c.hits, c.misses), c.invalidations, c.evictions
        );
    }
    body.push_str("</table><h2>Per route</h2><table><tr><th>route</th><th class=num>hits</th><th class=num>misses</th><th class=num>ratio</th></tr>");
    for r in route_stats() {
        let _ =
            write!(
            body,
            "<tr><td>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td></tr>",
            esc(&r.name), r.hits, r.misses, ratio(r.hits, r.misses)
        );
    }
    body.push_str("</table>");
    page(&granted, &base(&parts), "Cache overview", &body).into_response()
}

#[derive(Deserialize, Default)]
pub(super) struct UrlQuery {
    #[serde(default)]
    pub(super) q: Option<String>,
    #[serde(default)]
    pub(super) sort: Option<String>,
}

#[derive(Serialize)]
pub(super) struct UrlRow {
    pub(super) url: String,
    pub(super) route: Option<String>,
    pub(super) status: u16,
    pub(super) hits: u64,
    pub(super) misses: u64,
    pub(super) age_secs: u64,
    pub(super) expires_in_secs: Option<u64>,
    pub(super) dependencies: Vec<String>,
    pub(super) key: String,
}

pub(super) fn url_rows(query: &UrlQuery) -> Vec<UrlRow> {
    let pattern = query
        .q
        .clone()
        .filter(|q| !q.is_empty())
        .unwrap_or_else(|| "*".into());
    let stats = url_stats();
    let mut rows: Vec<UrlRow> = find_urls(&[pattern])
        .into_iter()
        .map(|u| {
            let s = stats.iter().find(|s| s.name == u.url);
            UrlRow {
                hits: s.map_or(0, |s| s.hits),
                misses: s.map_or(0, |s| s.misses),
                age_secs: u.age.as_secs(),
                expires_in_secs: u.expires_in.map(|d| d.as_secs()),
                dependencies: u
                    .dependencies
                    .into_iter()
                    .filter(|d| !d.starts_with(crate::PATH_KIND.name()))
                    .collect(),
                url: u.url,
                route: u.route,
                status: u.status,
                key: u.key,
            }
        })
        .collect();
    match query.sort.as_deref() {
        Some("hits") => rows.sort_by(|a, b| b.hits.cmp(&a.hits).then(a.url.cmp(&b.url))),
        Some("misses") => rows.sort_by(|a, b| b.misses.cmp(&a.misses).then(a.url.cmp(&b.url))),
        Some("age") => rows.sort_by(|a, b| b.age_secs.cmp(&a.age_secs).then(a.url.cmp(&b.url))),
        Some("expiry") => rows.sort_by(|a, b| {
            a.expires_in_secs
                .unwrap_or(u64::MAX)
                .cmp(&b.expires_in_secs.unwrap_or(u64::MAX))
                .then(a.url.cmp(&b.url))
        }),
        _ => rows.sort_by(|a, b| a.url.cmp(&b.url)),
    }
    rows
}

pub(super) async fn urls(
    granted: Granted,
    Query(query): Query<UrlQuery>,
    parts: Parts,
) -> Response {
    let rows = url_rows(&query);
    let q = query.q.clone().unwrap_or_default();
    let b = base(&parts);
    let link = |sort: &str, label: &str| {
        format!(
            "<a href=\"{b}/urls?sort={sort}&amp;q={}\">{label}</a>",
            esc(&enc(&q))
        )
    };
    let mut body = format!(
        "<form method=\"get\" action=\"{b}/urls\"><input name=\"q\" value=\"{}\" placeholder=\"/posts/*\"> \
         <button>Filter</button></form>\
         <form method=\"post\" action=\"{b}/purge\">{}<input type=\"hidden\" name=\"pattern\" value=\"{}\">\
         <button>Purge {} matching</button></form>\
         <table id=\"urls\"><tr><th>{}</th><th>route</th><th class=num>status</th><th class=num>{}</th>\
         <th class=num>{}</th><th class=num>{}</th><th class=num>{}</th><th>dependencies</th><th></th></tr>",
        esc(&q),
        csrf_field(&granted),
        esc(if q.is_empty() { "*" } else { &q }),
        rows.len(),
        link("url", "URL"),
        link("hits", "hits"),
        link("misses", "misses"),
        link("age", "age"),
        link("expiry", "expires in"),
    );
    for r in &rows {
        let deps: Vec<String> = r
            .dependencies
            .iter()
            .map(|d| {
                format!(
                    "<a href=\"{b}/models?dep={}\"><code>{}</code></a>",
                    esc(&enc(d)),
                    esc(d)
                )
            })
            .collect();
        let _ = write!(
            body,
            "<tr><td class=\"url\">{}</td><td>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td>\
             <td class=num>{}</td><td class=num>{}</td><td>{}</td><td><form class=inline method=\"post\" action=\"{b}/purge\">{}\
             <input type=\"hidden\" name=\"pattern\" value=\"{}\"><button>Purge</button></form></td></tr>",
            esc(&r.url),
            esc(r.route.as_deref().unwrap_or("")),
            r.status,
            r.hits,
            r.misses,
            human(Some(Duration::from_secs(r.age_secs))),
            human(r.expires_in_secs.map(Duration::from_secs)),
            if deps.len() > 6 {
                format!(
                    "{} <details><summary>{} more</summary>{}</details>",
                    deps[..6].join(" "),
                    deps.len() - 6,
                    deps[6..].join(" ")
                )
            } else {
                deps.join(" ")
            },
            csrf_field(&granted),
            esc(r.url.split('?').next().unwrap_or_default()),
        );
    }
    body.push_str("</table>");
    page(&granted, &b, "Cached URLs", &body).into_response()
}

#[derive(Deserialize, Default)]
pub(super) struct ModelQuery {
    #[serde(default)]
    pub(super) dep: Option<String>,
}

#[derive(Serialize)]
pub(super) struct ModelView {
    pub(super) dependency: String,
    pub(super) entries: usize,
    pub(super) urls: Vec<String>,
}

pub(super) fn model_view(dep: &str) -> Option<ModelView> {
    let parsed = crate::Dep::parse(dep)?;
    let urls = find_urls(&["*"])
        .into_iter()
        .filter(|u| u.dependencies.iter().any(|d| d == dep))
        .map(|u| u.url)
        .collect();
    Some(ModelView {
        dependency: dep.to_owned(),
        entries: crate::dependents(&parsed),
        urls,
    })
}

pub(super) async fn models(
    granted: Granted,
    Query(query): Query<ModelQuery>,
    parts: Parts,
) -> Response {
    let dep = query.dep.unwrap_or_default();
    let b = base(&parts);
    let mut body = format!(
        "<form method=\"get\" action=\"{b}/models\"><input name=\"dep\" value=\"{}\" placeholder=\"blog.post:42\"> \
         <button>Show</button></form>",
        esc(&dep)
    );
    if let Some(view) = model_view(&dep) {
        let _ = write!(
            body,
            "<p><b>{}</b> entries depend on <code>{}</code>.</p>\
             <form method=\"post\" action=\"{b}/invalidate\">{}<input type=\"hidden\" name=\"dep\" value=\"{}\">\
             <button>Invalidate {}</button></form><ul>",
            view.entries,
            esc(&view.dependency),
            csrf_field(&granted),
            esc(&view.dependency),
            esc(&view.dependency)
        );
        for u in &view.urls {
            let _ = write!(body, "<li>{}</li>", esc(u));
        }
        body.push_str("</ul>");
    }
    page(&granted, &b, "Models", &body).into_response()
}

#[derive(Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    pub(super) csrf: String,
    #[serde(default)]
    pub(super) pattern: Option<String>,
    #[serde(default)]
    pub(super) dep: Option<String>,
}

pub(super) fn back(parts: &Parts) -> Response {
    let to = parts
        .headers
        .get(axum::http::header::REFERER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("./")
        .to_owned();
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&to) {
        headers.insert(LOCATION, v);
    }
    (StatusCode::SEE_OTHER, headers).into_response()
}

pub(super) async fn purge_form(
    granted: Granted,
    parts: Parts,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Err(denied) = granted.check(&form.csrf) {
        return denied.into_response();
    }
    if let Some(pattern) = form.pattern.filter(|p| !p.is_empty()) {
        purge_urls(&[pattern]);
    }
    back(&parts)
}

pub(super) async fn invalidate_form(
    granted: Granted,
    parts: Parts,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Err(denied) = granted.check(&form.csrf) {
        return denied.into_response();
    }
    if let Some(dep) = form.dep.as_deref().and_then(crate::Dep::parse) {
        crate::invalidate_deps(&[dep]);
    }
    back(&parts)
}

pub(super) async fn clear_form(
    granted: Granted,
    parts: Parts,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Err(denied) = granted.check(&form.csrf) {
        return denied.into_response();
    }
    crate::clear();
    back(&parts)
}
