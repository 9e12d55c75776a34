use ultracache::Trackable;

#[derive(Trackable)]
#[trackable(table = "")]
struct Post {
    id: i64,
    #[trackable(column = "")]
    author: i64,
}

fn main() {}
