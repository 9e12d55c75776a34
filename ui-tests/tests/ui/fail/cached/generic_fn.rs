use ultracache::cached;

#[cached(timeout = 60)]
fn show<T: ToString>(value: T) -> String {
    value.to_string()
}

fn main() {}
