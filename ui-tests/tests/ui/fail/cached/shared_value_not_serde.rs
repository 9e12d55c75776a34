use ultracache::cached;

#[derive(Clone)]
struct Page {
    html: String,
}

#[cached(shared, timeout = 60)]
fn render(id: u64) -> Page {
    Page { html: id.to_string() }
}

fn main() {}
