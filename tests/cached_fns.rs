//! The forms `#[cached]` takes: keys, skip, methods, `Result`, `Option`,
//! `Duration` timeouts, and registration.

mod common;

use std::time::Duration;

use common::Runs;
use ultracache::{cached, registered, Timeout};

static KEYED: Runs = Runs::new();

struct Db;

#[cached(timeout = 3600, key = (user_id, page))]
fn feed(db: &Db, user_id: u64, page: u32, verbose: bool) -> String {
    let _ = db;
    KEYED.hit();
    format!("{user_id}/{page}/{verbose}")
}

#[test]
fn a_key_expression_chooses_what_identifies_an_entry() {
    assert_eq!(feed(&Db, 1, 2, false), "1/2/false");
    // `verbose` is not part of the key: same entry.
    assert_eq!(feed(&Db, 1, 2, true), "1/2/false");
    assert_eq!(feed(&Db, 1, 3, true), "1/3/true");
    assert_eq!(KEYED.get(), 2);
}

static SKIPPED: Runs = Runs::new();

#[cached(timeout = 60, skip(db))]
fn by_slug(db: &Db, slug: &str) -> usize {
    let _ = db;
    SKIPPED.hit();
    slug.len()
}

#[test]
fn skip_leaves_arguments_out_of_the_default_key() {
    assert_eq!(by_slug(&Db, "hello"), 5);
    assert_eq!(by_slug(&Db, "hello"), 5);
    assert_eq!(by_slug(&Db, "hi"), 2);
    assert_eq!(SKIPPED.get(), 2);
}

static SAME_A: Runs = Runs::new();
static SAME_B: Runs = Runs::new();

#[cached(forever)]
fn double(n: u64) -> u64 {
    SAME_A.hit();
    n * 2
}

#[cached(forever)]
fn triple(n: u64) -> u64 {
    SAME_B.hit();
    n * 3
}

#[test]
fn two_functions_with_equal_keys_never_share_an_entry() {
    assert_eq!(double(7), 14);
    assert_eq!(triple(7), 21);
    assert_eq!(double(7), 14);
    assert_eq!(triple(7), 21);
    assert_eq!((SAME_A.get(), SAME_B.get()), (1, 1));
}

static RESULTS: Runs = Runs::new();

#[cached(timeout = 60)]
fn parse(input: &str) -> Result<u32, std::num::ParseIntError> {
    RESULTS.hit();
    input.parse()
}

#[test]
fn only_ok_results_are_stored() {
    assert!(parse("x").is_err());
    assert!(parse("x").is_err());
    assert_eq!(RESULTS.get(), 2, "an Err is computed again");
    assert_eq!(parse("12"), Ok(12));
    assert_eq!(parse("12"), Ok(12));
    assert_eq!(RESULTS.get(), 3);
}

type MyResult<T> = Result<T, String>;

static ALIASED: Runs = Runs::new();

#[cached(timeout = 60)]
fn aliased(n: u32) -> MyResult<u32> {
    ALIASED.hit();
    if n == 0 {
        Err("zero".into())
    } else {
        Ok(n)
    }
}

#[test]
fn result_aliases_are_recognised_by_type_not_by_name() {
    assert!(aliased(0).is_err());
    assert!(aliased(0).is_err());
    assert_eq!(aliased(1), Ok(1));
    assert_eq!(aliased(1), Ok(1));
    assert_eq!(ALIASED.get(), 3);
}

static OPTIONS: Runs = Runs::new();

#[cached(timeout = 60)]
fn lookup(name: &str) -> Option<u32> {
    OPTIONS.hit();
    (name == "one").then_some(1)
}

#[test]
fn none_is_a_value_and_is_stored() {
    assert_eq!(lookup("zero"), None);
    assert_eq!(lookup("zero"), None);
    assert_eq!(lookup("one"), Some(1));
    assert_eq!(lookup("one"), Some(1));
    assert_eq!(OPTIONS.get(), 2);
}

static QUESTION: Runs = Runs::new();

#[cached(timeout = 60)]
fn early_returns(input: &str) -> Result<u32, String> {
    QUESTION.hit();
    let n: u32 = input.parse().map_err(|_| "not a number".to_string())?;
    if n > 100 {
        return Ok(100);
    }
    Ok(n)
}

#[test]
fn question_mark_and_return_work_in_the_body() {
    assert_eq!(early_returns("500"), Ok(100));
    assert_eq!(early_returns("500"), Ok(100));
    assert!(early_returns("x").is_err());
    assert_eq!(QUESTION.get(), 2);
}

#[derive(Clone)]
struct Address {
    street: String,
    number: u32,
}

static METHODS: Runs = Runs::new();

impl Address {
    #[cached(timeout = 60, key = (self.street.clone(), self.number))]
    fn geocode(&self) -> (f64, f64) {
        METHODS.hit();
        (self.street.len() as f64, f64::from(self.number))
    }
}

#[test]
fn methods_key_on_fields_of_self() {
    let a = Address {
        street: "Main".into(),
        number: 3,
    };
    let b = a.clone();
    assert_eq!(a.geocode(), (4.0, 3.0));
    assert_eq!(b.geocode(), (4.0, 3.0));
    let c = Address {
        street: "Main".into(),
        number: 4,
    };
    assert_eq!(c.geocode(), (4.0, 4.0));
    assert_eq!(METHODS.get(), 2);
}

static MUT_METHODS: Runs = Runs::new();

struct Counter {
    calls: u32,
}

impl Counter {
    #[cached(timeout = 60, key = n)]
    fn square(&mut self, n: u32) -> u32 {
        MUT_METHODS.hit();
        self.calls += 1;
        n * n
    }
}

#[test]
fn methods_taking_mut_self_run_their_body_on_a_miss_only() {
    let mut c = Counter { calls: 0 };
    assert_eq!(c.square(4), 16);
    assert_eq!(c.square(4), 16);
    assert_eq!(c.calls, 1);
    assert_eq!(MUT_METHODS.get(), 1);
}

static DURATIONS: Runs = Runs::new();
const HALF_MINUTE: Duration = Duration::from_secs(30);

#[cached(timeout = HALF_MINUTE)]
fn with_duration(n: u8) -> u8 {
    DURATIONS.hit();
    n
}

#[cached(timeout = 60 * 60, store = "default")]
fn with_expression(n: u8) -> u8 {
    n
}

#[test]
fn timeouts_are_seconds_or_durations_and_are_registered() {
    with_duration(1);
    with_duration(1);
    assert_eq!(DURATIONS.get(), 1);
    with_expression(1);

    let reg = registered();
    let timeout_of = |name: &str| {
        reg.functions
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.timeout.resolve(None))
    };
    assert_eq!(timeout_of("with_duration"), Some(Some(HALF_MINUTE)));
    assert_eq!(
        timeout_of("with_expression"),
        Some(Some(Duration::from_secs(3600)))
    );
    assert_eq!(timeout_of("double"), Some(None), "forever");
    assert_eq!(timeout_of("feed"), Some(Some(Duration::from_secs(3600))));
    let feed = reg.functions.iter().find(|f| f.name == "feed").unwrap();
    assert_eq!(feed.module, "cached_fns");
    assert!(matches!(feed.timeout, Timeout::After(_)));
    assert_eq!(
        reg.functions
            .iter()
            .find(|f| f.name == "with_expression")
            .and_then(|f| f.store),
        Some("default")
    );
}

static NO_ARGS: Runs = Runs::new();

#[cached(timeout = 60)]
fn constant() -> Vec<u8> {
    NO_ARGS.hit();
    vec![1, 2, 3]
}

#[test]
fn a_function_without_arguments_has_one_entry() {
    assert_eq!(constant(), [1, 2, 3]);
    assert_eq!(constant(), [1, 2, 3]);
    assert_eq!(NO_ARGS.get(), 1);
}

/// A one-line body that is a single macro call: generated code once wrapped it
/// in a second pair of braces, which `unused_braces` flagged on the user's code.
#[rustfmt::skip]
#[cached(forever)]
fn single_macro_call(k: u64) -> String { format!("{k:064}") }

#[test]
fn a_single_expression_body_compiles_without_warnings() {
    assert_eq!(single_macro_call(3).len(), 64);
}
