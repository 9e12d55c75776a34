//! How entries are stored in the shared tier: a small header (magic, format version,
//! the value type's fingerprint), then postcard bytes of the key, the
//! dependencies and the value. Anything that does not decode exactly — other
//! bytes, another format, another type, another key — is a miss.

use std::any::type_name;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_reflection::{Tracer, TracerConfig};

use crate::dep::{mix, Dep, Kind};

const MAGIC: &[u8; 2] = b"UC";
const FORMAT: u8 = 1;
const HEADER: usize = 2 + 1 + 8;

/// A value type's fingerprint: its name and, where serde can trace it, the
/// shape of its serialized form (field names and types). A deploy that changes
/// the type changes the fingerprint, so old bytes are never decoded as the new
/// type.
pub(crate) fn fingerprint<V: Serialize + DeserializeOwned + 'static>() -> u64 {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, u64>>> = OnceLock::new();
    let name = type_name::<V>();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(f) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(name)
    {
        return *f;
    }
    let mut tracer = Tracer::new(TracerConfig::default());
    let shape = match tracer.trace_simple_type::<V>() {
        Ok((format, _)) => format!("{format:?}{:?}", tracer.registry_unchecked()),
        // Types serde cannot trace are told apart by name and size alone.
        Err(_) => format!("size {}", std::mem::size_of::<V>()),
    };
    let f = mix(hash(name.as_bytes()) ^ mix(hash(shape.as_bytes())));
    cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(name, f);
    f
}

pub(crate) fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A dependency as stored: the kind's name and the id key.
#[derive(Serialize, Deserialize)]
struct StoredDep<'a>(&'a str, Option<u64>);

#[derive(Serialize)]
struct Out<'a, V> {
    key: &'a [u8],
    deps: Vec<StoredDep<'a>>,
    value: &'a V,
}

#[derive(Deserialize)]
struct In<'a, V> {
    #[serde(borrow)]
    key: &'a [u8],
    #[serde(borrow)]
    deps: Vec<StoredDep<'a>>,
    value: V,
}

/// The bytes of an entry.
pub(crate) fn encode<V: Serialize>(
    fingerprint: u64,
    key: &[u8],
    deps: &[Dep],
    value: &V,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&fingerprint.to_le_bytes());
    let deps = deps
        .iter()
        .map(|d| StoredDep(d.model_kind().name(), d.id_key()))
        .collect();
    postcard::to_extend(&Out { key, deps, value }, out).ok()
}

/// The value and dependencies in `bytes`, if they are an entry of this type
/// for this key.
pub(crate) fn decode<V: DeserializeOwned>(
    fingerprint: u64,
    key: &[u8],
    bytes: &[u8],
) -> Option<(V, Vec<Dep>)> {
    let (header, body) = bytes.split_at_checked(HEADER)?;
    if &header[..2] != MAGIC || header[2] != FORMAT {
        return None;
    }
    if header[3..].try_into().ok().map(u64::from_le_bytes) != Some(fingerprint) {
        return None;
    }
    let decoded: In<'_, V> = postcard::from_bytes(body).ok()?;
    if decoded.key != key {
        return None;
    }
    // A name past the interning bound makes the entry unreadable: a miss.
    let deps = decoded
        .deps
        .iter()
        .map(|StoredDep(kind, id)| {
            let kind = Kind::new(crate::names::try_intern(kind)?);
            Some(match id {
                Some(id) => Dep::object_key(kind, *id),
                None => Dep::kind(kind),
            })
        })
        .collect::<Option<Vec<Dep>>>()?;
    Some((decoded.value, deps))
}

/// A dependency as it is named in Redis keys and invalidation messages.
pub(crate) fn dep_name(dep: &Dep) -> String {
    match dep.id_key() {
        Some(id) => format!("{}:{id}", dep.model_kind().name()),
        None => dep.model_kind().name().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct A {
        x: u32,
        y: String,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct B {
        y: String,
        x: u32,
    }

    #[test]
    fn round_trip_and_refusals() {
        let dep = Dep::object(Kind::new("codec.post"), &7u32);
        let a = A {
            x: 1,
            y: "hi".into(),
        };
        let fa = fingerprint::<A>();
        let bytes = encode(fa, b"k", &[dep], &a).unwrap();
        let (back, deps) = decode::<A>(fa, b"k", &bytes).unwrap();
        assert_eq!((back, deps), (a, vec![dep]));
        assert!(decode::<A>(fa, b"other key", &bytes).is_none());
        assert!(
            decode::<B>(fingerprint::<B>(), b"k", &bytes).is_none(),
            "another type"
        );
        assert!(
            decode::<A>(fa, b"k", &bytes[..bytes.len() - 1]).is_none(),
            "truncated"
        );
        assert!(decode::<A>(fa, b"k", b"garbage").is_none());
        assert_ne!(fingerprint::<A>(), fingerprint::<B>());
    }

    #[test]
    fn dependency_names_round_trip() {
        let d = Dep::object(Kind::new("blog.post"), &42u32);
        assert_eq!(dep_name(&d), "blog.post:42");
        assert_eq!(Dep::parse(&dep_name(&d)), Some(d));
        let k = Dep::kind(Kind::new("blog.post"));
        assert_eq!(Dep::parse(&dep_name(&k)), Some(k));
    }

    #[test]
    fn a_kind_named_by_path_is_read_back_as_that_kind_not_as_an_object() {
        // The derives name kinds `module::path::Type`; invalidation messages
        // between nodes carry them as text.
        let kind = Kind::new("app::models::Post");
        let k = Dep::kind(kind);
        assert_eq!(Dep::parse(&dep_name(&k)), Some(k));
        let d = Dep::object(kind, &3u32);
        assert_eq!(Dep::parse(&dep_name(&d)), Some(d));
        assert_eq!(
            Dep::parse("app::models::Post").map(|d| d.model_kind().name()),
            Some("app::models::Post")
        );
    }
}
