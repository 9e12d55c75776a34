//! Page keys of requests: two requests the handler sees differently never
//! share a key. The handler's view is what its extractors read: the host
//! (case-insensitive), the percent-decoded path, the decoded query (ordered
//! by name), the values of the headers the layer varies on, and the cookies
//! it varies on as the `cookie` crate reads them. Requests are compared in
//! pairs and against every key seen in the run.

#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use arbitrary::Arbitrary;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, COOKIE, HOST};
use http::request::Parts;
use http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use ultracache::__private::fuzzing::request_key;
use ultracache::http::CacheLayer;

const VARIED: [&str; 2] = ["x-tenant", "accept-language"];
const COOKIES: [&str; 2] = ["a", "b"];

#[derive(Arbitrary, Debug)]
struct Req {
    host: Option<Vec<u8>>,
    authority: Option<String>,
    path: String,
    query: Option<String>,
    headers: Vec<(u8, Vec<u8>)>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    a: Req,
    b: Req,
}

/// What the handler sees.
#[derive(Debug, PartialEq, Clone)]
struct View {
    host: Vec<u8>,
    path: Vec<u8>,
    query: Vec<(String, String)>,
    headers: Vec<Vec<Vec<u8>>>,
    cookies: Vec<Option<String>>,
}

fn parts(req: &Req) -> Option<Parts> {
    let mut target = String::new();
    if let Some(authority) = &req.authority {
        target.push_str("http://");
        target.push_str(authority);
    }
    target.push_str(&req.path);
    if let Some(q) = &req.query {
        target.push('?');
        target.push_str(q);
    }
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(target)
        .body(())
        .ok()?;
    let names: [HeaderName; 4] = [
        HeaderName::from_static(VARIED[0]),
        HeaderName::from_static(VARIED[1]),
        AUTHORIZATION,
        COOKIE,
    ];
    if let Some(host) = &req.host {
        request
            .headers_mut()
            .insert(HOST, HeaderValue::from_bytes(host).ok()?);
    }
    for (n, v) in &req.headers {
        let value = HeaderValue::from_bytes(v).ok()?;
        request
            .headers_mut()
            .append(names[usize::from(*n) % names.len()].clone(), value);
    }
    Some(request.into_parts().0)
}

fn view(parts: &Parts) -> View {
    let host = match parts.uri.authority() {
        Some(a) => a
            .as_str()
            .rsplit('@')
            .next()
            .unwrap_or("")
            .as_bytes()
            .to_vec(),
        None => parts
            .headers
            .get(HOST)
            .map(|h| h.as_bytes().to_vec())
            .unwrap_or_default(),
    };
    let path = percent_encoding::percent_decode_str(parts.uri.path()).collect();
    let mut query: Vec<(String, String)> =
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    query.sort_by(|x, y| x.0.cmp(&y.0));
    let mut headers: Vec<Vec<Vec<u8>>> = VARIED
        .iter()
        .map(|n| {
            parts
                .headers
                .get_all(*n)
                .iter()
                .map(|v| v.as_bytes().to_vec())
                .collect()
        })
        .collect();
    headers.push(
        parts
            .headers
            .get_all(AUTHORIZATION)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect(),
    );
    let cookies = COOKIES
        .iter()
        .map(|name| {
            let mut found = None;
            for header in parts.headers.get_all(COOKIE) {
                let Ok(header) = header.to_str() else {
                    continue;
                };
                for part in header.split(';') {
                    if let Ok(c) = cookie::Cookie::parse_encoded(part) {
                        if c.name() == *name {
                            found = Some(c.value().to_owned());
                        }
                    }
                }
            }
            found
        })
        .collect();
    View {
        host: host.to_ascii_lowercase(),
        path,
        query,
        headers,
        cookies,
    }
}

thread_local! {
    static LAYER: CacheLayer = {
        let mut layer = CacheLayer::new(Duration::from_secs(60)).name("fuzz.keys");
        for name in VARIED {
            layer = layer.vary_header(HeaderName::from_static(name));
        }
        for name in COOKIES {
            layer = layer.vary_cookie(name);
        }
        layer.allow_authorized()
    };
    static SEEN: RefCell<HashMap<String, View>> = RefCell::new(HashMap::new());
}

fn keyed(req: &Req) -> Option<(String, View)> {
    let parts = parts(req)?;
    let key = LAYER.with(|layer| request_key(layer, &parts))?;
    Some((key, view(&parts)))
}

fuzz_target!(|input: Input| {
    let a = keyed(&input.a);
    let b = keyed(&input.b);
    if let (Some((ka, va)), Some((kb, vb))) = (&a, &b) {
        if ka == kb {
            assert_eq!(va, vb, "one key {ka:?} for two views");
        }
    }
    SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        if seen.len() > 20_000 {
            seen.clear();
        }
        for (key, view) in [a, b].into_iter().flatten() {
            if let Some(before) = seen.get(&key) {
                assert_eq!(before, &view, "one key {key:?} for two views");
            } else {
                seen.insert(key, view);
            }
        }
    });
});
