use ultracache::Trackable;

#[derive(Trackable)]
struct Post {
    id: i64,
}

// A column of which table? The struct names none.
#[derive(Trackable)]
struct Comment {
    id: i64,
    #[trackable(belongs_to = Post)]
    post_id: i64,
}

fn main() {}
