//! The shared tier's entry codec: what is encoded decodes to the same value
//! and dependencies, under its own key and type only; any bytes read from
//! Redis decode without panicking, and what decodes re-encodes to itself; a
//! truncated entry is a miss.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use ultracache::__private::fuzzing::{entry_decode, entry_encode};
use ultracache::{Dep, Kind};

#[derive(Arbitrary, Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Value {
    title: String,
    ids: Vec<u64>,
    score: Option<i32>,
    body: Vec<u8>,
    tags: Vec<(String, bool)>,
}

/// Another type with the same serialized shape but another name.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Other {
    title: String,
    ids: Vec<u64>,
    score: Option<i32>,
    body: Vec<u8>,
    tags: Vec<(String, bool)>,
}

const KINDS: [Kind; 4] = [
    Kind::new("fuzz.post"),
    Kind::new("fuzz.comment"),
    Kind::new("fuzz.with space"),
    Kind::new("fuzz.with:colon"),
];

#[derive(Arbitrary, Debug)]
struct Input {
    key: Vec<u8>,
    other_key: Vec<u8>,
    deps: Vec<(u8, Option<u64>)>,
    value: Value,
    stored: Vec<u8>,
    cut: usize,
}

fuzz_target!(|input: Input| {
    let deps: Vec<Dep> = input
        .deps
        .iter()
        .map(|(k, id)| {
            let kind = KINDS[usize::from(*k) % KINDS.len()];
            match id {
                Some(id) => Dep::object_key(kind, *id),
                None => Dep::kind(kind),
            }
        })
        .collect();
    let bytes = entry_encode(&input.key, &deps, &input.value).expect("an entry encodes");
    let (value, back) =
        entry_decode::<Value>(&input.key, &bytes).expect("an entry decodes from its own bytes");
    assert_eq!(value, input.value);
    assert_eq!(back, deps);
    if input.other_key != input.key {
        assert!(
            entry_decode::<Value>(&input.other_key, &bytes).is_none(),
            "read under another key"
        );
    }
    assert!(
        entry_decode::<Other>(&input.key, &bytes).is_none(),
        "read as another type"
    );
    let cut = input.cut % bytes.len();
    assert!(
        entry_decode::<Value>(&input.key, &bytes[..cut]).is_none(),
        "a truncated entry decoded"
    );
    // Bytes as Redis may hold them: decoding never panics, and what decodes
    // is an entry that re-encodes to the same reading.
    if let Some((value, deps)) = entry_decode::<Value>(&input.key, &input.stored) {
        let again = entry_encode(&input.key, &deps, &value).expect("re-encodes");
        assert_eq!(
            entry_decode::<Value>(&input.key, &again),
            Some((value, deps))
        );
    }
});
