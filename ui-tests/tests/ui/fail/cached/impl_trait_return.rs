use ultracache::cached;

#[cached(timeout = 60)]
fn ids(n: u32) -> impl Iterator<Item = u32> {
    0..n
}

fn main() {}
