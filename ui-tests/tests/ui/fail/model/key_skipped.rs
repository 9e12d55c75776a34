use serde::{Deserialize, Serialize};
use ultracache::CacheModel;

#[derive(CacheModel, Serialize, Deserialize)]
struct Session {
    #[cache(key)]
    #[serde(skip)]
    token: String,
    user: String,
}

fn main() {}
