//! A `#[invalidates]` function's write is visible to other readers before
//! the invalidation that follows it. A reader in between — it may well have
//! read the new data itself — must not be served the copy computed from the
//! old data: what the function's arguments name is held from before its
//! body runs until its write is invalidated. Each test makes the reader run
//! exactly in that window (the body waits for it).

mod common;

use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

use common::{Runs, Table};
use ultracache::{cached, invalidates, tracks};

const BOUND: Duration = Duration::from_secs(10);

model!(Post, "hold.post");
static POSTS: Table = Table::new();
static TITLE_RUNS: Runs = Runs::new();

#[tracks]
fn load(id: i64) -> Post {
    Post {
        id,
        title: POSTS.get(id).unwrap_or_default(),
    }
}

#[cached(forever)]
fn title(id: i64) -> String {
    TITLE_RUNS.hit();
    load(id).title
}

/// Writes the post's title, then lets a reader in (before the function
/// returns, so before its invalidation) and returns what the reader saw.
#[invalidates(Post)]
fn rename(post: &Post, to: &str, written: &Sender<()>, seen: &Receiver<String>) -> String {
    POSTS.set(post.id, to);
    written.send(()).unwrap();
    seen.recv_timeout(BOUND).expect("the reader answers")
}

/// A reader that waits for the write, then reads `read()`.
fn reader<T: Send + 'static>(read: fn() -> T) -> (Sender<()>, Receiver<T>) {
    let (written, wait) = channel::<()>();
    let (tell, seen) = channel();
    std::thread::spawn(move || {
        wait.recv_timeout(BOUND).expect("the write happens");
        tell.send(read()).unwrap();
    });
    (written, seen)
}

#[test]
fn a_reader_between_the_write_and_its_invalidation_gets_the_new_data() {
    POSTS.set(1, "old");
    assert_eq!(title(1), "old");
    assert_eq!(title(1), "old", "cached");
    let (written, seen) = reader(|| title(1));
    let during = rename(&load(1), "new", &written, &seen);
    assert_eq!(
        during, "new",
        "the reader was served the copy of the old title"
    );
    assert_eq!(title(1), "new");
    let runs = TITLE_RUNS.get();
    assert_eq!(title(1), "new");
    assert_eq!(
        TITLE_RUNS.get(),
        runs,
        "cached again once the write returned"
    );
}

// --- a kind with no object among the arguments: its lists are held -------

model!(Item, "hold.item");
static ITEMS: Table = Table::new();

#[tracks]
fn all_items() -> Vec<Item> {
    ITEMS
        .all()
        .into_iter()
        .map(|(id, title)| Item { id, title })
        .collect()
}

#[cached(forever)]
fn item_count() -> usize {
    all_items().len()
}

#[cached(forever)]
fn item_title(id: i64) -> String {
    all_items()
        .into_iter()
        .find(|i| i.id == id)
        .map(|i| i.title)
        .unwrap_or_default()
}

#[invalidates(Item)]
fn create_item(title: &str, written: &Sender<()>, seen: &Receiver<usize>) -> Result<usize, String> {
    let id = ITEMS.all().len() as i64 + 1;
    ITEMS.set(id, title);
    written.send(()).unwrap();
    seen.recv_timeout(BOUND).map_err(|e| e.to_string())
}

#[invalidates(Item)]
fn rename_first_item(to: &str, written: &Sender<()>, seen: &Receiver<String>) -> bool {
    ITEMS.set(1, to);
    written.send(()).unwrap();
    seen.recv_timeout(BOUND).is_ok_and(|s| s == to)
}

#[test]
fn lists_of_a_kind_written_without_an_object_at_hand_are_held() {
    ITEMS.set(1, "first");
    assert_eq!(item_count(), 1);
    assert_eq!(item_title(1), "first");

    let (written, seen) = reader(item_count);
    let during = create_item("second", &written, &seen).unwrap();
    assert_eq!(
        during, 2,
        "the list read during the write missed the new item"
    );

    let (written, seen) = reader(|| item_title(1));
    assert!(
        rename_first_item("renamed", &written, &seen),
        "the object read through the list during the write was the copy of the old one"
    );
    assert_eq!(item_title(1), "renamed");
}

// --- a write that fails or panics ends its hold --------------------------

model!(Note, "hold.note");
static NOTES: Table = Table::new();
static NOTE_RUNS: Runs = Runs::new();

#[tracks]
fn note(id: i64) -> Note {
    Note {
        id,
        title: NOTES.get(id).unwrap_or_default(),
    }
}

#[cached(forever)]
fn note_title(id: i64) -> String {
    NOTE_RUNS.hit();
    note(id).title
}

#[invalidates(Note)]
fn refuse(note: &Note) -> Result<(), String> {
    Err(format!("note {} is locked", note.id))
}

#[invalidates(Note)]
fn crash(note: &Note) {
    panic!("note {} crashed the write", note.id);
}

/// Whether `note_title(id)` is cached: a second call runs nothing.
fn cached_again(id: i64) -> bool {
    note_title(id);
    let runs = NOTE_RUNS.get();
    note_title(id);
    NOTE_RUNS.get() == runs
}

#[test]
fn a_write_that_fails_or_panics_leaves_nothing_held() {
    NOTES.set(1, "one");
    assert!(cached_again(1));
    assert!(refuse(&note(1)).is_err());
    assert!(cached_again(1), "a failed write left its object held");
    assert!(std::panic::catch_unwind(|| crash(&note(1))).is_err());
    assert!(cached_again(1), "a panicking write left its object held");
}

// --- async -------------------------------------------------------------------

model!(Page, "hold.page");
static PAGES: Table = Table::new();

#[tracks]
fn page(id: i64) -> Page {
    Page {
        id,
        title: PAGES.get(id).unwrap_or_default(),
    }
}

#[cached(forever)]
async fn page_title(id: i64) -> String {
    tokio::task::yield_now().await;
    page(id).title
}

#[invalidates(Page)]
async fn rename_page(
    page: &Page,
    to: &str,
    written: tokio::sync::oneshot::Sender<()>,
    seen: tokio::sync::oneshot::Receiver<String>,
) -> String {
    PAGES.set(page.id, to);
    tokio::task::yield_now().await;
    written.send(()).unwrap();
    tokio::time::timeout(BOUND, seen).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_write_holds_across_its_awaits() {
    PAGES.set(1, "old");
    assert_eq!(page_title(1).await, "old");
    let (written, wait) = tokio::sync::oneshot::channel();
    let (tell, seen) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(async move {
        tokio::time::timeout(BOUND, wait).await.unwrap().unwrap();
        tell.send(page_title(1).await).unwrap();
    });
    let during = rename_page(&page(1), "new", written, seen).await;
    reader.await.unwrap();
    assert_eq!(
        during, "new",
        "the reader was served the copy of the old title"
    );
    assert_eq!(page_title(1).await, "new");
}

// --- a write made by hand: `writing` … `done` -------------------------------

model!(Draft, "hold.draft");
static DRAFTS: Table = Table::new();
static DRAFT_RUNS: Runs = Runs::new();

#[tracks]
fn draft(id: i64) -> Draft {
    Draft {
        id,
        title: DRAFTS.get(id).unwrap_or_default(),
    }
}

#[cached(forever)]
fn draft_title(id: i64) -> String {
    DRAFT_RUNS.hit();
    draft(id).title
}

#[test]
fn a_write_made_by_hand_holds_from_writing_until_done() {
    DRAFTS.set(1, "old");
    assert_eq!(draft_title(1), "old");
    let write = ultracache::writing(&draft(1));
    DRAFTS.set(1, "new");
    // Between the write and `done`, from another thread.
    let during = std::thread::spawn(|| draft_title(1)).join().unwrap();
    assert_eq!(during, "new", "served the copy of the old title");
    let runs = DRAFT_RUNS.get();
    draft_title(1);
    assert_eq!(DRAFT_RUNS.get(), runs + 1, "a value was stored while held");
    write.done();
    assert_eq!(draft_title(1), "new");
    let runs = DRAFT_RUNS.get();
    assert_eq!(draft_title(1), "new");
    assert_eq!(DRAFT_RUNS.get(), runs, "cached again after done");

    // Dropped without `done`: the hold ends all the same.
    drop(ultracache::writing(&draft(1)));
    draft_title(1);
    let runs = DRAFT_RUNS.get();
    draft_title(1);
    assert_eq!(
        DRAFT_RUNS.get(),
        runs,
        "a dropped write left its object held"
    );
}
