use std::hint::black_box;
use ultracache_runtime::Cache;
static C: Cache<u64, String> = Cache::new("c").forever();
fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    for k in 0..1024u64 { C.get_or_compute(k, || format!("{k:064}")); }
    match which.as_str() {
        "get" => for i in 0..200_000u64 { black_box(C.get(&black_box(i % 1024)).map(|s| s.len())); },
        "goc" => for i in 0..200_000u64 { black_box(C.get_or_compute(black_box(i % 1024), || String::new()).len()); },
        "clone" => { let s = format!("{:064}", 1); for _ in 0..200_000u64 { black_box(black_box(&s).clone().len()); } },
        _ => {}
    }
}
