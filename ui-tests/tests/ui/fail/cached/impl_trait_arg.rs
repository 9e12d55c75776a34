use ultracache::cached;

#[cached(timeout = 60)]
fn total(items: impl Iterator<Item = u32>) -> u32 {
    items.sum()
}

fn main() {}
