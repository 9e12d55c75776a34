use ultracache::invalidates;

struct Post {
    id: i64,
}

#[invalidates(Post)]
fn save(post: Post) -> i64 {
    post.id
}

fn main() {}
