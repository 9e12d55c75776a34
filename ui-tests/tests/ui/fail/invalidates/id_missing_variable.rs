use ultracache::{invalidates, Trackable};

#[derive(Trackable)]
struct Post {
    id: i64,
}

#[invalidates(Post, id = post_id)]
fn delete(id: i64) {
    let _ = id;
}

fn main() {}
