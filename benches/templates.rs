//! A page of 50 template blocks, each reading 10 models: rendering it in full
//! (the same template without `ultracache` blocks) against rendering it with
//! every block a hit.
//!
//! `cargo bench --bench templates`

use minijinja::{context, Environment, Value};
use serde::Serialize;
use ultracache::minijinja::models;
use ultracache::Trackable;

fn main() {
    divan::main();
}

#[derive(Clone, Debug, Serialize, Trackable)]
#[trackable(kind = "bench.tpl-item")]
struct Item {
    id: u32,
    title: String,
    price: u32,
}

const BODY: &str = "<section><h2>Block {{ b }}</h2><ul>{% for item in blocks[b] %}<li>{{ item.title }}: {{ item.price }}</li>{% endfor %}</ul></section>";

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    ultracache::minijinja::register(&mut env);
    let plain = format!("{{% for b in range(50) %}}{BODY}{{% endfor %}}");
    let cached = format!(
        "{{% for b in range(50) %}}{{% call ultracache(3600, \"bench-block\", b) %}}{BODY}{{% endcall %}}{{% endfor %}}"
    );
    env.add_template_owned("plain", plain)
        .expect("plain template");
    env.add_template_owned("cached", cached)
        .expect("cached template");
    env
}

fn context() -> Value {
    let blocks: Vec<Value> = (0..50u32)
        .map(|b| {
            models((0..10u32).map(|i| Item {
                id: b * 10 + i,
                title: format!("Item {}", b * 10 + i),
                price: i * 100,
            }))
        })
        .collect();
    context! { blocks }
}

#[divan::bench]
fn full_render(bencher: divan::Bencher<'_, '_>) {
    let env = environment();
    let ctx = context();
    let t = env.get_template("plain").expect("template");
    bencher.bench_local(|| t.render(&ctx).expect("render").len());
}

#[divan::bench]
fn all_hit_render(bencher: divan::Bencher<'_, '_>) {
    let env = environment();
    let ctx = context();
    let t = env.get_template("cached").expect("template");
    let full = env
        .get_template("plain")
        .expect("template")
        .render(&ctx)
        .expect("render");
    assert_eq!(t.render(&ctx).expect("warm"), full, "same page");
    bencher.bench_local(|| t.render(&ctx).expect("render").len());
}
