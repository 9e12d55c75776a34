//! What the cache tells the outside: counters through the `metrics` facade,
//! and `tracing` events that say which dependency dropped an entry.

use std::sync::{Arc, Mutex};

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;
use ultracache::{cached, invalidate, tracks, Trackable};

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "telemetry.post")]
struct Post {
    id: i64,
}

#[tracks]
fn load(id: i64) -> Post {
    Post { id }
}

#[cached(forever)]
fn page(id: i64) -> i64 {
    load(id).id
}

/// Collects the `dependency` field of events.
#[derive(Clone, Default)]
struct Dependencies(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> Layer<S> for Dependencies {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct Find<'a>(&'a Mutex<Vec<String>>);
        impl Visit for Find<'_> {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "dependency" {
                    self.0.lock().unwrap().push(format!("{value:?}"));
                }
            }
        }
        event.record(&mut Find(&self.0));
    }
}

#[test]
fn counters_and_events_report_misses_stores_and_why_entries_were_dropped() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder");
    let deps = Dependencies::default();
    let subscriber = tracing_subscriber::registry().with(deps.clone());
    tracing::subscriber::with_default(subscriber, || {
        page(1);
        page(1);
        invalidate(&load(1));
    });

    let counters: Vec<(String, Vec<String>, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n) => Some((
                key.key().name().to_owned(),
                key.key()
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect(),
                n,
            )),
            _ => None,
        })
        .collect();
    let count = |name: &str, label: &str| {
        counters
            .iter()
            .filter(|(n, labels, _)| n == name && labels.iter().any(|l| l == label))
            .map(|(_, _, v)| *v)
            .sum::<u64>()
    };
    assert_eq!(count("ultracache_misses_total", "cache=page"), 1);
    assert_eq!(count("ultracache_inserts_total", "cache=page"), 1);
    assert_eq!(count("ultracache_dropped_total", "cause=invalidated"), 1);

    let seen = deps.0.lock().unwrap().clone();
    assert!(
        seen.iter().any(|d| d == "telemetry.post:1"),
        "the event names the dependency: {seen:?}"
    );
}
