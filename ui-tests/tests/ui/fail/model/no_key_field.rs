use serde::{Deserialize, Serialize};
use ultracache::CacheModel;

#[derive(CacheModel, Serialize, Deserialize)]
struct User {
    username: String,
    email: String,
}

fn main() {}
