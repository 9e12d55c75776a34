use ultracache::Trackable;

struct Post {
    id: i64,
}

#[derive(Trackable)]
#[trackable(table = "comments")]
struct Comment {
    id: i64,
    #[trackable(belongs_to = Post)]
    post_id: i64,
}

fn main() {}
