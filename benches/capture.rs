//! Change capture: how long from a committed write to the invalidation of
//! what was computed from the row (p50, p99), and what a captured write
//! costs against the same write on a table without triggers.
//!
//! `cargo bench --bench capture` (PostgreSQL: 127.0.0.1:5432 database
//! `test`, or `ULTRACACHE_PG_URL`; skipped without it).

use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use ultracache::{track_id, Cache, Trackable};

#[derive(Trackable)]
#[trackable(kind = "bench.capture.row")]
struct Row {
    id: i64,
}

static VALUES: Cache<i64, i64> = Cache::new("bench.capture");

const WRITES: i64 = 300;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(what: &str, mut lat: Vec<Duration>) {
    lat.sort();
    println!(
        "{what:<58} p50 {:>9.3} ms   p99 {:>9.3} ms",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3
    );
}

fn cache(id: i64) {
    VALUES.get_or_compute(id, || {
        track_id::<Row>(id);
        id
    });
}

/// Waits for the value of `id` to be dropped; the time it took.
async fn dropped(id: i64, since: Instant) -> Duration {
    while VALUES.get(&id).is_some() {
        assert!(since.elapsed() < Duration::from_secs(10), "never dropped");
        tokio::task::yield_now().await;
    }
    since.elapsed()
}

async fn sqlite() {
    let path = std::env::temp_dir().join(format!("ultracache-bench-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .busy_timeout(Duration::from_secs(5));
    // The app's pool: hooked, so its commits are applied before they return.
    let pool = ultracache::db::sqlite::pool_options()
        .max_connections(4)
        .connect_with(options.clone())
        .await
        .unwrap();
    // Another writer the capture is not told about (another process looks
    // the same to it): the background read finds its commits.
    let other = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    for t in ["rows", "plain"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {t} (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)"
        )))
        .execute(&pool)
        .await
        .unwrap();
        for id in 1..=WRITES {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {t} VALUES (?, 0)"
            )))
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        }
    }
    let capture = ultracache::db::sqlite::Capture::start(
        &pool,
        vec![ultracache::db::sqlite::Table::of::<Row>("rows", "id")],
    )
    .await
    .unwrap();

    // The cost of being captured: the same autocommit UPDATE on a table
    // without triggers, with them (the other writer: logged, applied by the
    // background read), and with them through the hooked pool (logged, read
    // back and applied before it returns), interleaved.
    let mut totals = [Duration::ZERO; 3];
    for round in 0..WRITES {
        for (i, (t, pool)) in [("plain", &pool), ("rows", &other), ("rows", &pool)]
            .into_iter()
            .enumerate()
        {
            let t0 = Instant::now();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {t} SET v = ? WHERE id = ?"
            )))
            .bind(round)
            .bind(round + 1)
            .execute(pool)
            .await
            .unwrap();
            totals[i] += t0.elapsed();
        }
    }
    capture.sync().await.unwrap();
    let us = |d: Duration| d.as_secs_f64() * 1e6 / WRITES as f64;
    println!(
        "SQLite UPDATE: uncaptured {:.1} µs; captured {:.1} µs ({:.2}×); captured and applied \
         before it returns {:.1} µs ({:.2}×)",
        us(totals[0]),
        us(totals[1]),
        totals[1].as_secs_f64() / totals[0].as_secs_f64(),
        us(totals[2]),
        totals[2].as_secs_f64() / totals[0].as_secs_f64(),
    );

    // In process: a raw autocommit write through the hooked pool.
    let mut lat = Vec::new();
    for id in 1..=WRITES {
        cache(id);
        let t0 = Instant::now();
        sqlx::query("UPDATE rows SET v = v + 1 WHERE id = ?")
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        assert!(VALUES.get(&id).is_none(), "applied before execute returned");
        lat.push(t0.elapsed());
    }
    report("SQLite, raw write (hooked pool), to dropped", lat);

    // In process: a plain sqlx transaction through the hooked pool.
    let mut lat = Vec::new();
    for id in 1..=WRITES {
        cache(id);
        let t0 = Instant::now();
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("UPDATE rows SET v = v + 1 WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(VALUES.get(&id).is_none(), "applied before commit returned");
        lat.push(t0.elapsed());
    }
    report("SQLite, transaction (hooked pool), to dropped", lat);

    let mut lat = Vec::new();
    for id in 1..=WRITES / 3 {
        cache(id);
        sqlx::query("UPDATE rows SET v = v + 1 WHERE id = ?")
            .bind(id)
            .execute(&other)
            .await
            .unwrap();
        lat.push(dropped(id, Instant::now()).await);
    }
    report("SQLite, another writer's commit returned, to dropped", lat);
    drop(capture);
    let _ = std::fs::remove_file(&path);
}

async fn postgres() {
    let url = std::env::var("ULTRACACHE_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let Ok(pool) = PgPoolOptions::new().max_connections(4).connect(&url).await else {
        println!("PostgreSQL: no server at {url}, skipped");
        return;
    };
    let other = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    for t in ["bench_capture_rows", "bench_capture_plain"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {t}")))
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {t} (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)"
        )))
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {t} SELECT g, 0 FROM generate_series(1, {WRITES}) g"
        )))
        .execute(&pool)
        .await
        .unwrap();
    }
    let capture = ultracache::db::postgres::Capture::start(
        &pool,
        vec![ultracache::db::postgres::Table::of::<Row>(
            "bench_capture_rows",
            "id",
        )],
    )
    .await
    .unwrap();
    let (mut with, mut without) = (Duration::ZERO, Duration::ZERO);
    for round in 0..WRITES {
        for (t, total) in [
            ("bench_capture_rows", &mut with),
            ("bench_capture_plain", &mut without),
        ] {
            let t0 = Instant::now();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {t} SET v = $1 WHERE id = $2"
            )))
            .bind(round)
            .bind(round + 1)
            .execute(&other)
            .await
            .unwrap();
            *total += t0.elapsed();
        }
    }
    capture.sync().await.unwrap();
    println!(
        "PostgreSQL: captured UPDATE {:.1} µs, uncaptured {:.1} µs: {:.2}× the uncaptured write",
        with.as_secs_f64() * 1e6 / WRITES as f64,
        without.as_secs_f64() * 1e6 / WRITES as f64,
        with.as_secs_f64() / without.as_secs_f64()
    );
    let mut lat = Vec::new();
    for id in 1..=WRITES {
        cache(id);
        let t0 = Instant::now();
        let mut tx = ultracache::db::begin(&pool).await.unwrap();
        sqlx::query("UPDATE bench_capture_rows SET v = v + 1 WHERE id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await
            .unwrap();
        capture.commit(tx).await.unwrap();
        assert!(VALUES.get(&id).is_none());
        lat.push(t0.elapsed());
    }
    report("PostgreSQL, write + capture.commit(tx), to dropped", lat);
    let mut lat = Vec::new();
    for id in 1..=WRITES {
        cache(id);
        sqlx::query("UPDATE bench_capture_rows SET v = v + 1 WHERE id = $1")
            .bind(id)
            .execute(&other)
            .await
            .unwrap();
        lat.push(dropped(id, Instant::now()).await);
    }
    report(
        "PostgreSQL, another client's commit returned, to dropped",
        lat,
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        sqlite().await;
        postgres().await;
    });
}
