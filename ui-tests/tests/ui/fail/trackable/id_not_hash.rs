use ultracache::Trackable;

#[derive(Trackable)]
struct Reading {
    id: f64,
}

fn main() {}
