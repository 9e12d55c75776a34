use ultracache::cached;

#[derive(Clone, PartialEq)]
struct Filter {
    min: f64,
}

#[cached(timeout = 60, key = filter)]
fn search(filter: &Filter) -> Vec<u32> {
    let _ = filter.min;
    Vec::new()
}

fn main() {}
