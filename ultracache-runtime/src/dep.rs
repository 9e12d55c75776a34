//! Dependencies: what a cached computation read.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ptr::NonNull;

/// A model kind: the stable name under which objects of one type are recorded,
/// such as `"blog.post"`.
///
/// Two types that share a kind name share their dependencies: writing one
/// invalidates what read the other. The name is hashed once, at compile time.
/// A name is at most [`Kind::MAX_NAME`] bytes long.
///
/// ```
/// use ultracache::Kind;
/// const POST: Kind = Kind::new("blog.post");
/// assert_eq!(POST.name(), "blog.post");
/// ```
#[derive(Clone, Copy)]
pub struct Kind {
    name: &'static str,
    hash: u64,
}

impl Kind {
    /// The longest name a kind may have, in bytes.
    pub const MAX_NAME: usize = u16::MAX as usize;

    /// A kind with this name.
    ///
    /// # Panics
    ///
    /// If the name is longer than [`Kind::MAX_NAME`] bytes (in a `const`, a
    /// compile error).
    pub const fn new(name: &'static str) -> Self {
        assert!(
            name.len() <= Self::MAX_NAME,
            "a kind's name is at most 65,535 bytes"
        );
        Kind {
            name,
            hash: fnv1a(name.as_bytes()) & KIND_HASH,
        }
    }

    /// A kind with this hash and no name, equal to no named kind: what a
    /// name this process cannot keep is versioned under.
    pub(crate) const fn unnamed(hash: u64) -> Self {
        Kind {
            name: "",
            hash: hash & KIND_HASH,
        }
    }

    /// The kind's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    pub(crate) const fn hash64(&self) -> u64 {
        self.hash
    }
}

impl PartialEq for Kind {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && (std::ptr::eq(self.name, other.name) || self.name == other.name)
    }
}
impl Eq for Kind {}

impl Hash for Kind {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialOrd for Kind {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Kind {
    fn cmp(&self, other: &Self) -> Ordering {
        self.name.cmp(other.name)
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kind({:?})", self.name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// One dependency: a single object (`blog.post:42`) or a whole kind
/// (`blog.post`, "any post": lists, counts and lookups that found nothing).
///
/// Object ids are reduced to a stable 64-bit key (see [`IdHasher`]): an id that
/// hashes as one integer keeps its value, so `Dep` displays as `blog.post:42`.
///
/// ```
/// use ultracache::{Dep, Kind};
/// const POST: Kind = Kind::new("blog.post");
/// assert_eq!(Dep::object(POST, &42i64).to_string(), "blog.post:42");
/// assert_eq!(Dep::kind(POST).to_string(), "blog.post");
/// ```
///
/// Three words: every entry holds its dependencies, so a dependency is 24
/// bytes rather than the 40 of a kind and an `Option<u64>`.
#[derive(Clone, Copy)]
pub struct Dep {
    /// Where the kind's name starts (a `&'static str`, its length in `tag`).
    name: NonNull<u8>,
    /// [`OBJECT`] for an object dependency, the name's length
    /// ([`LEN_SHIFT`]) and the kind's hash ([`KIND_HASH`]).
    tag: u64,
    /// The object's id key; 0 for a kind dependency.
    id: u64,
}

// SAFETY: `name` is the start of a `&'static str`, which is `Send` and `Sync`.
unsafe impl Send for Dep {}
// SAFETY: as above.
unsafe impl Sync for Dep {}

/// The bit of [`Dep::tag`] that marks an object dependency.
const OBJECT: u64 = 1 << 63;
/// Where the kind name's length is in [`Dep::tag`] (16 bits).
const LEN_SHIFT: u32 = 47;
/// The bits of a kind's hash (47: a kind is told from another by its name;
/// the hash spreads kinds over shards and versions).
const KIND_HASH: u64 = (1 << LEN_SHIFT) - 1;

impl PartialEq for Dep {
    fn eq(&self, other: &Self) -> bool {
        self.tag == other.tag && self.id == other.id && self.model_kind() == other.model_kind()
    }
}
impl Eq for Dep {}

impl Hash for Dep {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.tag);
        state.write_u64(self.id);
    }
}

impl PartialOrd for Dep {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Dep {
    /// By kind name, then the kind before its objects, then by id key.
    fn cmp(&self, other: &Self) -> Ordering {
        self.model_kind()
            .cmp(&other.model_kind())
            .then_with(|| self.id_key().cmp(&other.id_key()))
    }
}

impl Dep {
    /// The dependency on one object of `kind`, identified by `id`.
    pub fn object<I: Hash + ?Sized>(kind: Kind, id: &I) -> Self {
        Dep::object_key(kind, id_key(id))
    }

    /// The dependency on one object, from an id already reduced by [`id_key`].
    pub const fn object_key(kind: Kind, key: u64) -> Self {
        Dep::new(kind, OBJECT, key)
    }

    /// The dependency on the kind itself ("any object of this kind").
    pub const fn kind(kind: Kind) -> Self {
        Dep::new(kind, 0, 0)
    }

    const fn new(kind: Kind, object: u64, id: u64) -> Self {
        // SAFETY: a `str`'s pointer is never null (dangling when empty).
        let name = unsafe { NonNull::new_unchecked(kind.name.as_ptr().cast_mut()) };
        Dep {
            name,
            // `Kind::new` keeps names within 16 bits of length.
            tag: object | (kind.name.len() as u64) << LEN_SHIFT | kind.hash,
            id,
        }
    }

    /// The kind's name.
    const fn kind_name(&self) -> &'static str {
        let len = ((self.tag & !OBJECT) >> LEN_SHIFT) as usize;
        // SAFETY: `name` and `len` are those of a `&'static str` (`new`).
        unsafe {
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(self.name.as_ptr(), len))
        }
    }

    /// The kind this dependency is about.
    pub const fn model_kind(&self) -> Kind {
        Kind {
            name: self.kind_name(),
            hash: self.tag & KIND_HASH,
        }
    }

    /// The object's id key, or `None` for a kind dependency.
    pub const fn id_key(&self) -> Option<u64> {
        if self.tag & OBJECT != 0 {
            Some(self.id)
        } else {
            None
        }
    }

    /// A well-mixed hash of the dependency, stable across processes. An
    /// object's id is salted before it is mixed: `mix(0)` is 0, and an
    /// unsalted id 0 would hash as its kind (every write of the kind would
    /// then count as a write of object 0).
    pub(crate) fn hash64(&self) -> u64 {
        let kind = self.tag & KIND_HASH;
        match self.id_key() {
            Some(id) => mix(kind ^ mix(id ^ OBJECT_SALT)),
            None => mix(kind),
        }
    }
}

/// A model kind, registered by `#[derive(Trackable)]`.
#[derive(Debug)]
pub struct ModelInfo {
    /// The kind.
    pub kind: Kind,
    /// The Rust type's name.
    pub type_name: &'static str,
    /// The module the type is defined in.
    pub module: &'static str,
}

inventory::collect!(ModelInfo);

impl fmt::Debug for Dep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dep({self})")
    }
}

impl fmt::Display for Dep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id_key() {
            Some(id) => write!(f, "{}:{}", self.kind_name(), id),
            None => f.write_str(self.kind_name()),
        }
    }
}

/// Reduces an id to the 64-bit key used in dependencies, deterministically
/// (the same in every process of a build).
///
/// ```
/// assert_eq!(ultracache::id_key(&42u32), 42);
/// assert_eq!(ultracache::id_key("slug"), ultracache::id_key(&String::from("slug")));
/// ```
pub fn id_key<I: Hash + ?Sized>(id: &I) -> u64 {
    let mut h = IdHasher::default();
    id.hash(&mut h);
    h.finish()
}

/// The deterministic hasher behind [`id_key`]: an id written as exactly one
/// integer keeps its value; anything else is mixed with FNV-1a.
#[derive(Default, Debug, Clone)]
pub struct IdHasher {
    state: u64,
    writes: u32,
    single: Option<u64>,
}

impl IdHasher {
    fn int(&mut self, v: u64) {
        self.writes += 1;
        self.single = Some(v);
        self.bytes(&v.to_le_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        let mut s = if self.state == 0 {
            FNV_OFFSET
        } else {
            self.state
        };
        for b in bytes {
            s ^= u64::from(*b);
            s = s.wrapping_mul(FNV_PRIME);
        }
        self.state = s;
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        match (self.writes, self.single) {
            (1, Some(v)) => v,
            _ => mix(self.state),
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.writes += 1;
        self.single = None;
        self.bytes(bytes);
    }

    fn write_u8(&mut self, i: u8) {
        self.int(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.int(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.int(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.int(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.int(i as u64);
    }
    fn write_i8(&mut self, i: i8) {
        self.int(i as u64);
    }
    fn write_i16(&mut self, i: i16) {
        self.int(i as u64);
    }
    fn write_i32(&mut self, i: i32) {
        self.int(i as u64);
    }
    fn write_i64(&mut self, i: i64) {
        self.int(i as u64);
    }
    fn write_isize(&mut self, i: isize) {
        self.int(i as u64);
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The hash [`Kind::new`] gives a kind of this name.
pub(crate) const fn kind_hash(name: &str) -> u64 {
    fnv1a(name.as_bytes()) & KIND_HASH
}

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

/// A 64-bit finalizer (splitmix64): spreads nearby keys over the whole range.
/// Salts object ids in [`Dep::hash64`]: the one id that hashes as its kind
/// is this one, which no counter reaches.
const OBJECT_SALT: u64 = 0xd6e8_feb8_6659_fd93;

pub(crate) const fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_ids_keep_their_value() {
        assert_eq!(id_key(&7i64), 7);
        assert_eq!(id_key(&7u8), 7);
        assert_eq!(id_key(&-1i64), u64::MAX);
    }

    #[test]
    fn composite_ids_differ_by_order() {
        assert_ne!(id_key(&(1u32, 2u32)), id_key(&(2u32, 1u32)));
        assert_ne!(id_key("ab"), id_key("ba"));
    }

    #[test]
    fn no_small_id_hashes_as_its_kind_or_as_another_id() {
        const K: Kind = Kind::new("dep.test");
        let kind = Dep::kind(K).hash64();
        let mut seen = std::collections::HashSet::new();
        for id in (0..10_000i64).chain([-1, i64::MIN, i64::MAX]) {
            let h = Dep::object(K, &id).hash64();
            assert_ne!(h, kind, "object {id} hashes as its kind");
            assert!(seen.insert(h), "object {id} hashes as another");
        }
    }

    #[test]
    fn a_dependency_is_three_words() {
        assert_eq!(std::mem::size_of::<Dep>(), 24);
        assert_eq!(std::mem::size_of::<Option<Dep>>(), 24);
    }

    #[test]
    fn names_of_any_length_come_back_whole() {
        let long: &'static str = Box::leak("k".repeat(Kind::MAX_NAME).into_boxed_str());
        for name in ["", "a", "blog::models::Post", "ünïcödé.kind", long] {
            let kind = Kind::new(name);
            for dep in [Dep::kind(kind), Dep::object_key(kind, u64::MAX)] {
                assert_eq!(dep.model_kind().name(), name);
                assert_eq!(dep.model_kind(), kind);
            }
        }
        // Same name elsewhere in memory: the same dependency.
        let copy: &'static str = Box::leak(String::from("blog.post").into_boxed_str());
        assert_eq!(
            Dep::object_key(Kind::new(copy), 3),
            Dep::object_key(Kind::new("blog.post"), 3)
        );
        assert_ne!(
            Dep::object_key(Kind::new("blog.post"), 3),
            Dep::object_key(Kind::new("blog.posT"), 3)
        );
    }

    #[test]
    #[should_panic(expected = "at most 65,535 bytes")]
    fn a_longer_name_is_refused() {
        let long: &'static str = Box::leak("k".repeat(Kind::MAX_NAME + 1).into_boxed_str());
        let _ = Kind::new(long);
    }

    #[test]
    fn kind_and_object_dependencies_differ_whatever_the_id() {
        const K: Kind = Kind::new("dep.test");
        for id in [0, 1, u64::MAX, OBJECT, K.hash64()] {
            let object = Dep::object_key(K, id);
            assert_ne!(object, Dep::kind(K));
            assert_eq!(object.model_kind(), K);
            assert_eq!(object.id_key(), Some(id));
        }
        assert_eq!(Dep::kind(K).model_kind(), K);
        assert_eq!(Dep::kind(K).id_key(), None);
        // The kind sorts before its objects, as `None` before `Some`.
        assert!(Dep::kind(K) < Dep::object_key(K, 0));
        assert!(Dep::object_key(K, 1) < Dep::object_key(K, 2));
        assert!(Dep::object_key(K, 9) < Dep::kind(Kind::new("dep.tesu")));
    }

    #[test]
    fn kinds_compare_by_name() {
        assert_eq!(Kind::new("a"), Kind::new("a"));
        assert_ne!(Kind::new("a"), Kind::new("b"));
    }
}
