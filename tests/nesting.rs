//! Nested cached computations: an inner call's dependencies join the outer
//! entry, on a miss and on a hit.

#[macro_use]
mod common;

use common::Runs;
use ultracache::{cached, capture, invalidate, tracks, Trackable};

model!(Post, "nesting.post");

fn post(id: i64) -> Post {
    Post::numbered(id)
}

#[tracks]
fn load(id: i64) -> Post {
    post(id)
}

static INNER: Runs = Runs::new();
static OUTER: Runs = Runs::new();

#[cached(forever)]
fn inner(id: i64) -> String {
    INNER.hit();
    load(id).title
}

#[cached(forever)]
fn outer(a: i64, b: i64) -> String {
    OUTER.hit();
    format!("{} + {}", inner(a), inner(b))
}

#[test]
fn inner_dependencies_join_the_outer_entry_on_a_miss() {
    assert_eq!(outer(1, 2), "post 1 + post 2");
    assert_eq!((OUTER.get(), INNER.get()), (1, 2));

    invalidate(&post(1));
    assert_eq!(outer(1, 2), "post 1 + post 2");
    // The outer entry and inner(1) were dropped; inner(2) stayed a hit.
    assert_eq!((OUTER.get(), INNER.get()), (2, 3));
}

static HIT_INNER: Runs = Runs::new();
static HIT_OUTER: Runs = Runs::new();

#[cached(forever)]
fn hit_inner(id: i64) -> String {
    HIT_INNER.hit();
    load(id).title
}

#[cached(forever)]
fn hit_outer(id: i64) -> String {
    HIT_OUTER.hit();
    format!("<p>{}</p>", hit_inner(id))
}

#[test]
fn an_inner_hit_replays_its_dependencies_into_the_outer_entry() {
    // Warm the inner entry alone.
    hit_inner(10);
    assert_eq!(HIT_INNER.get(), 1);

    // The outer computation finds the inner value in the cache...
    let (_, deps) = capture(|| hit_outer(10));
    assert_eq!(HIT_INNER.get(), 1, "inner was a hit");
    assert_eq!(deps.len(), 1, "...and still depends on what inner read");
    assert_eq!(deps[0], post(10).dep());

    // Writing the object only the inner hit read drops the outer entry too.
    invalidate(&post(10));
    hit_outer(10);
    assert_eq!(HIT_OUTER.get(), 2);
    assert_eq!(HIT_INNER.get(), 2);
}

static LEVELS: Runs = Runs::new();

#[cached(forever)]
fn level3(id: i64) -> i64 {
    load(id).id
}

#[cached(forever)]
fn level2(id: i64) -> i64 {
    level3(id) * 2
}

#[cached(forever)]
fn level1(id: i64) -> i64 {
    LEVELS.hit();
    level2(id) + 1
}

#[test]
fn dependencies_travel_through_several_levels() {
    assert_eq!(level1(20), 41);
    assert_eq!(level1(20), 41);
    assert_eq!(LEVELS.get(), 1);
    invalidate(&post(20));
    assert_eq!(level1(20), 41);
    assert_eq!(LEVELS.get(), 2);
}
