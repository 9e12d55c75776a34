use ultracache::cached;

#[cached(timeout = 60, key = user_id)]
fn page(id: u64) -> String {
    id.to_string()
}

fn main() {}
