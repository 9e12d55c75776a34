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
        r#"{% call ultracache(3600, "nest-outer") %}{{ ran("outer") }}[{% call ultracache(3600, "nest-inner-a") %}{{ ran("inner-a") }}{{ a.title }}{% endcall %}][{% call ultracache(3600, "nest-inner-b") %}{{ ran("inner-b") }}{{ b.title }}{% endcall %}]{% endcall %}"#,
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
            r#"{% call(x) ultracache(3600, "def-block", x=10) %}{{ ran("def") }}x={{ x }}{% endcall %}"#,
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

    // A missing variable takes its default (the body declares it): x
    // missing renders, and is cached, as x=10.
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

#[test]
fn keys_pass_down_so_an_inner_block_never_shows_an_outer_variable_stale() {
    let (env, ran) = env(&[(
        "t",
        r#"{% call ultracache(3600, "down-outer", x=none) %}{{ ran("down-outer") }}x={{ x }};{% call ultracache(3600, "down-mid", y=none) %}{{ ran("down-mid") }}y={{ y }};{% call ultracache(3600, "down-inner", z=none) %}{{ ran("down-inner") }}x={{ x }},y={{ y }},z={{ z }}{% endcall %}{% endcall %}{% endcall %}"#,
    )]);
    let page = |x: i32, y: i32, z: i32| render(&env, "t", context! { x, y, z });
    assert_eq!(page(1, 1, 1), "x=1;y=1;x=1,y=1,z=1");
    assert_eq!(page(1, 1, 1), "x=1;y=1;x=1,y=1,z=1");
    assert_eq!(ran.get("down-inner"), 1);
    // The outermost variable changes: the innermost block prints it.
    assert_eq!(page(2, 1, 1), "x=2;y=1;x=2,y=1,z=1");
    assert_eq!(page(2, 2, 1), "x=2;y=2;x=2,y=2,z=1");
    assert_eq!(page(2, 2, 3), "x=2;y=2;x=2,y=2,z=3");
    // Every combination seen stays right.
    assert_eq!(page(1, 1, 1), "x=1;y=1;x=1,y=1,z=1");
    assert_eq!(page(2, 1, 1), "x=2;y=1;x=2,y=1,z=1");
}

#[test]
fn a_default_never_poisons_the_entry_of_the_real_value() {
    let (env, ran) = env(&[
        (
            "declared",
            r#"{% call(x) ultracache(3600, "poison-declared", x=10) %}{{ ran("pd") }}x={{ x }}{% endcall %}"#,
        ),
        (
            "undeclared",
            r#"{% call ultracache(3600, "poison-undeclared", x=10) %}{{ ran("pu") }}x={{ x }}{% endcall %}"#,
        ),
    ]);
    // The body declares x: missing renders as if x were 10, and shares
    // the entry with a real 10.
    assert_eq!(render(&env, "declared", context! {}), "x=10");
    assert_eq!(render(&env, "declared", context! { x => 10 }), "x=10");
    assert_eq!(ran.get("pd"), 1);
    // It does not: the body sees x missing, and that render is kept apart
    // from x=10's.
    assert_eq!(render(&env, "undeclared", context! {}), "x=");
    assert_eq!(render(&env, "undeclared", context! { x => 10 }), "x=10");
    assert_eq!(render(&env, "undeclared", context! {}), "x=");
}

#[test]
fn learned_names_only_grow_whatever_branch_a_render_takes() {
    let (env, _) = env(&[(
        "t",
        r#"{% call ultracache(3600, "grow-outer", branch=none) %}[{% if branch == "y" %}{% call ultracache(3600, "grow-y", y=none) %}y={{ y }}{% endcall %}{% elif branch == "q" %}{% call ultracache(3600, "grow-q", q=none) %}q={{ q }}{% endcall %}{% endif %}]{% endcall %}"#,
    )]);
    let page = |branch: &str, y: i32, q: i32| render(&env, "t", context! { branch, y, q });
    assert_eq!(page("y", 1, 0), "[y=1]");
    // A render that skips the inner block forgets nothing.
    assert_eq!(page("none", 1, 0), "[]");
    assert_eq!(page("y", 2, 0), "[y=2]");
    assert_eq!(page("y", 1, 0), "[y=1]");
    // Another branch's block with as many names as already known is learned
    // too.
    assert_eq!(page("q", 1, 1), "[q=1]");
    assert_eq!(page("q", 1, 2), "[q=2]");
    assert_eq!(page("q", 2, 1), "[q=1]");
    assert_eq!(page("y", 2, 7), "[y=2]");
    assert_eq!(page("none", 5, 5), "[]");
    assert_eq!(page("q", 5, 3), "[q=3]");
}

#[test]
fn positional_keys_pass_down_and_the_block_around_them_is_never_stale() {
    // better-cache's own example, with positional keys.
    let (env, ran) = env(&[(
        "t",
        r#"{% call ultracache(500, "pos-outer", x) %}{{ ran("pos-outer") }}y = {{ y }};{% call ultracache(500, "pos-inner", y) %}{{ ran("pos-inner") }}x = {{ x }}{% endcall %}{% endcall %}"#,
    )]);
    let page = |x: i32, y: i32| render(&env, "t", context! { x, y });
    assert_eq!(page(1, 1), "y = 1;x = 1");
    assert_eq!(page(1, 1), "y = 1;x = 1");
    assert_eq!(ran.get("pos-inner"), 1, "the inner block is cached");
    // x changes: the inner block's key includes the outer's (it passes down).
    assert_eq!(page(2, 1), "y = 1;x = 2");
    // y changes: the outer block cannot look y up before rendering, so it
    // renders every time rather than serve y = 1.
    assert_eq!(page(2, 2), "y = 2;x = 2");
    assert_eq!(page(1, 1), "y = 1;x = 1");
    assert_eq!(ran.get("pos-inner"), 3);
}

#[test]
fn the_escape_mode_is_part_of_a_blocks_key() {
    let (env, _) = env(&[(
        "page.html",
        r#"{% autoescape false %}{% call ultracache(60, "escape-block") %}{{ p }}{% endcall %}{% endautoescape %}|{% call ultracache(60, "escape-block") %}{{ p }}{% endcall %}"#,
    )]);
    assert_eq!(
        render(&env, "page.html", context! { p => "<script>" }),
        "<script>|&lt;script&gt;"
    );
    // And the same block in a text template is not served in an HTML one.
    let (env, _) = env_shared_name();
    assert_eq!(render(&env, "a.txt", context! { p => "<b>" }), "<b>");
    assert_eq!(render(&env, "b.html", context! { p => "<b>" }), "&lt;b&gt;");
}

fn env_shared_name() -> (Environment<'static>, Ran) {
    env(&[
        (
            "a.txt",
            r#"{% call ultracache(60, "shared-name") %}{{ p }}{% endcall %}"#,
        ),
        (
            "b.html",
            r#"{% call ultracache(60, "shared-name") %}{{ p }}{% endcall %}"#,
        ),
    ])
}

#[test]
fn timeouts_share_one_cache_each_entry_expiring_on_its_own() {
    let (env, _) = env(&[(
        "t",
        r#"{% call ultracache(timeout, "many-timeouts", n=none) %}{{ n }}{% endcall %}"#,
    )]);
    for n in 0..3_000u64 {
        render(&env, "t", context! { timeout => 1_000 + n, n });
        fragment(1_000 + n, format!("many-timeouts-{n}"), String::new);
    }
    let stats = ultracache::stats();
    let count = |name: &str| stats.caches.iter().filter(|c| c.name == name).count();
    assert_eq!(count("template-block"), 1);
    assert_eq!(count("fragment"), 1);
}

#[test]
fn concurrent_first_renders_of_a_block_run_its_body_once() {
    use std::sync::Barrier;
    let (env, ran) = env(&[(
        "t",
        r#"{% call ultracache(3600, "flight-block") %}{{ ran("flight") }}{{ wait() }}body{% endcall %}"#,
    )]);
    let mut env = env;
    // The body waits (bounded) until the other renders are waiting for it.
    let coalesced = || {
        ultracache::stats()
            .cache("template-block")
            .map_or(0, |c| c.coalesced)
    };
    let before = coalesced();
    env.add_function("wait", move || {
        let start = std::time::Instant::now();
        while coalesced() < before + 7 && start.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::yield_now();
        }
        String::new()
    });
    let env = Arc::new(env);
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (env, barrier) = (Arc::clone(&env), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                render(&env, "t", context! {})
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), "body");
    }
    assert_eq!(
        ran.get("flight"),
        1,
        "the body ran once for 8 first renders"
    );
}

#[test]
fn each_block_expires_after_its_own_timeout_in_the_one_cache() {
    let (env, ran) = env(&[(
        "t",
        r#"{% call ultracache(1, "expiry-short") %}{{ ran("short") }}s{% endcall %}|{% call ultracache(3600, "expiry-long") %}{{ ran("long") }}l{% endcall %}"#,
    )]);
    let first = std::time::Instant::now();
    assert_eq!(render(&env, "t", context! {}), "s|l");
    assert_eq!(render(&env, "t", context! {}), "s|l");
    assert_eq!((ran.get("short"), ran.get("long")), (1, 1));
    // Bounded: the 1-second block re-renders once its second is over.
    while ran.get("short") == 1 {
        assert!(
            first.elapsed() < std::time::Duration::from_secs(10),
            "the 1-second block never expired"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        render(&env, "t", context! {});
    }
    assert!(
        first.elapsed() >= std::time::Duration::from_millis(900),
        "expired after {:?}",
        first.elapsed()
    );
    assert_eq!(ran.get("long"), 1, "the 1-hour block expired with it");
}
