use ultracache::Trackable;

#[derive(Trackable)]
enum Post {
    Draft { id: i64 },
}

fn main() {}
