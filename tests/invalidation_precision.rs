//! An invalidation refuses only the computations that read what it names:
//! `Cache::invalidate(&key)` versions that key in its own cache only (keys
//! of another cache, however alike, are never refused for it), and a write
//! of one object never refuses a computation that read another object of
//! its kind — object 0 included.

use ultracache::{invalidate, track, Cache, Trackable};

#[derive(Trackable)]
#[trackable(kind = "precision.row")]
struct Row {
    id: i64,
}

static ROWS: Cache<i64, i64> = Cache::new("precision.rows");

static A: Cache<u64, u64> = Cache::new("key_versions.a");
static B: Cache<u64, u64> = Cache::new("key_versions.b");
static C: Cache<String, u64> = Cache::new("key_versions.c");
static D: Cache<String, u64> = Cache::new("key_versions.d");

#[test]
fn invalidating_keys_of_one_cache_refuses_no_computation_of_another() {
    for k in 0..16u64 {
        // Every small key of `A` is invalidated while `B` computes `k`.
        B.get_or_compute(k, || {
            for other in 0..1_024u64 {
                A.invalidate(&other);
            }
            k
        });
        assert_eq!(B.get(&k), Some(k), "B's key {k} was refused");
    }
    assert_eq!(B.stats().stale, 0);
    // Its own key is refused, as it must be.
    A.get_or_compute(7, || {
        A.invalidate(&7);
        7
    });
    assert_eq!(A.get(&7), None);
}

#[test]
fn string_keys_of_one_cache_refuse_nothing_in_another() {
    for k in 0..16u64 {
        let key = format!("/page/{k}");
        D.get_or_compute(key.clone(), || {
            for other in 0..256u64 {
                C.invalidate(&format!("/page/{other}"));
            }
            k
        });
        assert_eq!(D.get(&key), Some(k), "D's key {key} was refused");
    }
    assert_eq!(D.stats().stale, 0);
}

#[test]
fn a_write_of_one_object_refuses_no_computation_of_another_object_0_included() {
    for id in [0i64, 1, -1, 42] {
        ROWS.get_or_compute(id, || {
            track(&Row { id });
            // Other rows of the kind are written while it computes.
            for other in 100..110 {
                invalidate(&Row { id: other });
            }
            id
        });
        assert_eq!(ROWS.get(&id), Some(id), "row {id} was refused");
        invalidate(&Row { id: 7 });
        assert_eq!(
            ROWS.get(&id),
            Some(id),
            "row {id} was dropped by row 7's write"
        );
    }
    assert_eq!(ROWS.stats().stale, 0);
    // Its own write drops it.
    assert_eq!(invalidate(&Row { id: 0 }), 1);
    assert_eq!(ROWS.get(&0), None);
}
