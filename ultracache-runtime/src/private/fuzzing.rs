//! Entry points for the fuzz targets in `fuzz/`: the decoders and key
//! builders that stored or untrusted bytes reach, which are not public API.
//! They exist only in builds with `--cfg fuzzing` (what `cargo fuzz`
//! passes).

use serde::de::DeserializeOwned;
#[cfg(feature = "redis")]
use serde::Serialize;

#[cfg(feature = "redis")]
use crate::dep::Dep;

/// A value's shared-tier entry bytes under `key`.
#[cfg(feature = "redis")]
pub fn entry_encode<V: Serialize + DeserializeOwned + 'static>(
    key: &[u8],
    deps: &[Dep],
    value: &V,
) -> Option<Vec<u8>> {
    use crate::tier::codec;
    codec::encode(codec::fingerprint::<V>(), key, deps, value)
}

/// The value and dependencies of shared-tier entry bytes read for `key`.
#[cfg(feature = "redis")]
pub fn entry_decode<V: Serialize + DeserializeOwned + 'static>(
    key: &[u8],
    bytes: &[u8],
) -> Option<(V, Vec<Dep>)> {
    use crate::tier::codec;
    codec::decode(codec::fingerprint::<V>(), key, bytes)
}

/// Stored page bytes decoded and served to a request with `request`'s
/// headers; the stored form re-encoded.
#[cfg(feature = "axum")]
pub fn stored_page(bytes: &[u8], request: &http::HeaderMap) -> Option<Vec<u8>> {
    crate::http::fuzz_stored(bytes, request)
}

/// The key `layer` keeps the page of a request with `parts` under, or
/// `None` when the request bypasses the cache.
#[cfg(feature = "axum")]
pub fn request_key(
    layer: &crate::http::CacheLayer,
    parts: &http::request::Parts,
) -> Option<String> {
    layer.fuzz_key(parts)
}

/// Stored cache-model bytes decoded as a read does: the object and how many
/// references it holds.
pub fn model_decode<M: DeserializeOwned>(bytes: &[u8]) -> Option<(M, usize)> {
    crate::model::fuzz_decode(bytes)
}

/// A purge as broadcast to other nodes.
#[cfg(feature = "purge")]
pub fn purge_encode(request: &crate::purge::PurgeRequest) -> String {
    crate::purge::broadcast::encode(request)
}

/// A broadcast message read back as a purge.
#[cfg(feature = "purge")]
pub fn purge_decode(message: &str) -> Option<crate::purge::PurgeRequest> {
    crate::purge::broadcast::decode(message)
}

/// The dependencies change capture drops for a logged row of `kind` whose
/// key column holds `key` (as text).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub fn capture_row_deps(kind: crate::dep::Kind, key: &str) -> Vec<crate::dep::Dep> {
    let mut out = Vec::new();
    crate::db::row_deps(kind, key, &mut out);
    out
}
