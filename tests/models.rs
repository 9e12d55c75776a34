//! Cache models (`#[derive(CacheModel)]`) in the in-process store: round
//! trips, missing keys, references (present, missing, to the same type, in a
//! cycle), `FromMiss`, keys that never collide across types, and the
//! dependencies that keep what was computed from a model fresh.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;

use common::Runs;
use serde::{Deserialize, Serialize};
use ultracache::{
    cached, invalidate, tracks, CacheModel, FromMiss, Missing, Reference, SaveError, Trackable,
};

#[derive(CacheModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cache(name = "models.workplace")]
struct Workplace {
    #[cache(key)]
    name: String,
    phone: String,
    employees: u32,
}

#[derive(CacheModel, Serialize, Deserialize, Debug)]
#[cache(name = "models.user", timeout = 600)]
struct User {
    #[cache(key)]
    username: String,
    email: String,
    workplace: Reference<Workplace>,
    mother: Option<Reference<User>>,
}

fn workplace(name: &str, phone: &str) -> Workplace {
    Workplace {
        name: name.into(),
        phone: phone.into(),
        employees: 3,
    }
}

fn user(username: &str, workplace: &str, mother: Option<&str>) -> User {
    User {
        username: username.into(),
        email: format!("{username}@example.com"),
        workplace: Reference::to(WorkplaceKey::new(workplace.into())),
        mother: mother.map(|m| Reference::to(UserKey::new(m.into()))),
    }
}

#[test]
fn round_trip_and_missing_key() {
    let w = workplace("RoundTrip Ltd", "555-0001");
    w.save().unwrap();
    let key = WorkplaceKey {
        name: "RoundTrip Ltd".into(),
    };
    assert_eq!(Workplace::get(&key), Ok(w.clone()));
    assert_eq!(w.key(), key);

    let absent = WorkplaceKey::from("Nowhere Inc".to_owned());
    let err = Workplace::get(&absent).unwrap_err();
    assert_eq!(err.model, "models.workplace");
    assert!(err.key.contains("Nowhere Inc"), "{err}");
    assert_eq!(err.referenced_by, None);
    assert!(err.to_string().contains("models.workplace"), "{err}");

    // Saving again replaces; deleting removes.
    let mut w2 = w.clone();
    w2.employees = 40;
    w2.save().unwrap();
    assert_eq!(Workplace::get(&key).unwrap().employees, 40);
    Workplace::delete(&key);
    assert!(Workplace::get(&key).is_err());
}

#[test]
fn references_load_with_their_holder_and_are_always_current() {
    workplace("RefCo", "555-0100").save().unwrap();
    user("ref-bob", "RefCo", None).save().unwrap();

    let bob = User::get(&UserKey::new("ref-bob".into())).unwrap();
    let loaded = bob.workplace.loaded().expect("loaded by get");
    assert_eq!(loaded.phone, "555-0100");
    assert_eq!(bob.workplace.key().name, "RefCo");

    // The workplace changes: the user, read again, sees the new one.
    workplace("RefCo", "555-0199").save().unwrap();
    let bob = User::get(&UserKey::new("ref-bob".into())).unwrap();
    assert_eq!(bob.workplace.get().unwrap().phone, "555-0199");
}

#[test]
fn a_missing_reference_makes_get_fail() {
    workplace("GoneCo", "555-0200").save().unwrap();
    user("gone-bob", "GoneCo", None).save().unwrap();
    assert!(User::get(&UserKey::new("gone-bob".into())).is_ok());

    Workplace::delete(&WorkplaceKey::new("GoneCo".into()));
    let err = User::get(&UserKey::new("gone-bob".into())).unwrap_err();
    assert_eq!(err.model, "models.workplace");
    assert!(err.key.contains("GoneCo"));
    assert_eq!(err.referenced_by, Some("models.user"));

    // The user itself is still stored: once the workplace is back, it loads.
    workplace("GoneCo", "555-0201").save().unwrap();
    let bob = User::get(&UserKey::new("gone-bob".into())).unwrap();
    assert_eq!(bob.workplace.get().unwrap().phone, "555-0201");

    // A missing mother (a self-reference) fails the same way.
    user("orphan", "GoneCo", Some("nobody")).save().unwrap();
    let err = User::get(&UserKey::new("orphan".into())).unwrap_err();
    assert_eq!(
        (err.model, err.referenced_by),
        ("models.user", Some("models.user"))
    );
    assert!(err.key.contains("nobody"));
}

#[test]
fn self_references_and_cycles() {
    workplace("FamilyCo", "555-0300").save().unwrap();
    user("grandma", "FamilyCo", None).save().unwrap();
    user("mum", "FamilyCo", Some("grandma")).save().unwrap();
    user("kid", "FamilyCo", Some("mum")).save().unwrap();

    let kid = User::get(&UserKey::new("kid".into())).unwrap();
    let mum = kid.mother.as_ref().unwrap().loaded().expect("loaded");
    assert_eq!(mum.username, "mum");
    let grandma = mum.mother.as_ref().unwrap().loaded().expect("loaded");
    assert_eq!(grandma.username, "grandma");
    assert!(grandma.mother.is_none());
    assert_eq!(grandma.workplace.loaded().unwrap().phone, "555-0300");

    // Her own mother: the reference that closes the cycle loads when read.
    user("ouroboros", "FamilyCo", Some("ouroboros"))
        .save()
        .unwrap();
    let o = User::get(&UserKey::new("ouroboros".into())).unwrap();
    let again = o.mother.as_ref().unwrap();
    assert!(again.loaded().is_none(), "the cycle is not loaded eagerly");
    assert_eq!(again.get().unwrap().username, "ouroboros");

    // A two-step cycle.
    user("ann", "FamilyCo", Some("eve")).save().unwrap();
    user("eve", "FamilyCo", Some("ann")).save().unwrap();
    let ann = User::get(&UserKey::new("ann".into())).unwrap();
    let eve = ann.mother.as_ref().unwrap().loaded().expect("eve loads");
    assert_eq!(eve.username, "eve");
    let back = eve.mother.as_ref().unwrap();
    assert!(back.loaded().is_none());
    assert_eq!(back.get().unwrap().username, "ann");
}

// ---- from_miss ----

static PROFILE_RUNS: Runs = Runs::new();

#[derive(CacheModel, Serialize, Deserialize, Debug, PartialEq)]
#[cache(name = "models.profile")]
struct Profile {
    #[cache(key)]
    user_id: u64,
    display_name: String,
}

impl FromMiss for Profile {
    fn from_miss(key: &ProfileKey) -> Option<Self> {
        PROFILE_RUNS.hit();
        (key.user_id < 1000).then(|| Profile {
            // The key fields are set from the key asked for.
            user_id: 0,
            display_name: format!("user {}", key.user_id),
        })
    }
}

#[test]
fn from_miss_builds_saves_and_returns() {
    let p = Profile::get(&ProfileKey::new(7)).unwrap();
    assert_eq!(
        p,
        Profile {
            user_id: 7,
            display_name: "user 7".into()
        }
    );
    assert_eq!(PROFILE_RUNS.get(), 1);
    assert_eq!(Profile::get(&ProfileKey::new(7)).unwrap().user_id, 7);
    assert_eq!(PROFILE_RUNS.get(), 1, "saved: the second get is a hit");

    // `None`: missing, and nothing stored (asked again next time).
    assert!(Profile::get(&ProfileKey::new(5000)).is_err());
    assert!(Profile::get(&ProfileKey::new(5000)).is_err());
    assert_eq!(PROFILE_RUNS.get(), 3);

    // A saved object wins over building one.
    Profile {
        user_id: 8,
        display_name: "Eight".into(),
    }
    .save()
    .unwrap();
    assert_eq!(
        Profile::get(&ProfileKey::new(8)).unwrap().display_name,
        "Eight"
    );
    assert_eq!(PROFILE_RUNS.get(), 3);
}

// ---- Trackable-aware ----

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "models.author")]
struct Author {
    id: u64,
    name: String,
}

static AUTHOR_NAMES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

#[tracks]
fn load_author(id: u64) -> Author {
    let names = AUTHOR_NAMES.lock().unwrap();
    Author {
        id,
        name: names
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| "?".into()),
    }
}

static CARD_RUNS: Runs = Runs::new();

#[derive(CacheModel, Serialize, Deserialize, Debug)]
#[cache(name = "models.author_card", forever)]
struct AuthorCard {
    #[cache(key)]
    author_id: u64,
    headline: String,
}

impl FromMiss for AuthorCard {
    fn from_miss(key: &AuthorCardKey) -> Option<Self> {
        CARD_RUNS.hit();
        let author = load_author(key.author_id);
        Some(AuthorCard {
            author_id: key.author_id,
            headline: format!("By {}", author.name),
        })
    }
}

#[test]
fn a_model_built_from_tracked_reads_is_invalidated_with_them() {
    *AUTHOR_NAMES.lock().unwrap() = vec!["Ada".into(), "Grace".into()];
    let key = AuthorCardKey::new(1);
    assert_eq!(AuthorCard::get(&key).unwrap().headline, "By Grace");
    assert_eq!(AuthorCard::get(&key).unwrap().headline, "By Grace");
    assert_eq!(CARD_RUNS.get(), 1);

    AUTHOR_NAMES.lock().unwrap()[1] = "Grace H.".into();
    invalidate(&load_author(1));
    assert_eq!(AuthorCard::get(&key).unwrap().headline, "By Grace H.");
    assert_eq!(CARD_RUNS.get(), 2);

    // Another author's write leaves it alone.
    invalidate(&load_author(0));
    AuthorCard::get(&key).unwrap();
    assert_eq!(CARD_RUNS.get(), 2);
}

static BADGE_RUNS: Runs = Runs::new();

/// A page computed from a user (and, through the reference, its workplace).
#[cached(forever)]
fn badge(username: String) -> String {
    BADGE_RUNS.hit();
    match User::get(&UserKey::new(username)) {
        Ok(u) => format!("{} at {}", u.email, u.workplace.get().unwrap().phone),
        Err(m) => format!("({m})"),
    }
}

#[test]
fn computations_that_read_a_model_are_dropped_when_it_is_saved() {
    // Read while missing: saving it later must refresh the page.
    assert!(badge("badge-amy".into()).starts_with("(no `models.user`"));
    assert_eq!(BADGE_RUNS.get(), 1);
    workplace("BadgeCo", "555-0400").save().unwrap();
    user("badge-amy", "BadgeCo", None).save().unwrap();
    assert_eq!(
        badge("badge-amy".into()),
        "badge-amy@example.com at 555-0400"
    );
    assert_eq!(BADGE_RUNS.get(), 2);
    assert_eq!(
        badge("badge-amy".into()),
        "badge-amy@example.com at 555-0400"
    );
    assert_eq!(BADGE_RUNS.get(), 2, "a hit");

    // The user changes.
    let mut amy = user("badge-amy", "BadgeCo", None);
    amy.email = "amy@new.example".into();
    amy.save().unwrap();
    assert_eq!(badge("badge-amy".into()), "amy@new.example at 555-0400");
    assert_eq!(BADGE_RUNS.get(), 3);

    // The referenced workplace changes.
    workplace("BadgeCo", "555-0499").save().unwrap();
    assert_eq!(badge("badge-amy".into()), "amy@new.example at 555-0499");
    assert_eq!(BADGE_RUNS.get(), 4);

    // An unrelated save does not touch it.
    workplace("OtherCo", "555-0000").save().unwrap();
    badge("badge-amy".into());
    assert_eq!(BADGE_RUNS.get(), 4);
}

// ---- keys ----

#[derive(CacheModel, Serialize, Deserialize, Debug, PartialEq)]
#[cache(name = "models.team")]
struct Team {
    #[cache(key)]
    name: String,
    city: String,
}

#[derive(CacheModel, Serialize, Deserialize, Debug, PartialEq)]
#[cache(name = "models.shared-name")]
struct ById {
    #[cache(key)]
    id: u32,
    label: String,
}

// The same stable name, a key of another type: `42` and `"42"` stay apart.
#[derive(CacheModel, Serialize, Deserialize, Debug, PartialEq)]
#[cache(name = "models.shared-name")]
struct ByText {
    #[cache(key)]
    id: String,
    label: String,
}

#[derive(CacheModel, Serialize, Deserialize, Debug, PartialEq)]
#[cache(name = "models.membership")]
struct Membership {
    #[cache(key)]
    org: String,
    role: String,
    #[cache(key)]
    user: u32,
}

static TEXT_RUNS: Runs = Runs::new();

#[cached(forever)]
fn text_label(id: String) -> String {
    TEXT_RUNS.hit();
    ByText::get(&ByTextKey::new(id)).map_or_else(|m| m.to_string(), |t| t.label)
}

#[test]
fn keys_never_collide_across_types() {
    // Equal key values in two models.
    Workplace {
        name: "Rovers".into(),
        phone: "1".into(),
        employees: 1,
    }
    .save()
    .unwrap();
    Team {
        name: "Rovers".into(),
        city: "Leeds".into(),
    }
    .save()
    .unwrap();
    assert_eq!(
        Team::get(&TeamKey::new("Rovers".into())).unwrap().city,
        "Leeds"
    );
    assert_eq!(
        Workplace::get(&WorkplaceKey::new("Rovers".into()))
            .unwrap()
            .phone,
        "1"
    );
    Team::delete(&TeamKey::new("Rovers".into()));
    assert!(Workplace::get(&WorkplaceKey::new("Rovers".into())).is_ok());

    // 42 and "42" are different keys, even under one name.
    assert_ne!(
        ById::dep(&ByIdKey::new(42)),
        ByText::dep(&ByTextKey::new("42".into()))
    );
    ByText {
        id: "42".into(),
        label: "text".into(),
    }
    .save()
    .unwrap();
    assert_eq!(text_label("42".into()), "text");
    ById {
        id: 42,
        label: "number".into(),
    }
    .save()
    .unwrap();
    assert_eq!(text_label("42".into()), "text");
    assert_eq!(
        TEXT_RUNS.get(),
        1,
        "saving the number 42 left the text 42 alone"
    );
    assert_eq!(ById::get(&ByIdKey::new(42)).unwrap().label, "number");
}

#[test]
fn a_single_field_key_is_named_like_any_dependency() {
    // What the admin page and `ultracache invalidate` parse.
    assert_eq!(
        ultracache::Dep::parse("models.user:bob"),
        Some(User::dep(&UserKey::new("bob".into())))
    );
    assert_eq!(
        ultracache::Dep::parse("models.profile:7"),
        Some(Profile::dep(&ProfileKey::new(7)))
    );
    assert_eq!(
        Profile::dep(&ProfileKey::new(7)).to_string(),
        "models.profile:7"
    );
}

#[test]
fn keys_of_several_fields_in_declaration_order() {
    let m = Membership {
        org: "acme".into(),
        role: "admin".into(),
        user: 7,
    };
    m.save().unwrap();
    let key = MembershipKey::new("acme".into(), 7);
    assert_eq!(m.key(), key);
    assert_eq!(Membership::get(&key).unwrap(), m);
    assert!(Membership::get(&MembershipKey::new("acme".into(), 8)).is_err());
    assert!(Membership::get(&MembershipKey::new("other".into(), 7)).is_err());
}

// ---- concurrency: no stale write-back ----

/// Holds a builder once: the test learns it started, and says when it may
/// go on.
struct Gate(std::sync::Mutex<Option<(Arc<Barrier>, mpsc::Receiver<()>)>>);

impl Gate {
    const fn new() -> Self {
        Gate(std::sync::Mutex::new(None))
    }

    /// Arms the gate: returns the barrier the builder meets on arrival and
    /// the sender that lets it go.
    fn arm(&self) -> (Arc<Barrier>, mpsc::Sender<()>) {
        let started = Arc::new(Barrier::new(2));
        let (release, gate) = mpsc::channel();
        *self.0.lock().unwrap() = Some((Arc::clone(&started), gate));
        (started, release)
    }

    /// In the builder: waits at the gate if it is armed (once).
    fn pass(&self) {
        let armed = self.0.lock().unwrap().take();
        if let Some((started, release)) = armed {
            started.wait();
            release.recv().unwrap();
        }
    }
}

static RACE_GATE: Gate = Gate::new();

#[derive(CacheModel, Serialize, Deserialize, Debug, PartialEq)]
#[cache(name = "models.race")]
struct Racer {
    #[cache(key)]
    id: u32,
    version: u32,
}

impl FromMiss for Racer {
    fn from_miss(key: &RacerKey) -> Option<Self> {
        RACE_GATE.pass();
        Some(Racer {
            id: key.id,
            version: 1,
        })
    }
}

#[test]
fn a_save_during_from_miss_is_not_overwritten_by_it() {
    let (started, release) = RACE_GATE.arm();

    let reader = thread::spawn(|| Racer::get(&RacerKey::new(1)).unwrap());
    started.wait(); // from_miss is running
    Racer { id: 1, version: 2 }.save().unwrap();
    release.send(()).unwrap();
    let seen = reader.join().unwrap();
    assert_eq!(seen.version, 1, "the reader gets what it built");
    assert_eq!(
        Racer::get(&RacerKey::new(1)).unwrap().version,
        2,
        "but the save is what stays"
    );
}

// ---- errors ----

#[derive(CacheModel, Serialize, Deserialize, Debug)]
#[cache(name = "models.nowhere", store = "no-such-store")]
struct Nowhere {
    #[cache(key)]
    id: u32,
}

#[test]
fn saving_to_a_store_that_is_not_configured_is_an_error() {
    let err = Nowhere { id: 1 }.save().unwrap_err();
    assert_eq!(
        err,
        SaveError::NoStore {
            model: "models.nowhere"
        }
    );
    assert!(matches!(
        Nowhere::get(&NowhereKey::new(1)),
        Err(Missing { .. })
    ));
}

#[derive(CacheModel, Serialize, Deserialize, Debug)]
#[cache(name = "models.bad")]
struct Unencodable {
    #[cache(key)]
    id: u32,
    #[serde(serialize_with = "refuse")]
    payload: u32,
}

fn refuse<S: serde::Serializer>(_: &u32, _: S) -> Result<S::Ok, S::Error> {
    Err(serde::ser::Error::custom("this payload cannot be stored"))
}

#[test]
fn a_value_that_does_not_serialize_is_an_error_and_stores_nothing() {
    let err = Unencodable { id: 1, payload: 2 }.save().unwrap_err();
    match err {
        SaveError::Encode { model, message } => {
            assert_eq!(model, "models.bad");
            assert!(!message.is_empty());
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(Unencodable::get(&UnencodableKey::new(1)).is_err());
}

// ---- async ----

static QUOTE_RUNS: Runs = Runs::new();
static QUOTE_GATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(CacheModel, Serialize, Deserialize, Debug)]
#[cache(name = "models.quote")]
struct Quote {
    #[cache(key)]
    symbol: String,
    headline: String,
}

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "models.analyst")]
struct Analyst {
    id: u64,
    name: String,
}

static ANALYST_NAME: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

#[tracks]
fn load_analyst(id: u64) -> Analyst {
    Analyst {
        id,
        name: ANALYST_NAME.lock().unwrap().clone(),
    }
}

impl ultracache::AsyncFromMiss for Quote {
    async fn from_miss(key: &QuoteKey) -> Option<Self> {
        QUOTE_RUNS.hit();
        // Held by the test while it lines callers up behind this one.
        let _gate = QUOTE_GATE.lock().await;
        tokio::task::yield_now().await;
        let analyst = load_analyst(1); // a tracked read after an await
        (key.symbol != "NONE").then(|| Quote {
            symbol: String::new(),
            headline: format!("{} by {}", key.symbol, analyst.name),
        })
    }
}

fn coalesced(name: &str) -> u64 {
    ultracache::stats().cache(name).map_or(0, |c| c.coalesced)
}

/// Four tasks asking for the quote `key` while the build is held at
/// `QUOTE_GATE`: returns once three of them wait for the fourth's build.
async fn four_quote_callers(
    key: &QuoteKey,
) -> Vec<tokio::task::JoinHandle<Result<Quote, ultracache::Missing>>> {
    let waited = coalesced("models.quote");
    let callers = (0..4)
        .map(|_| {
            let key = key.clone();
            tokio::spawn(async move { Quote::get_async(&key).await })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while coalesced("models.quote") < waited + 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "callers never lined up"
        );
        tokio::task::yield_now().await;
    }
    callers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_async_builds_once_with_async_from_miss_and_tracks_its_reads() {
    *ANALYST_NAME.lock().unwrap() = "Lin".into();
    let gate = QUOTE_GATE.lock().await;
    let key = QuoteKey::new("ACME".into());
    // One caller builds; the other three wait for it.
    let callers = four_quote_callers(&key).await;
    drop(gate);
    for c in callers {
        assert_eq!(c.await.unwrap().unwrap().headline, "ACME by Lin");
    }
    assert_eq!(QUOTE_RUNS.get(), 1);
    assert_eq!(Quote::get_async(&key).await.unwrap().symbol, "ACME");
    assert_eq!(QUOTE_RUNS.get(), 1);

    // The analyst it read after an await changes: the quote is built again.
    *ANALYST_NAME.lock().unwrap() = "Lin Y.".into();
    invalidate(&load_analyst(1));
    assert_eq!(
        Quote::get_async(&key).await.unwrap().headline,
        "ACME by Lin Y."
    );
    assert_eq!(QUOTE_RUNS.get(), 2);

    // The synchronous `get` does not call an async `from_miss`.
    assert!(Quote::get(&QuoteKey::new("SYNC".into())).is_err());
    assert_eq!(QUOTE_RUNS.get(), 2);

    // Concurrent misses of a key that does not exist: one build, whose
    // "nothing" every caller shares.
    let gate = QUOTE_GATE.lock().await;
    let callers = four_quote_callers(&QuoteKey::new("NONE".into())).await;
    drop(gate);
    for c in callers {
        let missing = c.await.unwrap().unwrap_err();
        assert!(missing.key.contains("NONE"), "{missing}");
    }
    assert_eq!(QUOTE_RUNS.get(), 3, "built once for four callers");
}

static ASYNC_BADGE_RUNS: Runs = Runs::new();

#[cached(forever)]
async fn async_badge(username: String) -> String {
    ASYNC_BADGE_RUNS.hit();
    let user = User::get_async(&UserKey::new(username)).await.unwrap();
    let workplace = user.workplace.loaded().expect("loaded by get_async");
    let mother = user.mother.as_ref().and_then(|m| m.loaded());
    format!(
        "{} at {}, mother {}",
        user.email,
        workplace.phone,
        mother.map_or("-", |m| m.username.as_str())
    )
}

#[tokio::test]
async fn get_async_loads_references_and_a_sync_from_miss() {
    workplace("AsyncCo", "555-0500").save().unwrap();
    user("async-mum", "AsyncCo", None).save().unwrap();
    user("async-kid", "AsyncCo", Some("async-mum"))
        .save()
        .unwrap();
    assert_eq!(
        async_badge("async-kid".into()).await,
        "async-kid@example.com at 555-0500, mother async-mum"
    );
    // A cycle through `get_async` stops too.
    user("async-loop", "AsyncCo", Some("async-loop"))
        .save()
        .unwrap();
    let looped = User::get_async(&UserKey::new("async-loop".into()))
        .await
        .unwrap();
    let mother = looped.mother.as_ref().unwrap();
    assert!(mother.loaded().is_none());
    assert_eq!(mother.get_async().await.unwrap().username, "async-loop");

    // Saving the mother, then the workplace, recomputes the badge each time.
    user("async-mum", "AsyncCo", None).save().unwrap();
    async_badge("async-kid".into()).await;
    assert_eq!(
        ASYNC_BADGE_RUNS.get(),
        2,
        "the mother was saved: recomputed"
    );
    workplace("AsyncCo", "555-0599").save().unwrap();
    assert!(async_badge("async-kid".into()).await.contains("555-0599"));
    assert_eq!(ASYNC_BADGE_RUNS.get(), 3);

    // A model with a synchronous `FromMiss` works with `get_async` too.
    let g = Greeting::get_async(&GreetingKey::new(77)).await.unwrap();
    assert_eq!(g.text, "hello 77");
}

#[derive(CacheModel, Serialize, Deserialize, Debug)]
#[cache(name = "models.greeting")]
struct Greeting {
    #[cache(key)]
    id: u64,
    text: String,
}

impl FromMiss for Greeting {
    fn from_miss(key: &GreetingKey) -> Option<Self> {
        Some(Greeting {
            id: key.id,
            text: format!("hello {}", key.id),
        })
    }
}

// ---- builders with context ----

/// Stands for a database handle a builder borrows.
struct Db {
    rows: Vec<(u64, &'static str)>,
    queries: Runs,
}

impl Db {
    fn name_of(&self, id: u64) -> Option<String> {
        self.queries.hit();
        self.rows
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, n)| (*n).to_owned())
    }
}

#[derive(CacheModel, Serialize, Deserialize, Debug, PartialEq)]
#[cache(name = "models.member")]
struct Member {
    #[cache(key)]
    id: u64,
    name: String,
}

#[tokio::test]
async fn get_or_build_borrows_its_context() {
    let db = Db {
        rows: vec![(1, "Ada"), (2, "Lin")],
        queries: Runs::new(),
    };
    let build = |id: u64| {
        let db = &db;
        move || {
            Some(Member {
                id: 0, // set from the key
                name: db.name_of(id)?,
            })
        }
    };
    let ada = Member::get_or_build(&MemberKey::new(1), build(1)).unwrap();
    assert_eq!(
        ada,
        Member {
            id: 1,
            name: "Ada".into()
        }
    );
    assert_eq!(
        Member::get_or_build(&MemberKey::new(1), build(1)).unwrap(),
        ada
    );
    assert_eq!(db.queries.get(), 1, "stored: built once");
    assert!(Member::get_or_build(&MemberKey::new(9), build(9)).is_err());
    assert!(Member::get(&MemberKey::new(9)).is_err(), "nothing stored");

    let lin = Member::get_or_build_async(&MemberKey::new(2), async {
        tokio::task::yield_now().await;
        Some(Member {
            id: 2,
            name: db.name_of(2)?,
        })
    })
    .await
    .unwrap();
    assert_eq!(lin.name, "Lin");
    assert_eq!(Member::get(&MemberKey::new(2)).unwrap(), lin);
    assert_eq!(db.queries.get(), 3);

    // A builder takes the place of the model's `FromMiss`.
    let p = Profile::get_or_build(&ProfileKey::new(4242), || {
        Some(Profile {
            user_id: 4242,
            display_name: "built here".into(),
        })
    })
    .unwrap();
    assert_eq!(p.display_name, "built here");
}

static CITY_PAGE_RUNS: Runs = Runs::new();

#[cached(forever)]
async fn city_page(name: String) -> String {
    CITY_PAGE_RUNS.hit();
    match Team::get_async(&TeamKey::new(name)).await {
        Ok(t) => t.city,
        Err(_) => "-".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_async_and_delete_async_reach_what_read_the_model() {
    Team {
        name: "Wanderers".into(),
        city: "Bolton".into(),
    }
    .save_async()
    .await
    .unwrap();
    assert_eq!(city_page("Wanderers".into()).await, "Bolton");
    assert_eq!(city_page("Wanderers".into()).await, "Bolton");
    assert_eq!(CITY_PAGE_RUNS.get(), 1);

    Team {
        name: "Wanderers".into(),
        city: "Horwich".into(),
    }
    .save_async()
    .await
    .unwrap();
    assert_eq!(city_page("Wanderers".into()).await, "Horwich");
    assert_eq!(CITY_PAGE_RUNS.get(), 2);

    Team::delete_async(&TeamKey::new("Wanderers".into())).await;
    assert_eq!(city_page("Wanderers".into()).await, "-");
    assert_eq!(CITY_PAGE_RUNS.get(), 3);
    assert!(Team::get(&TeamKey::new("Wanderers".into())).is_err());
}

// ---- many paths to one object ----

#[derive(CacheModel, Serialize, Deserialize, Debug)]
#[cache(name = "models.node")]
struct Node {
    #[cache(key)]
    id: u32,
    links: Vec<Reference<Node>>,
}

fn node_hits() -> u64 {
    ultracache::stats()
        .cache("models.node")
        .map_or(0, |c| c.hits)
}

#[test]
fn an_object_reached_by_many_paths_loads_once_per_get() {
    // 12 nodes, each linked to every other: a cycle-free walk would visit
    // billions of paths; each node must load once.
    const N: u32 = 12;
    for id in 0..N {
        Node {
            id,
            links: (0..N)
                .filter(|&o| o != id)
                .map(|o| Reference::to(NodeKey::new(o)))
                .collect(),
        }
        .save()
        .unwrap();
    }
    let before = node_hits();
    let root = Node::get(&NodeKey::new(0)).unwrap();
    assert_eq!(
        node_hits() - before,
        u64::from(N),
        "each node looked up once"
    );
    assert!(root.links.iter().all(|l| l.loaded().is_some()));
    // The same object, wherever it is reached from (a link back up the path
    // it was reached by closes a cycle: that one loads when read).
    let one = root.links[0].loaded().unwrap();
    let two = root.links[1].loaded().unwrap();
    let two_via_one = one.links.iter().find(|l| l.key().id == 2).unwrap();
    assert!(std::ptr::eq(two, two_via_one.loaded().unwrap()));
    let one_via_two = two.links.iter().find(|l| l.key().id == 1).unwrap();
    assert!(one_via_two.loaded().is_none());
    assert_eq!(one_via_two.get().unwrap().id, 1);
}

// ---- bytes that do not read back ----

#[derive(CacheModel, Serialize, Deserialize, Debug)]
#[cache(name = "models.sparse")]
struct Sparse {
    #[cache(key)]
    id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

#[test]
fn a_value_postcard_cannot_read_back_is_refused_at_save() {
    let err = Sparse { id: 1, note: None }.save().unwrap_err();
    let SaveError::Encode { message, .. } = err else {
        panic!("unexpected {err:?}");
    };
    assert!(message.contains("do not read back"), "{message}");
    assert!(Sparse::get(&SparseKey::new(1)).is_err());
}

/// The rules a stored value must meet tighten after it was stored (a
/// validating `Deserialize` changed, say).
static STRICT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static RULED_RUNS: Runs = Runs::new();

fn at_least_ten_when_strict<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u32::deserialize(d)?;
    if STRICT.load(std::sync::atomic::Ordering::SeqCst) && n < 10 {
        return Err(serde::de::Error::custom("too small"));
    }
    Ok(n)
}

#[derive(CacheModel, Serialize, Deserialize, Debug)]
#[cache(name = "models.ruled")]
struct Ruled {
    #[cache(key)]
    id: u32,
    #[serde(deserialize_with = "at_least_ten_when_strict")]
    size: u32,
}

impl FromMiss for Ruled {
    fn from_miss(key: &RuledKey) -> Option<Self> {
        RULED_RUNS.hit();
        Some(Ruled {
            id: key.id,
            size: 50,
        })
    }
}

#[test]
fn a_stored_value_that_no_longer_reads_is_dropped_and_built_again() {
    Ruled { id: 1, size: 3 }.save().unwrap();
    assert_eq!(Ruled::get(&RuledKey::new(1)).unwrap().size, 3);
    STRICT.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        Ruled::get(&RuledKey::new(1)).unwrap().size,
        50,
        "built again"
    );
    assert_eq!(RULED_RUNS.get(), 1);
    assert_eq!(Ruled::get(&RuledKey::new(1)).unwrap().size, 50);
    assert_eq!(RULED_RUNS.get(), 1, "and stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builder_that_reads_its_own_key_does_not_wait_for_itself() {
    // Inside the build of key 70, a `get` of key 70 would wait for the very
    // build it is part of: it finds nothing instead, sync or async.
    let key = MemberKey::new(70);
    let m = Member::get_or_build_async(&key, async {
        assert!(Member::get(&MemberKey::new(70)).is_err());
        assert!(Member::get_async(&MemberKey::new(70)).await.is_err());
        Some(Member {
            id: 70,
            name: "Seventy".into(),
        })
    })
    .await
    .unwrap();
    assert_eq!(m.name, "Seventy");
    assert_eq!(Member::get(&key).unwrap().name, "Seventy");
}

// ---- expiry ----

#[derive(CacheModel, Serialize, Deserialize, Debug)]
#[cache(name = "models.ephemeral", timeout = std::time::Duration::from_millis(150))]
struct Ephemeral {
    #[cache(key)]
    id: u32,
}

#[test]
fn a_model_timeout_expires_its_objects() {
    Ephemeral { id: 1 }.save().unwrap();
    assert!(Ephemeral::get(&EphemeralKey::new(1)).is_ok());
    // Past the deadline on the monotonic clock, the entry is gone.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(Ephemeral::get(&EphemeralKey::new(1)).is_err());
}

// ---- a shared "nothing" carries what it was built from ----

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "models.ghost_source")]
struct GhostSource {
    id: u32,
}

#[tracks]
fn find_ghost_source(_id: u32) -> Option<GhostSource> {
    None
}

static GHOST_GATE: Gate = Gate::new();

#[derive(CacheModel, Serialize, Deserialize, Debug)]
#[cache(name = "models.ghost")]
struct Ghost {
    #[cache(key)]
    id: u32,
}

impl FromMiss for Ghost {
    fn from_miss(key: &GhostKey) -> Option<Self> {
        GHOST_GATE.pass();
        // Found nothing: a lookup that records the kind it searched.
        find_ghost_source(key.id).map(|s| Ghost { id: s.id })
    }
}

static GHOST_PAGE_RUNS: Runs = Runs::new();

#[cached(forever)]
fn ghost_page(viewer: u32) -> String {
    GHOST_PAGE_RUNS.hit();
    let found = Ghost::get(&GhostKey::new(1)).is_ok();
    format!("viewer {viewer}: {found}")
}

#[test]
fn callers_sharing_a_build_that_found_nothing_depend_on_what_it_read() {
    let (started, release) = GHOST_GATE.arm();
    let leader = thread::spawn(|| ghost_page(1));
    started.wait(); // the build runs, inside viewer 1's page
    let waiter = thread::spawn(|| ghost_page(2));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while coalesced("models.ghost") < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "viewer 2 never waited"
        );
        thread::yield_now();
    }
    release.send(()).unwrap();
    assert_eq!(leader.join().unwrap(), "viewer 1: false");
    assert_eq!(waiter.join().unwrap(), "viewer 2: false");
    assert_eq!(GHOST_PAGE_RUNS.get(), 2);

    // A ghost source is created: both pages said "nothing", both go.
    ultracache::invalidate_kind::<GhostSource>();
    ghost_page(1);
    ghost_page(2);
    assert_eq!(GHOST_PAGE_RUNS.get(), 4);
}

// ---- the last to invalidate wins ----

#[derive(CacheModel, Serialize, Deserialize, Debug, PartialEq)]
#[cache(name = "models.ordered")]
struct Ordered {
    #[cache(key)]
    id: u32,
    v: u32,
}

static WATCHING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A page showing an `Ordered`; when a save drops it, a delete of the same
/// object lands — after the save invalidated, before it writes.
static ORDERED_PAGE: ultracache::Cache<u32, u32> = ultracache::Cache::new("models.ordered-page")
    .on_invalidated(|id, _| {
        if WATCHING.swap(false, std::sync::atomic::Ordering::SeqCst) {
            Ordered::delete(&OrderedKey::new(*id));
        }
    });

#[test]
fn a_delete_between_a_saves_invalidation_and_its_write_wins() {
    Ordered { id: 1, v: 1 }.save().unwrap();
    let page = ORDERED_PAGE.get_or_compute(1, || Ordered::get(&OrderedKey::new(1)).unwrap().v);
    assert_eq!(page, 1);
    WATCHING.store(true, std::sync::atomic::Ordering::SeqCst);
    Ordered { id: 1, v: 2 }.save().unwrap();
    assert!(
        !WATCHING.load(std::sync::atomic::Ordering::SeqCst),
        "the delete ran"
    );
    // The delete invalidated last: the object stays deleted.
    assert!(
        Ordered::get(&OrderedKey::new(1)).is_err(),
        "the delete was undone"
    );

    // Without a delete in between, the save stands.
    Ordered { id: 1, v: 3 }.save().unwrap();
    assert_eq!(Ordered::get(&OrderedKey::new(1)).unwrap().v, 3);
}

#[test]
fn concurrent_saves_and_deletes_end_on_the_last_one() {
    // Whatever the interleaving, after they all return a read shows either
    // nothing or a value some save wrote, and a final save stands.
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            thread::spawn(move || {
                for i in 0..200u32 {
                    if (i + t) % 3 == 0 {
                        Ordered::delete(&OrderedKey::new(2));
                    } else {
                        Ordered {
                            id: 2,
                            v: t * 1000 + i,
                        }
                        .save()
                        .unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    if let Ok(o) = Ordered::get(&OrderedKey::new(2)) {
        assert!(o.v % 1000 < 200);
    }
    Ordered { id: 2, v: 7 }.save().unwrap();
    assert_eq!(Ordered::get(&OrderedKey::new(2)).unwrap().v, 7);
}

// ---- deep chains of references ----

#[derive(CacheModel, Serialize, Deserialize, Debug)]
#[cache(name = "models.ancestor", forever)]
struct Ancestor {
    #[cache(key)]
    id: u32,
    mother: Reference<Ancestor>,
    father: Reference<Ancestor>,
}

#[test]
fn a_chain_of_references_thousands_deep_drops_without_overflowing_the_stack() {
    // Two people, each the other's mother and father: walking the chain
    // loads a new object at every step.
    for (id, other) in [(1, 2), (2, 1)] {
        Ancestor {
            id,
            mother: Reference::to(AncestorKey::new(other)),
            father: Reference::to(AncestorKey::new(other)),
        }
        .save()
        .unwrap();
    }
    // A small stack, as a worker thread may have.
    let walker = thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let root = Ancestor::get(&AncestorKey::new(1)).unwrap();
            let mut at = &root;
            for step in 0..20_000 {
                at = if step % 2 == 0 {
                    at.mother.get().unwrap()
                } else {
                    at.father.get().unwrap()
                };
            }
            let id = at.id;
            drop(root);
            id
        })
        .unwrap();
    assert_eq!(walker.join().unwrap(), 1);
}
