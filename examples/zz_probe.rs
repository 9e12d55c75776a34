use std::hint::black_box;
use std::time::Instant;
#[ultracache::cached(forever)]
fn uc(k: u64) -> String {
    format!("{k:064}")
}
#[ultracache::cached(timeout = 3600)]
fn uct(k: u64) -> String {
    format!("{k:064}")
}
#[cached::proc_macro::cached]
fn cc(k: u64) -> String {
    format!("{k:064}")
}
fn run(name: &str, threads: usize, f: fn(u64) -> usize) {
    const N: u64 = 3_000_000;
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(move || {
                for i in 0..N {
                    black_box(f(black_box(i % 1024)));
                }
            });
        }
    });
    println!(
        "t={threads} {name:<8} {:.1} ns",
        t.elapsed().as_nanos() as f64 / N as f64
    );
}
fn main() {
    for k in 0..1024 {
        uc(k);
        cc(k);
        uct(k);
    }
    for threads in [1, 2] {
        run("uc", threads, |k| uc(k).len());
        run("uc-ttl", threads, |k| uct(k).len());
        run("cached", threads, |k| cc(k).len());
    }
}
