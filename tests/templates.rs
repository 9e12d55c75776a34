//! Template fragment caching with minijinja: blocks that are not rendered on
//! a hit, keys, dependencies through models the template reads, nesting, key
//! inheritance, and the Rust fragment API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use minijinja::{context, Environment, Value};
use serde::Serialize;
use ultracache::minijinja::{model, models, register};
use ultracache::{fragment, invalidate, track, Trackable};

#[derive(Clone, Debug, Serialize, Trackable)]
#[trackable(kind = "tpl.author")]
struct Author {
    id: u32,
    name: String,
}

#[derive(Clone, Debug, Serialize, Trackable)]
#[trackable(kind = "tpl.item")]
struct Item {
    id: u32,
    title: String,
    #[trackable(related)]
    author: Author,
}

fn item(id: u32) -> Item {
    Item {
        id,
        title: format!("item {id}"),
        author: Author {
            id: 100 + id,
            name: format!("author {}", 100 + id),
        },
    }
}

/// Counts how often each named block body ran: `{{ ran("name") }}`.
#[derive(Clone, Default)]
struct Ran(Arc<Mutex<HashMap<String, usize>>>);

impl Ran {
    fn get(&self, name: &str) -> usize {
        self.0.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

fn env(templates: &[(&'static str, &'static str)]) -> (Environment<'static>, Ran) {
    let mut env = Environment::new();
    register(&mut env);
    let ran = Ran::default();
    let r = ran.clone();
    env.add_function("ran", move |name: String| {
        *r.0.lock().unwrap().entry(name).or_default() += 1;
        String::new()
    });
    for (name, source) in templates {
        env.add_template(name, source).unwrap();
    }
    (env, ran)
}

fn render(env: &Environment<'_>, name: &str, ctx: Value) -> String {
    env.get_template(name).unwrap().render(ctx).unwrap()
}

#[test]
fn a_hit_does_not_render_the_body_and_keys_follow_the_values() {
    let (env, ran) = env(&[(
        "t",
        r#"{% call ultracache(60, "keys-block", user_id) %}{{ ran("keys") }}user {{ user_id }}{% endcall %}"#,
    )]);
    assert_eq!(render(&env, "t", context! { user_id => 1 }), "user 1");
    assert_eq!(render(&env, "t", context! { user_id => 1 }), "user 1");
    assert_eq!(ran.get("keys"), 1, "the second render was a hit");
    assert_eq!(render(&env, "t", context! { user_id => 2 }), "user 2");
    assert_eq!(ran.get("keys"), 2, "another value, another entry");
    // A missing variable is a stable placeholder: one entry for it.
    assert_eq!(render(&env, "t", context! {}), "user ");
    assert_eq!(render(&env, "t", context! {}), "user ");
    assert_eq!(ran.get("keys"), 3);
}

#[test]
fn reads_inside_a_block_are_its_dependencies_and_reads_outside_are_not() {
    let (env, ran) = env(&[(
        "t",
        r#"{{ two.title }}|{% call ultracache(3600, "deps-block") %}{{ ran("deps") }}{{ one.title }} by {{ one.author.name }}{% endcall %}"#,
    )]);
    let ctx = || context! { one => model(item(1)), two => model(item(2)) };
    assert_eq!(render(&env, "t", ctx()), "item 2|item 1 by author 101");
    render(&env, "t", ctx());
    assert_eq!(ran.get("deps"), 1);

    invalidate(&item(2)); // read outside the block
    render(&env, "t", ctx());
    assert_eq!(ran.get("deps"), 1);

    invalidate(&item(1).author); // read through the item
    render(&env, "t", ctx());
    assert_eq!(ran.get("deps"), 2);

    invalidate(&item(1));
    render(&env, "t", ctx());
    assert_eq!(ran.get("deps"), 3);
}

#[test]
fn nested_blocks_invalidate_outward_and_inner_hits_keep_their_dependencies() {
    let (env, ran) = env(&[(
        "t",
        r#"{% call ultracache(3600, "nest-outer") %}{{ ran("outer") }}[{% call ultracache(3600, "nest-inner", a.id) %}{{ ran("inner-a") }}{{ a.title }}{% endcall %}][{% call ultracache(3600, "nest-inner", b.id) %}{{ ran("inner-b") }}{{ b.title }}{% endcall %}]{% endcall %}"#,
    )]);
    let ctx = || context! { a => model(item(11)), b => model(item(12)) };
    assert_eq!(render(&env, "t", ctx()), "[item 11][item 12]");
    render(&env, "t", ctx());
    assert_eq!(
        (ran.get("outer"), ran.get("inner-a"), ran.get("inner-b")),
        (1, 1, 1)
    );

    // Writing a: the outer block and inner(a) re-render; inner(b) is a hit.
    invalidate(&item(11));
    render(&env, "t", ctx());
    assert_eq!(
        (ran.get("outer"), ran.get("inner-a"), ran.get("inner-b")),
        (2, 2, 1)
    );

    // Writing b: inner(b) was a hit in the last outer render, yet its
    // dependencies were replayed into the outer entry.
    invalidate(&item(12));
    render(&env, "t", ctx());
    assert_eq!(
        (ran.get("outer"), ran.get("inner-a"), ran.get("inner-b")),
        (3, 2, 2)
    );
}

#[test]
fn sequential_blocks_do_not_leak_dependencies() {
    let (env, ran) = env(&[(
        "t",
        r#"{% call ultracache(3600, "seq-a") %}{{ ran("seq-a") }}{{ a.title }}{% endcall %}{% call ultracache(3600, "seq-b") %}{{ ran("seq-b") }}{{ b.title }}{% endcall %}"#,
    )]);
    let ctx = || context! { a => model(item(21)), b => model(item(22)) };
    render(&env, "t", ctx());
    invalidate(&item(21));
    render(&env, "t", ctx());
    assert_eq!((ran.get("seq-a"), ran.get("seq-b")), (2, 1));
}

#[test]
fn lists_depend_on_their_kind_so_new_objects_show_up() {
    #[derive(Clone, Debug, Serialize, Trackable)]
    #[trackable(kind = "tpl.promo")]
    struct Promo {
        id: u32,
        title: String,
    }
    let (env, ran) = env(&[(
        "t",
        r#"{% call ultracache(3600, "promo-list") %}{{ ran("list") }}{% for p in promos %}{{ p.title }};{% endfor %}{% endcall %}"#,
    )]);
    let one = vec![Promo {
        id: 1,
        title: "a".into(),
    }];
    assert_eq!(
        render(&env, "t", context! { promos => models(one.clone()) }),
        "a;"
    );
    assert_eq!(render(&env, "t", context! { promos => models(one) }), "a;");
    assert_eq!(ran.get("list"), 1);
    invalidate(&Promo {
        id: 2,
        title: "b".into(),
    }); // created
    let two = vec![
        Promo {
            id: 1,
            title: "a".into(),
        },
        Promo {
            id: 2,
            title: "b".into(),
        },
    ];
    assert_eq!(
        render(&env, "t", context! { promos => models(two) }),
        "a;b;"
    );
}

#[test]
fn inner_keys_are_inherited_by_outer_blocks_unless_local_with_defaults() {
    let (env, ran) = env(&[
        (
            "inherit",
            r#"{% call ultracache(3600, "inh-outer") %}{{ ran("inh-outer") }}<{% call ultracache(3600, "inh-inner", y=1) %}{{ ran("inh-inner") }}y={{ y }}{% endcall %}>{% endcall %}"#,
        ),
        (
            "local",
            r#"{% call ultracache(3600, "loc-outer") %}{{ ran("loc-outer") }}<{% call ultracache(3600, "loc-inner", y=1, local=true) %}{{ ran("loc-inner") }}y={{ y }}{% endcall %}>{% endcall %}"#,
        ),
        (
            "default",
            r#"{% call ultracache(3600, "def-block", x=10) %}{{ ran("def") }}x={{ x }}{% endcall %}"#,
        ),
    ]);
    assert_eq!(render(&env, "inherit", context! { y => 5 }), "<y=5>");
    assert_eq!(render(&env, "inherit", context! { y => 5 }), "<y=5>");
    assert_eq!(ran.get("inh-outer"), 1);
    // Changing y re-renders the outer block, whose key does not mention y.
    assert_eq!(render(&env, "inherit", context! { y => 6 }), "<y=6>");
    assert_eq!(ran.get("inh-outer"), 2);
    // Both variants stay cached.
    assert_eq!(render(&env, "inherit", context! { y => 5 }), "<y=5>");
    assert_eq!(render(&env, "inherit", context! { y => 6 }), "<y=6>");
    assert_eq!(ran.get("inh-outer"), 2);

    // local=true: the outer block does not vary on y.
    assert_eq!(render(&env, "local", context! { y => 5 }), "<y=5>");
    assert_eq!(render(&env, "local", context! { y => 6 }), "<y=5>");
    assert_eq!(ran.get("loc-outer"), 1);

    // A missing variable takes its default: x missing is x=10.
    assert_eq!(render(&env, "default", context! { x => 10 }), "x=10");
    assert_eq!(render(&env, "default", context! {}), "x=10");
    assert_eq!(ran.get("def"), 1);
}

#[test]
fn blocks_are_cached_only_for_get_and_head_requests() {
    let (env, ran) = env(&[(
        "t",
        r#"{% call ultracache(3600, "method-block") %}{{ ran("m") }}x{% endcall %}"#,
    )]);
    let post = || context! { request => context! { method => "POST" } };
    render(&env, "t", post());
    render(&env, "t", post());
    assert_eq!(ran.get("m"), 2);
    let get = || context! { request => context! { method => "GET" } };
    render(&env, "t", get());
    render(&env, "t", get());
    assert_eq!(ran.get("m"), 3);
}

#[test]
fn rust_fragments_cache_record_and_nest() {
    let runs = AtomicUsize::new(0);
    let a = item(31);
    let sidebar = || {
        fragment(3600, "fragment-sidebar", || {
            runs.fetch_add(1, Ordering::SeqCst);
            track(&a);
            format!("<aside>{}</aside>", a.title)
        })
    };
    assert_eq!(sidebar(), "<aside>item 31</aside>");
    assert_eq!(sidebar(), "<aside>item 31</aside>");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // A fragment inside a page fragment: the page depends on what it read.
    let page = || {
        fragment(3600, "fragment-page", || {
            format!("<main>{}</main>", sidebar())
        })
    };
    page();
    page();
    invalidate(&a);
    assert_eq!(page(), "<main><aside>item 31</aside></main>");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}
