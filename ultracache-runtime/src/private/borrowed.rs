//! The hit path of a `#[cached]` call, looked up by its arguments as
//! borrowed: a hit builds no owned key (no `String` for a `&str`, no `Vec`
//! for a `&[T]`); the owned key is made only when the call misses.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use equivalent::Equivalent;

use super::Outcome;
use crate::cache::{CacheKey, CacheValue};
use crate::registration::CachedFn;

/// Names, for one argument, the type its owned key part borrows as:
/// `arg.__ultracache_key_part()` resolves to the same `Self` as
/// `arg.to_owned()` (both take `&self`), so the owned part is
/// `<Self as ToOwned>::Owned`, which borrows as `Self` with the same hash.
pub trait KeyPart {
    #[inline(always)]
    fn __ultracache_key_part(&self) -> &Self {
        self
    }
}
impl<T: ?Sized> KeyPart for T {}

/// Several borrowed key parts, compared with the owned tuple part by part.
/// Hashes as the owned tuple does (a tuple hashes its fields in order, and
/// an owned part hashes as what it borrows as).
#[derive(Clone, Copy)]
pub struct Parts<T>(pub T);

macro_rules! parts {
    ($($A:ident $O:ident $i:tt),+) => {
        impl<$($A: ?Sized + Hash),+> Hash for Parts<($(&$A,)+)> {
            #[inline]
            fn hash<H: Hasher>(&self, state: &mut H) {
                $( (self.0).$i.hash(state); )+
            }
        }
        impl<$($A: ?Sized + Eq, $O: Borrow<$A>),+> Equivalent<($($O,)+)> for Parts<($(&$A,)+)> {
            #[inline]
            fn equivalent(&self, key: &($($O,)+)) -> bool {
                $( *(self.0).$i == *key.$i.borrow() )&&+
            }
        }
    };
}
parts!(A0 O0 0, A1 O1 1);
parts!(A0 O0 0, A1 O1 1, A2 O2 2);
parts!(A0 O0 0, A1 O1 1, A2 O2 2, A3 O3 3);
parts!(A0 O0 0, A1 O1 1, A2 O2 2, A3 O3 3, A4 O4 4);
parts!(A0 O0 0, A1 O1 1, A2 O2 2, A3 O3 3, A4 O4 4, A5 O5 5);
parts!(A0 O0 0, A1 O1 1, A2 O2 2, A3 O3 3, A4 O4 4, A5 O5 5, A6 O6 6);
parts!(A0 O0 0, A1 O1 1, A2 O2 2, A3 O3 3, A4 O4 4, A5 O5 5, A6 O6 6, A7 O7 7);

/// The most key arguments the borrowed hit path handles; a function with
/// more builds its owned key on every call.
pub const MAX_PARTS: usize = 8;

/// A `#[cached]` call's borrowed key, with the owned key type and the
/// outcome it is read as. Autoref specialization: `(&&probe)
/// .__ultracache_hit(f)` looks the entry up when the key and value can be
/// cached, and is `None` otherwise (the owned call then reports why, on the
/// user's tokens).
pub struct HitProbe<'a, Q: ?Sized, K, O, R>(&'a Q, PhantomData<fn() -> (K, R)>, PhantomData<O>);

impl<'a, Q: ?Sized, K, O, R> HitProbe<'a, Q, K, O, R> {
    /// `_owned` is never called: it names the owned key type.
    #[inline(always)]
    pub fn new(
        key: &'a Q,
        _owned: impl FnOnce() -> K,
        _outcome: &O,
        _result: PhantomData<fn() -> R>,
    ) -> Self {
        HitProbe(key, PhantomData, PhantomData)
    }
}

pub trait BorrowedHit<R> {
    fn __ultracache_hit(&self, f: &'static CachedFn) -> Option<R>;
}

impl<Q, K, O, R> BorrowedHit<R> for &HitProbe<'_, Q, K, O, R>
where
    Q: Hash + Equivalent<K> + ?Sized,
    K: CacheKey,
    O: Outcome<R>,
    O::Value: CacheValue,
{
    /// A live entry of `f`'s cache for the borrowed key, if its cache exists
    /// already.
    #[inline]
    fn __ultracache_hit(&self, f: &'static CachedFn) -> Option<R> {
        f.hit::<K, O::Value, Q>(self.0).map(O::wrap)
    }
}

pub trait NoBorrowedHit<R> {
    #[inline(always)]
    fn __ultracache_hit(&self, _f: &'static CachedFn) -> Option<R> {
        None
    }
}
impl<Q: ?Sized, K, O, R> NoBorrowedHit<R> for HitProbe<'_, Q, K, O, R> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn hash_of<T: Hash + ?Sized>(t: &T) -> u64 {
        foldhash::fast::FixedState::with_seed(7).hash_one(t)
    }

    #[test]
    fn borrowed_parts_hash_and_compare_as_the_owned_key() {
        let owned = (String::from("a/b"), vec![1u32, 2], 7u64);
        let s: &str = "a/b";
        let v: &[u32] = &[1, 2];
        let borrowed = Parts((
            s.__ultracache_key_part(),
            v.__ultracache_key_part(),
            7u64.__ultracache_key_part(),
        ));
        assert_eq!(hash_of(&borrowed), hash_of(&owned));
        assert!(borrowed.equivalent(&owned));
        let other = Parts(("a/c", v, &7u64));
        assert!(!other.equivalent(&owned));
        // Moving a byte between parts changes the key.
        let split = (String::from("ab"), String::from("c"));
        assert!(!Parts(("a", "bc")).equivalent(&split));
        assert_ne!(hash_of(&Parts(("a", "bc"))), hash_of(&split));
    }
}
