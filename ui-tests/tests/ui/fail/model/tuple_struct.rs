use serde::{Deserialize, Serialize};
use ultracache::CacheModel;

#[derive(CacheModel, Serialize, Deserialize)]
struct Pair(#[cache(key)] u32, String);

fn main() {}
