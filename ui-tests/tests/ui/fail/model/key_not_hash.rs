use serde::{Deserialize, Serialize};
use ultracache::CacheModel;

#[derive(CacheModel, Serialize, Deserialize)]
struct Point {
    #[cache(key)]
    x: f64,
    label: String,
}

fn main() {}
