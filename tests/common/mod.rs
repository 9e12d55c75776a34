//! A tiny in-memory "database" of posts shared by the behaviour tests. Each
//! test declares its own model type (its own kind), so tests running in
//! parallel never invalidate each other's entries.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

pub mod broadcast;
pub mod proxies;
pub mod redis_cluster;
pub mod redis_server;
pub mod shared_tier;
pub mod sqlite;
pub mod web;

/// A table of titles by id.
pub struct Table {
    rows: Mutex<BTreeMap<i64, String>>,
}

impl Table {
    pub const fn new() -> Self {
        Table {
            rows: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn set(&self, id: i64, title: &str) {
        self.rows.lock().unwrap().insert(id, title.to_owned());
    }

    pub fn get(&self, id: i64) -> Option<String> {
        self.rows.lock().unwrap().get(&id).cloned()
    }

    pub fn all(&self) -> Vec<(i64, String)> {
        self.rows
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }
}

/// Counts how often a body ran.
pub struct Runs(AtomicUsize);

impl Runs {
    pub const fn new() -> Self {
        Runs(AtomicUsize::new(0))
    }
    pub fn hit(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Declares a model type of its own kind, with `id` and `title`, and a
/// `numbered(id)` constructor titled "post {id}".
#[macro_export]
macro_rules! model {
    ($name:ident, $kind:literal) => {
        #[derive(Clone, Debug, PartialEq, ultracache::Trackable)]
        #[trackable(kind = $kind)]
        struct $name {
            id: i64,
            title: String,
        }

        #[allow(dead_code)]
        impl $name {
            fn numbered(id: i64) -> Self {
                $name {
                    id,
                    title: format!("post {id}"),
                }
            }
        }
    };
}
