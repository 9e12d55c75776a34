//! Writes drop exactly the dependent entries: by object, by id, by kind, and
//! for objects that did not exist yet (the new-object problem).

#[macro_use]
mod common;

use common::{Runs, Table};
use ultracache::{
    cached, invalidate, invalidate_id, invalidate_kind, invalidates, tracks, Trackable,
};

// --- only the entries that read the object ------------------------------

model!(Note, "inv.note");
static NOTES: Table = Table::new();
static NOTE_RUNS: Runs = Runs::new();

#[tracks]
fn note(id: i64) -> Option<Note> {
    NOTES.get(id).map(|title| Note { id, title })
}

#[cached(forever)]
fn note_page(id: i64) -> String {
    NOTE_RUNS.hit();
    note(id).map(|n| n.title).unwrap_or_default()
}

#[test]
fn a_write_drops_the_entries_that_read_the_object_and_only_those() {
    NOTES.set(1, "one");
    NOTES.set(2, "two");
    assert_eq!(note_page(1), "one");
    assert_eq!(note_page(2), "two");
    assert_eq!(NOTE_RUNS.get(), 2);

    NOTES.set(2, "TWO");
    invalidate(&Note {
        id: 2,
        title: "TWO".into(),
    });
    assert_eq!(note_page(1), "one", "page 1 survives a write to note 2");
    assert_eq!(note_page(2), "TWO", "page 2 is fresh");
    assert_eq!(NOTE_RUNS.get(), 3);
}

// --- lists depend on the kind; creating an object invalidates them ------

model!(Item, "inv.item");
static ITEMS: Table = Table::new();
static LIST_RUNS: Runs = Runs::new();
static FIND_RUNS: Runs = Runs::new();

#[tracks]
fn all_items() -> Vec<Item> {
    ITEMS
        .all()
        .into_iter()
        .map(|(id, title)| Item { id, title })
        .collect()
}

#[tracks]
fn find_item(title: &str) -> Option<Item> {
    all_items().into_iter().find(|i| i.title == title)
}

#[cached(forever)]
fn item_count() -> usize {
    LIST_RUNS.hit();
    all_items().len()
}

#[cached(forever)]
fn item_exists(title: &str) -> bool {
    FIND_RUNS.hit();
    find_item(title).is_some()
}

#[invalidates(Item)]
fn create_item(title: &str) -> Result<Item, String> {
    let id = ITEMS.all().len() as i64 + 1;
    ITEMS.set(id, title);
    Ok(Item {
        id,
        title: title.to_owned(),
    })
}

#[test]
fn creating_an_object_invalidates_empty_lists_and_failed_lookups() {
    assert_eq!(item_count(), 0, "the list is empty when cached");
    assert!(!item_exists("apple"), "the lookup finds nothing");
    assert_eq!(item_count(), 0);
    assert!(!item_exists("apple"));
    assert_eq!((LIST_RUNS.get(), FIND_RUNS.get()), (1, 1));

    create_item("apple").unwrap();

    assert_eq!(item_count(), 1, "the list sees the new object");
    assert!(item_exists("apple"), "the lookup finds it");
    assert_eq!((LIST_RUNS.get(), FIND_RUNS.get()), (2, 2));
}

// --- an object page survives writes to others, a list does not -----------

model!(Card, "inv.card");
static CARD_PAGE: Runs = Runs::new();
static CARD_LIST: Runs = Runs::new();

#[tracks]
fn card(id: i64) -> Card {
    Card {
        id,
        title: format!("card {id}"),
    }
}

#[tracks]
fn cards() -> Vec<Card> {
    (1..=3).map(card).collect()
}

#[cached(forever)]
fn card_page(id: i64) -> String {
    CARD_PAGE.hit();
    card(id).title
}

#[cached(forever)]
fn card_list() -> usize {
    CARD_LIST.hit();
    cards().len()
}

#[test]
fn a_block_that_depends_on_the_kind_dies_with_any_object_of_it() {
    card_page(1);
    card_list();
    invalidate(&card(2));
    card_page(1);
    card_list();
    assert_eq!(CARD_PAGE.get(), 1, "page of card 1 did not read card 2");
    assert_eq!(CARD_LIST.get(), 2, "the list read every card and the kind");
}

// --- by id, by kind ------------------------------------------------------

model!(Tag, "inv.tag");
static TAG_RUNS: Runs = Runs::new();

#[tracks]
fn tag(id: i64) -> Tag {
    Tag {
        id,
        title: format!("tag {id}"),
    }
}

#[cached(forever)]
fn tag_page(id: i64) -> String {
    TAG_RUNS.hit();
    tag(id).title
}

#[test]
fn invalidate_id_drops_entries_of_that_object() {
    tag_page(1);
    tag_page(2);
    assert_eq!(invalidate_id::<Tag>(1), 1);
    tag_page(1);
    tag_page(2);
    assert_eq!(TAG_RUNS.get(), 3);
}

model!(Label, "inv.label");
static LABEL_RUNS: Runs = Runs::new();

#[tracks]
fn label(id: i64) -> Label {
    Label {
        id,
        title: format!("label {id}"),
    }
}

#[cached(forever)]
fn label_page(id: i64) -> String {
    LABEL_RUNS.hit();
    label(id).title
}

#[test]
fn invalidate_kind_drops_every_entry_that_read_any_object_of_the_kind() {
    label_page(1);
    label_page(2);
    assert_eq!(invalidate_kind::<Label>(), 2);
    label_page(1);
    label_page(2);
    assert_eq!(LABEL_RUNS.get(), 4);
}

// --- #[invalidates] forms ------------------------------------------------

model!(Doc, "inv.doc");
model!(Comment, "inv.comment");
static DOC_RUNS: Runs = Runs::new();

#[tracks]
fn doc(id: i64) -> Doc {
    Doc {
        id,
        title: format!("doc {id}"),
    }
}

#[tracks]
fn comment(id: i64) -> Comment {
    Comment {
        id,
        title: format!("comment {id}"),
    }
}

// Reads no comment: `invalidates_several_kinds_and_whole_kinds`, running
// beside it, drops every entry that read one.
#[cached(forever)]
fn doc_page(id: i64) -> String {
    DOC_RUNS.hit();
    format!("page of {}", doc(id).title)
}

#[invalidates(Doc)]
fn save_doc(doc: Doc, fail: bool) -> Result<Doc, String> {
    if fail {
        Err("rejected".into())
    } else {
        Ok(doc)
    }
}

#[invalidates(Doc, id = doc_id)]
fn delete_doc(doc_id: i64) {}

#[invalidates(Doc, Comment)]
fn save_both(doc: &Doc, comment: &Comment) -> usize {
    doc.title.len() + comment.title.len()
}

#[invalidates(Comment)]
fn reindex_comments() {}

#[test]
fn invalidates_runs_only_after_success() {
    doc_page(1);
    // What the arguments name is held from before the body runs, and this
    // process's copies dropped then (a write may commit before it fails):
    // a failed write costs one computation here, and tells no one else.
    assert!(save_doc(doc(1), true).is_err());
    doc_page(1);
    assert_eq!(DOC_RUNS.get(), 2, "the held copy was served");
    doc_page(1);
    assert_eq!(DOC_RUNS.get(), 2, "a failed write left its object held");
    save_doc(doc(1), false).unwrap();
    doc_page(1);
    assert_eq!(DOC_RUNS.get(), 3);
}

static DEL_RUNS: Runs = Runs::new();

#[cached(forever)]
fn doc_title(id: i64) -> String {
    DEL_RUNS.hit();
    doc(id).title
}

#[test]
fn invalidates_by_id_when_only_the_id_is_at_hand() {
    doc_title(10);
    doc_title(11);
    delete_doc(10);
    doc_title(10);
    doc_title(11);
    assert_eq!(DEL_RUNS.get(), 3, "only doc 10's entry was dropped");
}

static BOTH_RUNS: Runs = Runs::new();

#[cached(forever)]
fn comment_title(id: i64) -> String {
    BOTH_RUNS.hit();
    comment(id).title
}

#[test]
fn invalidates_several_kinds_and_whole_kinds() {
    comment_title(20);
    comment_title(21);
    save_both(&doc(99), &comment(20));
    comment_title(20);
    comment_title(21);
    assert_eq!(BOTH_RUNS.get(), 3, "comment 20 was written, 21 was not");

    // No instance and no id: every entry that read any comment is dropped.
    reindex_comments();
    comment_title(20);
    comment_title(21);
    assert_eq!(BOTH_RUNS.get(), 5);
}

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "inv.by-slug")]
struct BySlug {
    #[trackable(id)]
    slug: String,
}

static SLUG_RUNS: Runs = Runs::new();

#[tracks]
fn by_slug(slug: &str) -> BySlug {
    BySlug {
        slug: slug.to_owned(),
    }
}

#[cached(forever)]
fn slug_page(slug: &str) -> String {
    SLUG_RUNS.hit();
    by_slug(slug).slug.to_uppercase()
}

#[test]
fn string_ids_work_like_integer_ids() {
    assert_eq!(slug_page("hello"), "HELLO");
    slug_page("world");
    invalidate_id::<BySlug>(String::from("hello"));
    slug_page("hello");
    slug_page("world");
    assert_eq!(SLUG_RUNS.get(), 3);
}
