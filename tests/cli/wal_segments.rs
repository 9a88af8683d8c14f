//! `.wal` segments (`db::segment`) of a database that a writer process
//! keeps changing: the live-copy torture test's writer and workload (single
//! rows, bulk inserts written into the file before the `.wal` names them,
//! updates over every row group, deletes, `ADD COLUMN`, a manual
//! `CHECKPOINT` every ten transactions and automatic ones).
//!
//! A point is a live copy of the database (`db::live`), with the `.wal` it
//! kept. Then segments are read from the live `.wal` as the writer goes on,
//! as continuous off-site copies ship them. After each segment, the point
//! with every segment read so far put end to end as its `.wal` is opened by
//! DuckDB: it must hold exactly the state after some transaction k, with k
//! at least the last transaction committed before the segment was read
//! (unless a checkpoint began: later commits go to the next `.wal`) and at
//! most the first committed after. A checkpoint ends the point's `.wal`;
//! then a new point is taken.
//!
//! `UPKEEP_SEGMENTS` (default 60) sets how many segments are verified.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use upkeep::db::segment::{self, Cursor, Next};

use crate::live_copy::{SCHEMA, Writer, env_number, make, verify};
use crate::support::Sandbox;

/// A point: the live copy's file, and the `.wal` to replay onto it so far.
struct Point {
    db: PathBuf,
    iteration: u64,
    wal: Vec<u8>,
    cursor: Option<Cursor>,
}

#[test]
fn segments_put_after_their_point_replay_to_exactly_the_commits_shipped() {
    let wanted = env_number("UPKEEP_SEGMENTS", 60);
    let sandbox = Sandbox::empty();
    sandbox.write("schema.sql", SCHEMA);
    let db = sandbox.path("data/live.duckdb");
    make(&db, None);
    let wal = PathBuf::from(format!("{}.wal", db.display()));
    let mut writer = Writer::start(&db, &sandbox.path("progress"));
    let started = Instant::now();
    let (mut point, mut points, mut verified, mut ended, mut bounded) =
        (None::<Point>, 0usize, 0usize, Vec::new(), 0usize);
    while verified < wanted {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{verified} segments verified in 10 minutes ({points} points; ended: {ended:?})"
        );
        let Some(current) = point.as_mut() else {
            let dest = sandbox.path(&format!("points/{points}"));
            std::fs::create_dir_all(&dest).unwrap();
            let copied = match upkeep::db::live::copy(&db, &wal, &dest) {
                Ok(copied) => copied,
                Err(upkeep::db::live::Refused::Unsettled { .. }) => continue,
                Err(error) => panic!("point {points}: {error}"),
            };
            points += 1;
            let (wal, cursor) = match &copied.wal {
                Some(kept) => match segment::next(kept, None).unwrap() {
                    Next::Commits { bytes, cursor, .. } => (bytes, Some(cursor)),
                    other => panic!("the point's own .wal: {other:?}"),
                },
                None => (Vec::new(), None),
            };
            point = Some(Point {
                db: copied.db,
                iteration: copied.iteration,
                wal,
                cursor,
            });
            continue;
        };
        let before = writer.committed();
        match segment::next(&wal, current.cursor.as_ref()).unwrap() {
            Next::Commits {
                bytes,
                cursor,
                last,
                ..
            } => {
                let after = writer.committed();
                if cursor.iteration != Some(current.iteration) {
                    // The first commits of a later checkpoint's `.wal`.
                    ended.push("a later checkpoint's .wal".to_string());
                    point = None;
                    continue;
                }
                current.wal.extend(bytes);
                current.cursor = Some(cursor);
                let restored = sandbox.path("restored");
                let _ = std::fs::remove_dir_all(&restored);
                std::fs::create_dir_all(&restored).unwrap();
                let into = restored.join("r.duckdb");
                std::fs::copy(&current.db, &into).unwrap();
                std::fs::write(restored.join("r.duckdb.wal"), &current.wal).unwrap();
                let k = verify(&into).unwrap_or_else(|problem| {
                    panic!("segment {verified} after point {points}: {problem}")
                });
                assert!(
                    k <= after + 1 && (last || before <= k),
                    "point {points} with its segments holds transactions 1 to {k}, but {before} were \
                     committed before the last segment was read and {after} after"
                );
                bounded += usize::from(!last);
                verified += 1;
            }
            Next::Nothing => std::thread::sleep(Duration::from_millis(5)),
            Next::Ended(why) => {
                ended.push(why);
                point = None;
            }
        }
    }
    eprintln!(
        "{verified} segments verified over {points} points, the writer at transaction {}; \
         {} ended .wals",
        writer.committed(),
        ended.len()
    );
    // The workload checkpoints often: several points, each .wal ended by
    // a checkpoint, and most segments held to both bounds.
    assert!(
        points > 1 && !ended.is_empty(),
        "{points} points: no checkpoint met"
    );
    assert!(
        bounded * 2 > verified,
        "{bounded} of {verified} bounded below"
    );
}
