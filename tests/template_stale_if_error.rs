//! `stale_if_error` on template blocks: a block past its timeout whose render
//! fails (a function it calls returns an error) shows its last output, within
//! its own grace; never once something it read was written, never past the
//! grace, and never for a block that did not ask. Sleeping past a deadline
//! on the monotonic clock is deterministic.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use minijinja::{context, Environment, Error, ErrorKind};
use ultracache::minijinja::register;
use ultracache::{invalidate, tracks, Trackable};

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "tgrace.post")]
struct Post {
    id: i64,
}

#[tracks]
fn load(id: i64) -> Post {
    Post { id }
}

/// Posts whose database is down: reading them fails.
static DOWN: Mutex<Option<HashSet<i64>>> = Mutex::new(None);

fn set_down(id: i64, down: bool) {
    let mut d = DOWN.lock().unwrap();
    let set = d.get_or_insert_with(HashSet::new);
    if down {
        set.insert(id);
    } else {
        set.remove(&id);
    }
}

/// How many times each post's headline was read.
static READS: Mutex<Vec<i64>> = Mutex::new(Vec::new());

fn headline(id: i64) -> Result<String, Error> {
    if DOWN
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|d| d.contains(&id))
    {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "the database is down",
        ));
    }
    READS.lock().unwrap().push(id);
    Ok(format!("headline {}", load(id).id))
}

fn reads(id: i64) -> usize {
    READS.lock().unwrap().iter().filter(|&&r| r == id).count()
}

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    register(&mut env);
    env.add_function("headline", headline);
    env.add_template(
        "graced",
        r#"{% call ultracache(1, "news", id, stale_if_error=60) %}{{ headline(id) }}{% endcall %}"#,
    )
    .unwrap();
    env.add_template(
        "short",
        r#"{% call ultracache(1, "short", id, stale_if_error=1) %}{{ headline(id) }}{% endcall %}"#,
    )
    .unwrap();
    env.add_template(
        "plain",
        r#"{% call ultracache(1, "plain", id) %}{{ headline(id) }}{% endcall %}"#,
    )
    .unwrap();
    env
}

fn render(env: &Environment<'_>, template: &str, id: i64) -> Result<String, Error> {
    env.get_template(template)
        .unwrap()
        .render(context! { id => id })
}

fn served_stale() -> u64 {
    ultracache::stats()
        .cache("template-block-graced")
        .map_or(0, |s| s.served_stale)
}

fn past_the_timeout() {
    std::thread::sleep(Duration::from_millis(1_100));
}

#[test]
fn an_expired_block_shows_its_last_output_when_rendering_it_again_fails() {
    let env = env();
    assert_eq!(render(&env, "graced", 1).unwrap(), "headline 1");
    assert_eq!(render(&env, "graced", 1).unwrap(), "headline 1");
    assert_eq!(reads(1), 1, "a hit");
    past_the_timeout();
    set_down(1, true);
    let before = served_stale();
    assert_eq!(
        render(&env, "graced", 1).expect("the last output, not the error"),
        "headline 1"
    );
    assert!(served_stale() > before, "counted");
    // Back up: rendered afresh.
    set_down(1, false);
    assert_eq!(render(&env, "graced", 1).unwrap(), "headline 1");
    assert_eq!(reads(1), 2);
}

#[test]
fn a_block_whose_data_was_written_never_shows_its_old_output() {
    let env = env();
    assert_eq!(render(&env, "graced", 2).unwrap(), "headline 2");
    past_the_timeout();
    invalidate(&load(2));
    set_down(2, true);
    assert!(
        render(&env, "graced", 2).is_err(),
        "an output whose data was written stood in for a failure"
    );
}

#[test]
fn past_its_own_grace_a_block_shows_the_error() {
    let env = env();
    assert_eq!(render(&env, "short", 3).unwrap(), "headline 3");
    // Past the timeout (1 s) and the block's grace (1 s), well within the
    // longest grace any block may ask.
    std::thread::sleep(Duration::from_millis(2_300));
    set_down(3, true);
    assert!(render(&env, "short", 3).is_err());
}

#[test]
fn a_block_that_did_not_ask_shows_the_error() {
    let env = env();
    assert_eq!(render(&env, "plain", 4).unwrap(), "headline 4");
    past_the_timeout();
    set_down(4, true);
    assert!(render(&env, "plain", 4).is_err());
}

#[test]
fn a_bad_grace_is_a_clear_error() {
    let mut env = env();
    env.add_template(
        "bad",
        r#"{% call ultracache(1, "bad", stale_if_error="soon") %}x{% endcall %}"#,
    )
    .unwrap();
    let e = env
        .get_template("bad")
        .unwrap()
        .render(context! {})
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("stale_if_error must be whole seconds"),
        "{e}"
    );
}
