//! A `#[cached]` hit looks its entry up by the arguments as borrowed: no
//! owned key is built (no `String` for a `&str`, no `Vec` for a `&[T]`), so a
//! hit whose value clones without allocating allocates nothing. Counted by a
//! global allocator that counts this thread's allocations.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use common::Runs;
use ultracache::cached;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations this thread makes while `f` runs.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

static PAGES: Runs = Runs::new();

#[cached(timeout = 3600)]
fn page(path: &str, ids: &[u32], version: u64) -> Arc<str> {
    PAGES.hit();
    format!("{path}:{ids:?}:{version}").into()
}

static SLUGS: Runs = Runs::new();

#[cached(timeout = 3600)]
fn slug_len(slug: &str) -> usize {
    SLUGS.hit();
    slug.len()
}

#[test]
fn a_hit_on_borrowed_arguments_allocates_nothing() {
    let path = String::from("/blog/hello-world");
    let ids = vec![3u32, 1, 4];
    let first = page(&path, &ids, 7);
    assert_eq!(PAGES.get(), 1);
    let hits = allocations(|| {
        for _ in 0..1_000 {
            let again = page(&path, &ids, 7);
            assert!(Arc::ptr_eq(&again, &first));
        }
    });
    assert_eq!(PAGES.get(), 1, "every call after the first is a hit");
    assert_eq!(hits, 0, "1,000 hits allocated {hits} times");

    assert_eq!(slug_len("hello"), 5);
    let hits = allocations(|| {
        for _ in 0..1_000 {
            assert_eq!(slug_len("hello"), 5);
        }
    });
    assert_eq!(SLUGS.get(), 1);
    assert_eq!(hits, 0, "1,000 single-argument hits allocated {hits} times");
}

static SPLITS: Runs = Runs::new();

#[cached(timeout = 3600)]
fn joined(a: &str, b: &str) -> String {
    SPLITS.hit();
    format!("{a}|{b}")
}

#[test]
fn borrowed_keys_that_differ_never_share_an_entry() {
    // The same bytes split differently, empty parts, and percent-encoded
    // forms are different keys.
    let cases = [
        ("a", "bc"),
        ("ab", "c"),
        ("", "abc"),
        ("abc", ""),
        ("a%2Fb", "c"),
        ("a/b", "c"),
    ];
    for (a, b) in cases {
        assert_eq!(joined(a, b), format!("{a}|{b}"));
    }
    assert_eq!(SPLITS.get(), cases.len());
    for (a, b) in cases {
        // Owned arguments, made afresh, borrow as the same key.
        let (a, b) = (String::from(a), String::from(b));
        assert_eq!(joined(&a, &b), format!("{a}|{b}"));
    }
    assert_eq!(SPLITS.get(), cases.len(), "the second round only hits");
}

static SLICES: Runs = Runs::new();

#[cached(timeout = 3600)]
fn total(xs: &[u64], scale: u64) -> u64 {
    SLICES.hit();
    xs.iter().sum::<u64>() * scale
}

#[test]
fn slices_that_differ_in_length_or_order_are_different_keys() {
    assert_eq!(total(&[1, 2], 1), 3);
    assert_eq!(total(&[2, 1], 1), 3);
    assert_eq!(total(&[1, 2, 0], 1), 3);
    assert_eq!(total(&[], 1), 0);
    assert_eq!(total(&[1, 2], 2), 6);
    assert_eq!(SLICES.get(), 5);
    let owned: Vec<u64> = (1..=2).collect();
    assert_eq!(total(&owned, 1), 3);
    assert_eq!(SLICES.get(), 5);
}

#[test]
fn a_cache_is_read_by_a_borrowed_form_of_its_key() {
    let cache = ultracache::Cache::<String, u32>::new("borrowed-get");
    assert_eq!(cache.get("abc"), None);
    cache.get_or_compute("abc".to_owned(), || 3);
    assert_eq!(cache.get("abc"), Some(3));
    assert_eq!(cache.get(&"abc".to_owned()), Some(3));
    assert_eq!(cache.get("abd"), None);
}

static MANY: Runs = Runs::new();

#[cached(timeout = 3600)]
#[allow(clippy::too_many_arguments)]
fn nine(a: u8, b: u8, c: u8, d: u8, e: u8, f: &str, g: u8, h: u8, i: u8) -> usize {
    MANY.hit();
    [a, b, c, d, e, g, h, i]
        .iter()
        .map(|&x| x as usize)
        .sum::<usize>()
        + f.len()
}

#[test]
fn more_key_arguments_than_the_borrowed_form_takes_still_key_by_each() {
    assert_eq!(nine(1, 2, 3, 4, 5, "x", 6, 7, 8), 37);
    assert_eq!(nine(1, 2, 3, 4, 5, "x", 6, 7, 8), 37);
    assert_eq!(nine(1, 2, 3, 4, 5, "x", 6, 7, 9), 38);
    assert_eq!(nine(1, 2, 3, 4, 5, "xy", 6, 7, 8), 38);
    assert_eq!(MANY.get(), 3);
}
