use ultracache::tracks;

struct Row {
    id: i64,
}

#[tracks]
fn load(id: i64) -> Row {
    Row { id }
}

fn main() {}
