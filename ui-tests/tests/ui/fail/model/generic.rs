use serde::{Deserialize, Serialize};
use ultracache::CacheModel;

#[derive(CacheModel, Serialize, Deserialize)]
struct Boxed<T> {
    #[cache(key)]
    id: u32,
    value: T,
}

fn main() {}
