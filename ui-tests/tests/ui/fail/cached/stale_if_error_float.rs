use ultracache::cached;

#[cached(timeout = 60, stale_if_error = 1.5)]
fn rate(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
