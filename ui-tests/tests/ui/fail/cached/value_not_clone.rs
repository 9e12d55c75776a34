use ultracache::cached;

struct Page {
    html: String,
}

#[cached(timeout = 60)]
fn render(id: u64) -> Page {
    Page { html: id.to_string() }
}

fn main() {}
