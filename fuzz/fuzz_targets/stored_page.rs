//! Stored pages as the shared tier holds them: any bytes decode without
//! panicking, and a page that decodes is served (GET and HEAD, fresh and
//! stale, with the request's conditional and range headers) without
//! panicking and re-encodes to bytes that decode to the same page. Inputs
//! are raw bytes or pages in the stored layout, so the fuzzer reaches both
//! the decoder's refusals and the serving of odd but well-formed pages.

#![no_main]

use arbitrary::Arbitrary;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use ultracache::__private::fuzzing::stored_page;

/// The stored layout (`StoredWire` in the runtime), without the cache
/// policy.
#[derive(Arbitrary, Serialize, Debug)]
enum Wire {
    Variants(Vec<String>),
    Page(PageWire),
}

#[derive(Arbitrary, Serialize, Debug)]
struct PageWire {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    etag: Option<Vec<u8>>,
    stored_at_ms: u64,
    fresh_until_ms: Option<u64>,
    url: String,
    route: Option<String>,
    varied: Vec<(String, String)>,
    tags: String,
    policy: Option<()>,
}

#[derive(Arbitrary, Debug)]
enum Stored {
    Bytes(Vec<u8>),
    Layout(Wire),
}

#[derive(Arbitrary, Debug)]
struct Input {
    stored: Stored,
    request: Vec<(u8, Vec<u8>)>,
}

const REQUEST_HEADERS: [&str; 7] = [
    "if-none-match",
    "if-modified-since",
    "range",
    "if-range",
    "accept-encoding",
    "cache-control",
    "accept-language",
];

fuzz_target!(|input: Input| {
    let bytes = match input.stored {
        Stored::Bytes(bytes) => bytes,
        Stored::Layout(mut wire) => {
            if let Wire::Page(page) = &mut wire {
                page.policy = None;
            }
            postcard::to_stdvec(&wire).expect("the layout encodes")
        }
    };
    let mut request = HeaderMap::new();
    for (n, v) in &input.request {
        if let Ok(value) = HeaderValue::from_bytes(v) {
            let name = REQUEST_HEADERS[usize::from(*n) % REQUEST_HEADERS.len()];
            request.append(HeaderName::from_static(name), value);
        }
    }
    if let Some(once) = stored_page(&bytes, &request) {
        let twice = stored_page(&once, &request).expect("a re-encoded page decodes");
        assert_eq!(once, twice, "a page changed through the tier");
    }
});
