use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;
fn main() {
    const N: u64 = 5_000_000;
    let m: papaya::HashMap<u64, Arc<String>, foldhash::fast::RandomState> =
        papaya::HashMap::builder()
            .hasher(Default::default())
            .build();
    for k in 0..1024 {
        m.pin().insert(k, Arc::new(format!("{k:064}")));
    }
    let t = Instant::now();
    for i in 0..N {
        let g = m.guard();
        black_box(m.get(&black_box(i % 1024), &g).map(|s| s.len()));
    }
    println!(
        "papaya guard+get {:.1} ns",
        t.elapsed().as_nanos() as f64 / N as f64
    );
    let g = m.guard();
    let t = Instant::now();
    for i in 0..N {
        black_box(m.get(&black_box(i % 1024), &g).map(|s| s.len()));
    }
    println!(
        "papaya get (pinned) {:.1} ns",
        t.elapsed().as_nanos() as f64 / N as f64
    );
    drop(g);
    let s: std::sync::RwLock<
        std::collections::HashMap<u64, Arc<String>, foldhash::fast::RandomState>,
    > = Default::default();
    for k in 0..1024 {
        s.write().unwrap().insert(k, Arc::new(format!("{k:064}")));
    }
    let t = Instant::now();
    for i in 0..N {
        black_box(s.read().unwrap().get(&black_box(i % 1024)).map(|s| s.len()));
    }
    println!(
        "rwlock hashmap {:.1} ns",
        t.elapsed().as_nanos() as f64 / N as f64
    );
    let c = std::sync::atomic::AtomicU64::new(0);
    let t = Instant::now();
    for _ in 0..N {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    println!(
        "fetch_add {:.1} ns",
        t.elapsed().as_nanos() as f64 / N as f64
    );
    let v = format!("{:064}", 1);
    let t = Instant::now();
    for _ in 0..N {
        black_box(black_box(&v).clone());
    }
    println!("clone {:.1} ns", t.elapsed().as_nanos() as f64 / N as f64);
}
