//! Methods cached on chosen fields of `self` (better-cache's `CachedMethod`),
//! and on a form's validated data (`CachedFormMethod`): instances that agree
//! on those fields share entries, whatever else differs; the method's own
//! arguments are part of the key; what the method read is tracked.

mod common;

use common::Runs;
use ultracache::{cached, invalidate, tracks, Trackable};

static GEOCODE_RUNS: Runs = Runs::new();
static DISTANCE_RUNS: Runs = Runs::new();

/// A home: its coordinates depend on the address alone.
struct Home {
    address: String,
    owner: String,
}

impl Home {
    #[cached(key = (self.address))]
    fn geocode(&self) -> (i64, i64) {
        GEOCODE_RUNS.hit();
        let h = self
            .address
            .bytes()
            .fold(0i64, |a, b| a * 31 + i64::from(b))
            % 1000;
        (h, -h)
    }

    /// The method's own argument is part of the key with the field.
    #[cached(key = (self.address, to))]
    fn distance_to(&self, to: &str) -> usize {
        DISTANCE_RUNS.hit();
        self.address.len().abs_diff(to.len())
    }
}

#[test]
fn a_method_is_cached_on_the_fields_it_names() {
    let a = Home {
        address: "1 Main St".into(),
        owner: "Ann".into(),
    };
    let b = Home {
        address: "1 Main St".into(),
        owner: "Bob".into(),
    };
    let c = Home {
        address: "2 Side Rd".into(),
        owner: "Ann".into(),
    };
    assert_ne!(a.owner, b.owner);
    let first = a.geocode();
    assert_eq!(b.geocode(), first, "same address, another owner: shared");
    assert_eq!(GEOCODE_RUNS.get(), 1);
    assert_ne!(c.geocode(), first);
    assert_eq!(GEOCODE_RUNS.get(), 2);

    assert_eq!(a.distance_to("far away"), b.distance_to("far away"));
    assert_eq!(DISTANCE_RUNS.get(), 1);
    a.distance_to("near");
    c.distance_to("far away");
    assert_eq!(
        DISTANCE_RUNS.get(),
        3,
        "another argument or address computes"
    );
}

// ---- a form keyed on its validated data ----

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "methods.person")]
struct Person {
    id: i64,
    email: String,
    friends: Vec<String>,
}

static PEOPLE: std::sync::Mutex<Vec<(String, Vec<String>)>> = std::sync::Mutex::new(Vec::new());

#[tracks]
fn find_person(email: &str) -> Option<Person> {
    let people = PEOPLE.lock().unwrap();
    people
        .iter()
        .enumerate()
        .find(|(_, (e, _))| e == email)
        .map(|(i, (e, f))| Person {
            id: i as i64,
            email: e.clone(),
            friends: f.clone(),
        })
}

/// What the form holds once validated: normalized.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Lookup {
    email: String,
    limit: usize,
}

#[derive(Debug, PartialEq)]
enum FormError {
    Email,
    Limit,
}

/// Raw input, as submitted.
struct FriendsForm {
    email: String,
    limit: String,
}

static FRIENDS_RUNS: Runs = Runs::new();

impl FriendsForm {
    /// Validation: trims and lower-cases the address, parses the limit.
    fn cleaned_data(&self) -> Result<Lookup, FormError> {
        let email = self.email.trim().to_lowercase();
        if !email.contains('@') {
            return Err(FormError::Email);
        }
        let limit = self.limit.trim().parse().map_err(|_| FormError::Limit)?;
        Ok(Lookup { email, limit })
    }

    /// Cached on the validated data: forms that normalize alike share the
    /// entry; an invalid form is an `Err`, never stored.
    #[cached(timeout = 300, key = self.cleaned_data().ok())]
    fn friends(&self) -> Result<Vec<String>, FormError> {
        FRIENDS_RUNS.hit();
        let data = self.cleaned_data()?;
        let mut friends = find_person(&data.email)
            .map(|p| p.friends)
            .unwrap_or_default();
        friends.truncate(data.limit);
        Ok(friends)
    }
}

fn form(email: &str, limit: &str) -> FriendsForm {
    FriendsForm {
        email: email.into(),
        limit: limit.into(),
    }
}

#[test]
fn a_form_method_is_cached_on_validated_data() {
    *PEOPLE.lock().unwrap() = vec![(
        "bob@example.com".into(),
        vec!["ann".into(), "cy".into(), "di".into()],
    )];
    let expected = Ok(vec!["ann".to_owned(), "cy".to_owned()]);
    assert_eq!(form("bob@example.com", "2").friends(), expected);
    assert_eq!(form("  Bob@Example.COM ", " 2").friends(), expected);
    assert_eq!(
        FRIENDS_RUNS.get(),
        1,
        "the same cleaned data: one computation"
    );
    assert_eq!(form("bob@example.com", "3").friends().unwrap().len(), 3);
    assert_eq!(FRIENDS_RUNS.get(), 2);

    // Invalid forms are errors, each time, and store nothing.
    assert_eq!(form("not an address", "2").friends(), Err(FormError::Email));
    assert_eq!(
        form("bob@example.com", "two").friends(),
        Err(FormError::Limit)
    );
    assert_eq!(
        form("bob@example.com", "two").friends(),
        Err(FormError::Limit)
    );
    assert_eq!(FRIENDS_RUNS.get(), 5);

    // What the method read is tracked: Bob's friends change.
    PEOPLE.lock().unwrap()[0].1 = vec!["eve".into()];
    let bob = find_person("bob@example.com").unwrap();
    assert_eq!(bob.email, "bob@example.com");
    invalidate(&bob);
    assert_eq!(
        form("BOB@example.com", "2").friends(),
        Ok(vec!["eve".to_owned()])
    );
    assert_eq!(FRIENDS_RUNS.get(), 6);
}

// ---- a method of a generic impl: one cache, typed by its first call ------

static ECHO_RUNS: Runs = Runs::new();

struct Echo<T>(std::marker::PhantomData<T>);

impl<T> Echo<T>
where
    T: Clone + std::hash::Hash + Eq + Send + Sync + 'static,
{
    /// One function for every `T`: its cache takes the key and value types
    /// of its first call.
    #[cached(forever)]
    fn echo(x: T) -> T {
        ECHO_RUNS.hit();
        x
    }
}

#[test]
fn a_generic_method_caches_its_first_types_and_computes_for_the_others() {
    // The first instantiation makes the cache: cached.
    assert_eq!(Echo::<u64>::echo(7), 7);
    assert_eq!(Echo::<u64>::echo(7), 7);
    assert_eq!(ECHO_RUNS.get(), 1);

    // Another key and value type finds the cache typed for `u64`: computed
    // every time, never read as the wrong type, by owned or borrowed key.
    for _ in 0..3 {
        assert_eq!(Echo::<String>::echo("seven".to_owned()), "seven");
        assert_eq!(Echo::<(u64, u64)>::echo((7, 7)), (7, 7));
        assert_eq!(Echo::<u32>::echo(7), 7);
    }
    assert_eq!(ECHO_RUNS.get(), 1 + 9);

    // The first type still hits, concurrently with the others computing.
    std::thread::scope(|s| {
        for t in 0..4u64 {
            s.spawn(move || {
                for i in 0..1_000u64 {
                    assert_eq!(Echo::<u64>::echo(7), 7);
                    assert_eq!(Echo::<u32>::echo(t as u32), t as u32);
                    assert_eq!(Echo::<String>::echo(i.to_string()), i.to_string());
                }
            });
        }
    });
    assert_eq!(ECHO_RUNS.get(), 1 + 9 + 4 * 2_000);
}
