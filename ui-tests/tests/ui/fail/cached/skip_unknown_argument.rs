use ultracache::cached;

#[cached(timeout = 60, skip(database))]
fn page(db: &str, id: u64) -> String {
    format!("{db}{id}")
}

fn main() {}
