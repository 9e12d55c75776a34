//! Reads recorded inside a computation become its dependencies, and only those.

#[macro_use]
mod common;

use common::Runs;
use ultracache::{cached, capture, dependents, invalidate, track, tracks, Dep, Trackable};

model!(Post, "recording.post");

fn post(id: i64) -> Post {
    Post::numbered(id)
}

#[tracks]
fn load(id: i64) -> Post {
    post(id)
}

fn names(deps: &[Dep]) -> Vec<String> {
    deps.iter().map(ToString::to_string).collect()
}

static VIA_TRACKS: Runs = Runs::new();

#[cached(forever)]
fn via_tracks(id: i64) -> String {
    VIA_TRACKS.hit();
    load(id).title
}

#[test]
fn reads_through_tracks_loaders_are_dependencies() {
    assert_eq!(via_tracks(1), "post 1");
    assert_eq!(via_tracks(1), "post 1");
    assert_eq!(VIA_TRACKS.get(), 1);

    assert_eq!(invalidate(&post(2)), 0, "nothing read post 2");
    assert_eq!(via_tracks(1), "post 1");
    assert_eq!(VIA_TRACKS.get(), 1);

    assert_eq!(invalidate(&post(1)), 1);
    assert_eq!(via_tracks(1), "post 1");
    assert_eq!(VIA_TRACKS.get(), 2);
}

static VIA_TRACK: Runs = Runs::new();

#[cached(forever)]
fn via_track(id: i64) -> usize {
    VIA_TRACK.hit();
    let p = post(id + 100);
    track(&p);
    p.title.len()
}

#[test]
fn explicit_track_calls_are_dependencies() {
    via_track(1);
    assert_eq!(dependents(&post(101).dep()), 1);
    invalidate(&post(101));
    via_track(1);
    assert_eq!(VIA_TRACK.get(), 2);
}

static BY_ARG: Runs = Runs::new();

#[cached(forever, key = post.id)]
fn by_arg(post: &Post) -> String {
    BY_ARG.hit();
    post.title.to_uppercase()
}

#[test]
fn trackable_arguments_are_dependencies() {
    let p = post(200);
    assert_eq!(by_arg(&p), "POST 200");
    assert_eq!(by_arg(&p), "POST 200");
    assert_eq!(BY_ARG.get(), 1);
    invalidate(&p);
    by_arg(&p);
    assert_eq!(BY_ARG.get(), 2);
}

#[cached(forever)]
fn reads_300(n: i64) -> i64 {
    load(300).id + n
}

#[test]
fn reads_before_and_after_a_computation_are_not_its_dependencies() {
    let ((), deps) = capture(|| {
        load(301); // before
        reads_300(1);
        load(302); // after
    });
    // The enclosing capture saw all three; the cached entry only post 300.
    assert_eq!(
        names(&deps),
        [
            "recording.post:300",
            "recording.post:301",
            "recording.post:302"
        ]
    );
    assert_eq!(dependents(&post(300).dep()), 1);
    assert_eq!(dependents(&post(301).dep()), 0);
    assert_eq!(dependents(&post(302).dep()), 0);
}

#[cached(forever)]
fn first(id: i64) -> String {
    load(id).title
}

#[cached(forever)]
fn second(id: i64) -> String {
    load(id).title
}

#[test]
fn sequential_computations_do_not_leak_into_each_other() {
    let ((), deps) = capture(|| {
        let (_, a) = capture(|| first(400));
        let (_, b) = capture(|| second(401));
        assert_eq!(names(&a), ["recording.post:400"]);
        assert_eq!(names(&b), ["recording.post:401"]);
    });
    assert_eq!(deps.len(), 2);
    assert_eq!(dependents(&post(400).dep()), 1);
    assert_eq!(dependents(&post(401).dep()), 1);
}

#[test]
fn track_outside_a_computation_records_nothing() {
    track(&post(500));
    load(500);
    assert_eq!(dependents(&post(500).dep()), 0);
}
