//! Weighing values for stores bounded in bytes.

use std::collections::{BTreeMap, HashMap};
use std::mem::size_of;
use std::rc::Rc;
use std::sync::Arc;

/// The heap memory a value owns beyond its own `size_of` (an estimate: used to
/// keep a store within [`StoreConfig::max_bytes`](crate::StoreConfig::max_bytes)).
///
/// `#[cached]` uses it for values that implement it and counts `size_of` alone
/// for the others.
///
/// ```
/// use ultracache::HeapSize;
/// assert!(String::from("hello").heap_size() >= 5);
/// assert_eq!(7u64.heap_size(), 0);
/// ```
pub trait HeapSize {
    /// Bytes owned on the heap.
    fn heap_size(&self) -> usize;
}

macro_rules! no_heap {
    ($($t:ty),*) => {$(
        impl HeapSize for $t {
            fn heap_size(&self) -> usize { 0 }
        }
    )*};
}
no_heap!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    &'static str
);

impl HeapSize for String {
    fn heap_size(&self) -> usize {
        self.capacity()
    }
}

impl<T: HeapSize> HeapSize for Vec<T> {
    fn heap_size(&self) -> usize {
        self.capacity() * size_of::<T>() + self.iter().map(HeapSize::heap_size).sum::<usize>()
    }
}

impl<T: HeapSize> HeapSize for Option<T> {
    fn heap_size(&self) -> usize {
        self.as_ref().map_or(0, HeapSize::heap_size)
    }
}

impl<T: HeapSize, E: HeapSize> HeapSize for Result<T, E> {
    fn heap_size(&self) -> usize {
        match self {
            Ok(v) => v.heap_size(),
            Err(e) => e.heap_size(),
        }
    }
}

impl<T: HeapSize + ?Sized> HeapSize for Box<T> {
    fn heap_size(&self) -> usize {
        size_of_val(&**self) + (**self).heap_size()
    }
}

impl HeapSize for str {
    fn heap_size(&self) -> usize {
        0
    }
}

/// Shared pointers count nothing: the memory is not the entry's alone.
impl<T: ?Sized> HeapSize for Arc<T> {
    fn heap_size(&self) -> usize {
        0
    }
}

/// Shared pointers count nothing: the memory is not the entry's alone.
impl<T: ?Sized> HeapSize for Rc<T> {
    fn heap_size(&self) -> usize {
        0
    }
}

impl<K: HeapSize, T: HeapSize, S> HeapSize for HashMap<K, T, S> {
    fn heap_size(&self) -> usize {
        self.capacity() * (size_of::<K>() + size_of::<T>() + 1)
            + self
                .iter()
                .map(|(k, v)| k.heap_size() + v.heap_size())
                .sum::<usize>()
    }
}

impl<K: HeapSize, T: HeapSize> HeapSize for BTreeMap<K, T> {
    fn heap_size(&self) -> usize {
        self.len() * (size_of::<K>() + size_of::<T>())
            + self
                .iter()
                .map(|(k, v)| k.heap_size() + v.heap_size())
                .sum::<usize>()
    }
}

macro_rules! tuple_heap {
    ($(($($t:ident $i:tt),+))*) => {$(
        impl<$($t: HeapSize),+> HeapSize for ($($t,)+) {
            fn heap_size(&self) -> usize { 0 $(+ self.$i.heap_size())+ }
        }
    )*};
}
tuple_heap! {
    (A 0)
    (A 0, B 1)
    (A 0, B 1, C 2)
    (A 0, B 1, C 2, D 3)
    (A 0, B 1, C 2, D 3, E 4)
    (A 0, B 1, C 2, D 3, E 4, F 5)
}
