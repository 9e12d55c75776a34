use ultracache::cached;

#[cached(timeout = 60)]
fn scaled(id: u64, factor: f64) -> u64 {
    (id as f64 * factor) as u64
}

fn main() {}
