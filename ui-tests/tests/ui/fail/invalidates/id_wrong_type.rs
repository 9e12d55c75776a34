use ultracache::{invalidates, Trackable};

#[derive(Trackable)]
struct Post {
    id: i64,
}

#[invalidates(Post, id = slug)]
fn delete(slug: &str) {
    let _ = slug;
}

fn main() {}
