use ultracache::cached;

#[cached(timeout = 60)]
struct Page {
    html: String,
}

fn main() {}
