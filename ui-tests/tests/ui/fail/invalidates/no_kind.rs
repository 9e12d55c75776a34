use ultracache::invalidates;

#[invalidates()]
fn save(id: i64) -> i64 {
    id
}

fn main() {}
