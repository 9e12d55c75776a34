use serde::{Deserialize, Serialize};
use ultracache::CacheModel;

#[derive(CacheModel, Serialize, Deserialize)]
#[cache(expires = 60)]
struct User {
    #[cache(key)]
    username: String,
}

fn main() {}
