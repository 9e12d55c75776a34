use ultracache::cached;

#[cached(timout = 60)]
fn page(id: u64) -> String {
    id.to_string()
}

fn main() {}
