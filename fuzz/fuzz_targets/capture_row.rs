//! Change-capture rows: the key a trigger or the PostgreSQL log writes as
//! text, for a model whose id is an integer (signed or not) or a string,
//! drops that object — whatever the id, also strings made of digits or signs.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ultracache::__private::fuzzing::capture_row_deps;
use ultracache::{Dep, Kind};

const KIND: Kind = Kind::new("fuzz.row");

#[derive(Arbitrary, Debug)]
enum Id {
    Signed(i64),
    Unsigned(u64),
    Text(String),
}

fuzz_target!(|id: Id| {
    let (logged, dep) = match &id {
        Id::Signed(n) => (n.to_string(), Dep::object(KIND, n)),
        Id::Unsigned(n) => (n.to_string(), Dep::object(KIND, n)),
        Id::Text(s) => (s.clone(), Dep::object(KIND, s.as_str())),
    };
    let deps = capture_row_deps(KIND, &logged);
    assert!(deps.contains(&dep), "{id:?} logged as {logged:?}: {deps:?}");
    assert!(deps.len() <= 2, "{deps:?}");
});
