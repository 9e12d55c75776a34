use ultracache::Trackable;

#[derive(Trackable)]
struct Post {
    #[trackable(id)]
    id: i64,
    #[trackable(id)]
    slug: String,
}

fn main() {}
