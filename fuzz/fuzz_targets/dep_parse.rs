//! `Dep::parse` (dependencies named in URLs, the admin API, Redis keys and
//! invalidation messages): any text parses without panicking; a dependency
//! written with `Display` parses back to itself; what parses prints as text
//! that parses to the same dependency.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ultracache::{Dep, Kind};

const KINDS: [Kind; 3] = [
    Kind::new("fuzz.post"),
    Kind::new("blog.comment"),
    Kind::new("fuzz::with::path"),
];

#[derive(Arbitrary, Debug)]
enum Id {
    Number(i64),
    Unsigned(u64),
    Text(String),
    Kind,
}

#[derive(Arbitrary, Debug)]
struct Input {
    text: String,
    kind: u8,
    id: Id,
}

fuzz_target!(|input: Input| {
    if let Some(dep) = Dep::parse(&input.text) {
        assert_eq!(Dep::parse(&dep.to_string()), Some(dep), "{:?}", input.text);
    }
    let kind = KINDS[usize::from(input.kind) % KINDS.len()];
    let dep = match &input.id {
        Id::Number(n) => Dep::object(kind, n),
        Id::Unsigned(n) => Dep::object(kind, n),
        Id::Text(s) => Dep::object(kind, s.as_str()),
        Id::Kind => Dep::kind(kind),
    };
    assert_eq!(Dep::parse(&dep.to_string()), Some(dep), "{dep}");
});
