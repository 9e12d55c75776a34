use serde::{Deserialize, Serialize};
use ultracache::CacheModel;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Handle(u32);

#[derive(CacheModel, Serialize, Deserialize)]
struct Session {
    #[cache(key)]
    handle: Handle,
    user: String,
}

fn main() {}
