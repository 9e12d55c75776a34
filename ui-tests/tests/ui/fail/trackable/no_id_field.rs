use ultracache::Trackable;

#[derive(Trackable)]
struct Post {
    slug: String,
    title: String,
}

fn main() {}
