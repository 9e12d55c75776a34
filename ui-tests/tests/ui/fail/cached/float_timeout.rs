use ultracache::cached;

#[cached(timeout = 1.5)]
fn page(id: u64) -> String {
    id.to_string()
}

fn main() {}
