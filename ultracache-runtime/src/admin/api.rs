//! The JSON API under `api/`.

use super::*;

#[derive(Serialize)]
pub(super) struct StatsView {
    pub(super) entries: u64,
    pub(super) dependencies: usize,
    pub(super) hits: u64,
    pub(super) misses: u64,
    pub(super) caches: Vec<CacheRow>,
    pub(super) routes: Vec<crate::http::UrlStats>,
    pub(super) history: Vec<Sample>,
}

#[derive(Serialize)]
pub(super) struct CacheRow {
    pub(super) name: &'static str,
    pub(super) module: &'static str,
    pub(super) store: String,
    pub(super) entries: u64,
    pub(super) bytes: u64,
    pub(super) hits: u64,
    pub(super) misses: u64,
    pub(super) inserts: u64,
    pub(super) invalidations: u64,
    pub(super) evictions: u64,
    pub(super) expirations: u64,
}

pub(super) async fn api_stats(State(admin): State<Shared>, _: Granted) -> Response {
    admin.sample();
    let stats = crate::stats();
    let (hits, misses) = totals();
    Json(StatsView {
        entries: stats.entries,
        dependencies: stats.dependencies,
        hits,
        misses,
        caches: stats
            .caches
            .iter()
            .map(|c| CacheRow {
                name: c.name,
                module: c.module,
                store: c.store.clone(),
                entries: c.entries,
                bytes: c.bytes,
                hits: c.hits,
                misses: c.misses,
                inserts: c.inserts,
                invalidations: c.invalidations,
                evictions: c.evictions,
                expirations: c.expirations,
            })
            .collect(),
        routes: route_stats(),
        history: admin
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect(),
    })
    .into_response()
}

pub(super) async fn api_urls(_: Granted, Query(query): Query<UrlQuery>) -> Response {
    Json(url_rows(&query)).into_response()
}

pub(super) async fn api_models(_: Granted, Query(query): Query<ModelQuery>) -> Response {
    match query.dep.as_deref().and_then(model_view) {
        Some(view) => Json(view).into_response(),
        None => (StatusCode::BAD_REQUEST, "dep=kind:id or dep=kind").into_response(),
    }
}

#[derive(Deserialize)]
pub(super) struct PurgeBody {
    #[serde(default)]
    pub(super) csrf: String,
    pub(super) patterns: Vec<String>,
}

pub(super) async fn api_purge(granted: Granted, Json(body): Json<PurgeBody>) -> Response {
    if let Err(denied) = granted.check(&body.csrf) {
        return denied.into_response();
    }
    let purged: Vec<String> = purge_urls(&body.patterns)
        .into_iter()
        .map(|u| u.url)
        .collect();
    Json(purged).into_response()
}

#[derive(Deserialize)]
pub(super) struct InvalidateBody {
    #[serde(default)]
    pub(super) csrf: String,
    pub(super) dep: String,
}

pub(super) async fn api_invalidate(granted: Granted, Json(body): Json<InvalidateBody>) -> Response {
    if let Err(denied) = granted.check(&body.csrf) {
        return denied.into_response();
    }
    match crate::Dep::parse(&body.dep) {
        Some(dep) => Json(crate::invalidate_deps(&[dep])).into_response(),
        None => (StatusCode::BAD_REQUEST, "dep=kind:id or dep=kind").into_response(),
    }
}

#[derive(Deserialize)]
pub(super) struct ClearBody {
    #[serde(default)]
    pub(super) csrf: String,
    /// One named store only.
    #[serde(default)]
    pub(super) store: Option<String>,
}

pub(super) async fn api_clear(granted: Granted, Json(body): Json<ClearBody>) -> Response {
    if let Err(denied) = granted.check(&body.csrf) {
        return denied.into_response();
    }
    match body.store {
        Some(store) if !crate::clear_store(&store) => {
            (StatusCode::NOT_FOUND, format!("no store named {store:?}")).into_response()
        }
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => {
            crate::clear();
            StatusCode::NO_CONTENT.into_response()
        }
    }
}
