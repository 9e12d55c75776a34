//! What `#[tracks]` records for each shape of return value.

use std::collections::HashMap;

use ultracache::{capture, tracks, Dep, Trackable};

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "tracks.author")]
struct Author {
    id: u32,
}

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "tracks.post")]
struct Post {
    id: i64,
    #[trackable(related)]
    author: Author,
}

fn post(id: i64) -> Post {
    Post {
        id,
        author: Author { id: 7 },
    }
}

/// Sorted by name: `kind` before `kind:id`.
fn names(deps: &[Dep]) -> Vec<String> {
    deps.iter().map(ToString::to_string).collect()
}

fn recorded<R>(f: impl FnOnce() -> R) -> Vec<String> {
    names(&capture(f).1)
}

struct Repo {
    posts: Vec<Post>,
}

impl Repo {
    #[tracks]
    fn first(&self) -> &Post {
        &self.posts[0]
    }

    #[tracks]
    fn all(&self) -> &[Post] {
        &self.posts
    }

    #[tracks]
    fn find(&self, id: i64) -> Option<&Post> {
        self.posts.iter().find(|p| p.id == id)
    }
}

#[tracks]
fn by_author() -> HashMap<u32, Vec<Post>> {
    HashMap::from([(7, vec![post(3)])])
}

#[tracks]
fn page_of_posts(page: u32) -> (Vec<Post>, usize) {
    let _ = page;
    (vec![post(4)], 100)
}

#[tracks]
fn maybe(ok: bool) -> Result<Post, String> {
    if ok {
        Ok(post(5))
    } else {
        Err("no".into())
    }
}

#[tracks]
async fn load_async(id: i64) -> Post {
    post(id)
}

#[test]
fn a_model_and_what_it_relates_to() {
    let repo = Repo {
        posts: vec![post(1), post(2)],
    };
    assert_eq!(
        recorded(|| repo.first().id),
        ["tracks.author:7", "tracks.post:1"]
    );
}

#[test]
fn collections_record_every_item_and_the_kind() {
    let repo = Repo {
        posts: vec![post(1), post(2)],
    };
    assert_eq!(
        recorded(|| repo.all().len()),
        [
            "tracks.author:7",
            "tracks.post",
            "tracks.post:1",
            "tracks.post:2"
        ]
    );
    assert_eq!(
        recorded(|| by_author().len()),
        ["tracks.author:7", "tracks.post", "tracks.post:3"]
    );
}

#[test]
fn a_lookup_that_found_nothing_records_the_kind() {
    let repo = Repo { posts: vec![] };
    assert_eq!(recorded(|| repo.find(9).is_none()), ["tracks.post"]);
}

#[test]
fn tuples_may_hold_plain_data_beside_models() {
    assert_eq!(
        recorded(|| page_of_posts(1).1),
        ["tracks.author:7", "tracks.post", "tracks.post:4"]
    );
}

#[test]
fn results_record_their_ok_only() {
    assert_eq!(
        recorded(|| maybe(true).is_ok()),
        ["tracks.author:7", "tracks.post:5"]
    );
    assert!(recorded(|| maybe(false).is_ok()).is_empty());
}

#[tokio::test]
async fn async_loaders_record_too() {
    let (_, deps) = ultracache::capture_future(load_async(6)).await;
    assert_eq!(names(&deps), ["tracks.author:7", "tracks.post:6"]);
}
