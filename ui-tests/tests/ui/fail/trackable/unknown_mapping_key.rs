use ultracache::Trackable;

// `belongs_to` goes on the field that holds the other model's id.
#[derive(Trackable)]
#[trackable(table = "comments", belongs_to = Post)]
struct Comment {
    id: i64,
    post_id: i64,
}

fn main() {}
