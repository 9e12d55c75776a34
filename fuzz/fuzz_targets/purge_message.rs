//! Purges broadcast between nodes: a purge of a URL a request can carry, or
//! of surrogate keys, reads back as the same purge; any message reads
//! without panicking, and what reads re-encodes to the same purge.

#![no_main]

use arbitrary::Arbitrary;
use http::header::{HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use libfuzzer_sys::fuzz_target;
use ultracache::__private::fuzzing::{purge_decode, purge_encode};
use ultracache::purge::PurgeRequest;

#[derive(Arbitrary, Debug)]
struct Input {
    message: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    keys: Vec<String>,
}

fuzz_target!(|input: Input| {
    if let Some(request) = purge_decode(&input.message) {
        assert_eq!(purge_decode(&purge_encode(&request)), Some(request));
    }
    // A URL purge as the layer makes one: a path a request had, header names
    // and values a request had.
    if let Ok(path) = input.path.parse::<PathAndQuery>() {
        let headers: Vec<(String, String)> = input
            .headers
            .iter()
            .filter_map(|(n, v)| {
                let name = HeaderName::from_bytes(n.as_bytes()).ok()?;
                let value = HeaderValue::from_bytes(v).ok()?;
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect();
        let request = PurgeRequest::Url {
            path: path.as_str().to_owned(),
            headers,
        };
        assert_eq!(
            purge_decode(&purge_encode(&request)).as_ref(),
            Some(&request)
        );
    }
    // Surrogate keys as pages are tagged with: header-value tokens.
    let keys: Vec<String> = input
        .keys
        .into_iter()
        .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic()))
        .collect();
    let request = PurgeRequest::Keys(keys);
    assert_eq!(purge_decode(&purge_encode(&request)), Some(request));
});
