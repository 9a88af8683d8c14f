//! Points of continuous off-site copies (`offsite::points`): a live copy of
//! a running app's database stored as packed blocks with a full map, into a
//! real store (a `file://` folder here, through the same object-store
//! client as S3), restored on "a new machine" (a fresh `Points` that knows
//! only the store) and opened by DuckDB. A second point uploads only the
//! blocks that changed. With `.wal` segments shipped after each point, a
//! restore at any moment holds exactly the commits made before it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use upkeep::config::Config;
use upkeep::db::retention::{Policy, Rotation};
use upkeep::db::segment::{self, Next};
use upkeep::offsite::crypt::Identities;
use upkeep::offsite::points::{Keep, Named, Points};

use crate::live_copy::{SCHEMA, Writer, make, verify};
use crate::offsite::{age_keys, with_offsite};
use crate::support::*;

/// A live copy of production, held by an app that committed `WAL_ROWS`.
fn live_copy(sandbox: &Sandbox, db: &Path, n: usize) -> (PathBuf, u64) {
    let dest = sandbox.path(&format!("copies/{n}"));
    std::fs::create_dir_all(&dest).unwrap();
    let wal = PathBuf::from(format!("{}.wal", db.display()));
    let copied = upkeep::db::live::copy(db, &wal, &dest).unwrap();
    assert!(copied.wal.is_none(), "{copied:?}");
    (copied.db, copied.iteration)
}

fn config(sandbox: &Sandbox, encrypt_to: Option<&str>) -> Config {
    let store = sandbox.path("store");
    std::fs::create_dir_all(&store).unwrap();
    let mut offsite = format!("    url: file://{}\n", store.display());
    if let Some(key) = encrypt_to {
        offsite.push_str(&format!("    encrypt_to: [{key}]\n"));
    }
    with_offsite(sandbox, &offsite);
    Config::load(&sandbox.path("upkeep.yaml")).unwrap()
}

#[test]
fn a_point_restores_byte_for_byte_and_the_next_one_uploads_only_changed_blocks() {
    let sandbox = Sandbox::new();
    let db = crate::live_backup::big_v2_db(&sandbox);
    let config = config(&sandbox, None);
    let site = config.offsite().unwrap();
    let app = sandbox.app(&["hold", db.to_str().unwrap()]);
    let (first, iteration) = live_copy(&sandbox, &db, 0);
    let mut points = Points::open(&site, "production").unwrap();
    points.learn().unwrap();
    points.naming_key(&sandbox.path(".upkeep")).unwrap();
    let shipped = points
        .ship(
            &first,
            iteration,
            Timestamp::now(),
            &[],
            &mut Named::default(),
        )
        .unwrap();
    let size = std::fs::metadata(&first).unwrap().len();
    assert!(shipped.new_blocks > 100, "{shipped:?}");
    assert!(shipped.new_bytes <= size, "{shipped:?}");
    drop(app);

    // The app changes a few rows and closes (a checkpoint); then a second
    // point: only the blocks that changed go up.
    sql(
        &db,
        "UPDATE users SET email = 'changed@example.com' WHERE id = 7",
    );
    let app = sandbox.app(&["hold", db.to_str().unwrap()]);
    let (second, iteration) = live_copy(&sandbox, &db, 1);
    let again = points
        .ship(
            &second,
            iteration,
            Timestamp::now(),
            &[],
            &mut Named::default(),
        )
        .unwrap();
    assert_eq!(again.blocks, shipped.blocks, "{again:?}");
    assert!(
        again.new_blocks * 20 < again.blocks && again.new_bytes * 20 < size,
        "{again:?} after {shipped:?}"
    );
    drop(app);
    eprintln!("first point: {shipped:?}\nsecond point: {again:?}");

    // A new machine: only the store.
    let fresh = Points::open(&site, "production").unwrap();
    let keys = fresh.keys().unwrap();
    assert_eq!(keys.len(), 2);
    for (n, (key, copy)) in keys.iter().zip([&first, &second]).enumerate() {
        let dest = sandbox.path(&format!("restored-{n}.duckdb"));
        fresh.restore(key, None, &dest).unwrap();
        assert!(
            std::fs::read(&dest).unwrap() == std::fs::read(copy).unwrap(),
            "point {key} is not the copy it was shipped from"
        );
        std::fs::remove_file(&dest).unwrap();
    }
    let dest = sandbox.path("latest.duckdb");
    fresh.restore(&keys[1], None, &dest).unwrap();
    let restored = counts(&dest);
    assert_eq!(restored, counts(&db));
    assert!(restored["orders"] > 200_000, "{restored:?}");
}

#[test]
fn an_encrypted_point_needs_the_identity_and_a_damaged_pack_is_never_restored() {
    let sandbox = Sandbox::new();
    let (identity, public) = age_keys(&sandbox.path(""));
    let config = config(&sandbox, Some(&public));
    let site = config.offsite().unwrap();
    let db = sandbox.db("prod");
    let (copy, iteration) = live_copy(&sandbox, &db, 0);
    let mut points = Points::open(&site, "production").unwrap();
    points.learn().unwrap();
    points.naming_key(&sandbox.path(".upkeep")).unwrap();
    let shipped = points
        .ship(
            &copy,
            iteration,
            Timestamp::now(),
            &[],
            &mut Named::default(),
        )
        .unwrap();
    let identities = Identities::load(&identity).unwrap();
    let dest = sandbox.path("restored.duckdb");
    let error = points.restore(&shipped.key, None, &dest).unwrap_err();
    assert!(error.to_string().contains("identity"), "{error}");
    points
        .restore(&shipped.key, Some(&identities), &dest)
        .unwrap();
    assert_eq!(counts(&dest), counts(&db));
    // The plaintext is in no pack.
    let packs: Vec<PathBuf> = std::fs::read_dir(sandbox.path("store/production/packs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    let email = b"user17@example.com";
    for pack in &packs {
        let bytes = std::fs::read(pack).unwrap();
        assert!(!bytes.windows(email.len()).any(|w| w == email));
    }
    // One byte of a pack flipped: the restore fails, naming the pack.
    let mut bytes = std::fs::read(&packs[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&packs[0], bytes).unwrap();
    let again = sandbox.path("again.duckdb");
    let error = points
        .restore(&shipped.key, Some(&identities), &again)
        .unwrap_err();
    assert!(error.to_string().contains("is damaged"), "{error}");
}

/// A shipment: its moment (the key's), the last transaction committed
/// before it was read and after, and whether a checkpoint ended its `.wal`.
struct Shipment {
    at: i64,
    before: i64,
    after: i64,
    last: bool,
}

#[test]
fn a_restore_at_any_moment_holds_exactly_the_commits_made_before_it() {
    let sandbox = Sandbox::empty();
    sandbox.write("schema.sql", SCHEMA);
    let db = sandbox.path("data/prod.duckdb");
    make(&db, None);
    let config = config(&sandbox, None);
    let site = config.offsite().unwrap();
    let mut points = Points::open(&site, "production").unwrap();
    points.learn().unwrap();
    points.naming_key(&sandbox.path(".upkeep")).unwrap();
    let wal = PathBuf::from(format!("{}.wal", db.display()));
    let mut writer = Writer::start(&db, &sandbox.path("progress"));
    while writer.committed() < 25 {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Ship as a replicator would, every 20 ms, for 15 seconds: each point
    // a live copy onto the last one, which reads and names only what
    // changed.
    let scratch = sandbox.path("copy");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut base = upkeep::db::live::Base::new(&db, &scratch).unwrap();
    let mut named = Named::default();
    let (mut blocks, mut new_blocks) = (0, 0);
    let mut log: Vec<Shipment> = Vec::new();
    let mut current = None;
    let started = Instant::now();
    let (mut copies, mut points_taken) = (0, 0);
    // `scripts/replicate_soak.sh` runs it longer, with more moments.
    let soak = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(default)
    };
    let seconds = soak("UPKEEP_REPLICATE_SECONDS", 15);
    let moments = soak("UPKEEP_REPLICATE_MOMENTS", 30) as usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        let before = writer.committed();
        let Some((point, cursor, seq, iteration)) = current.as_mut() else {
            copies += 1;
            let copied = match upkeep::db::live::copy_onto(&db, &wal, &mut base) {
                Ok(copied) => copied,
                Err(upkeep::db::live::Refused::Unsettled { .. }) => continue,
                Err(error) => panic!("{error}"),
            };
            let taken_at = Timestamp::now();
            points_taken += 1;
            let after = writer.committed();
            let changed = base.take_changed();
            let shipped = points
                .ship(&copied.db, copied.iteration, taken_at, &changed, &mut named)
                .unwrap();
            new_blocks += shipped.new_blocks;
            blocks += shipped.blocks;
            let mut cursor = None;
            if let Some(kept) = &copied.wal {
                let Next::Commits {
                    bytes, cursor: at, ..
                } = segment::next(kept, None).unwrap()
                else {
                    panic!("the copy's .wal has no commits")
                };
                points
                    .ship_segment(&shipped.key, 0, taken_at, &bytes)
                    .unwrap();
                cursor = Some(at.following(copied.wal_file.unwrap()));
            }
            log.push(Shipment {
                at: taken_at.as_millisecond(),
                before,
                after,
                last: false,
            });
            current = Some((shipped.key, cursor, 1, copied.iteration));
            continue;
        };
        match segment::next(&wal, cursor.as_ref()).unwrap() {
            Next::Commits {
                bytes,
                cursor: at,
                last,
                ..
            } if at.iteration == Some(*iteration) => {
                let after = writer.committed();
                let read_at = Timestamp::now();
                points.ship_segment(point, *seq, read_at, &bytes).unwrap();
                *seq += 1;
                *cursor = Some(at);
                log.push(Shipment {
                    at: read_at.as_millisecond(),
                    before,
                    after,
                    last,
                });
            }
            Next::Nothing => {}
            // Another checkpoint's .wal, or this one ended: a new point.
            Next::Commits { .. } | Next::Ended(_) => current = None,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(writer);
    assert!(
        log.len() > 50 && copies > 3,
        "{} shipments, {copies} points",
        log.len()
    );

    // Moments: at each of 30 shipments spread over the run, and halfway to
    // the next one. A new machine: only the store.
    let fresh = Points::open(&site, "production").unwrap();
    let step = (log.len() / moments).max(1);
    let mut checked = 0;
    for (n, pair) in log.windows(2).enumerate().step_by(step) {
        for at in [pair[0].at, (pair[0].at + pair[1].at) / 2] {
            // What a restore at `at` must hold: the last shipment at or before it.
            let shipment = log.iter().rfind(|s| s.at <= at).unwrap();
            let dest = sandbox.path(&format!("restored/{n}-{at}/r.duckdb"));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            let moment = Timestamp::from_millisecond(at).unwrap();
            let restored = fresh.restore_at(moment, None, &dest).unwrap();
            let k =
                verify(&dest).unwrap_or_else(|problem| panic!("at {at} ({restored:?}): {problem}"));
            assert!(
                k <= shipment.after + 1 && (shipment.last || shipment.before <= k),
                "restored at {at} ({restored:?}): transactions 1 to {k}, but {} were committed \
                 before the last shipment before it, {} after",
                shipment.before,
                shipment.after
            );
            std::fs::remove_dir_all(dest.parent().unwrap()).unwrap();
            checked += 1;
        }
    }
    eprintln!(
        "{} shipments over {points_taken} points ({new_blocks} of {blocks} blocks new); \
         {checked} moments restored and verified",
        log.len()
    );

    // A segment damaged, then missing: never restored silently. A point
    // onto the same copy, then three commits shipped as segments 1 to 3
    // (the app: this process, with no checkpoint meanwhile); restored at
    // segment 3's moment.
    let app = duckdb::Connection::open(&db).unwrap();
    app.execute_batch("PRAGMA wal_autocheckpoint = '1GB'; CREATE TABLE tail (i INTEGER)")
        .unwrap();
    let copied = upkeep::db::live::copy_onto(&db, &wal, &mut base).unwrap();
    let changed = base.take_changed();
    let point = points
        .ship(
            &copied.db,
            copied.iteration,
            Timestamp::now(),
            &changed,
            &mut named,
        )
        .unwrap();
    // Segment 0: the copy's .wal, with the table's creation.
    let Next::Commits {
        bytes,
        cursor: kept,
        ..
    } = segment::next(copied.wal.as_ref().unwrap(), None).unwrap()
    else {
        panic!("the copy's .wal has no commits")
    };
    points
        .ship_segment(&point.key, 0, Timestamp::now(), &bytes)
        .unwrap();
    let mut cursor = Some(kept.following(copied.wal_file.unwrap()));
    let mut at = Timestamp::now();
    for seq in 1..=3 {
        app.execute(&format!("INSERT INTO tail VALUES ({seq})"), [])
            .unwrap();
        let Next::Commits {
            bytes,
            cursor: next,
            ..
        } = segment::next(&wal, cursor.as_ref()).unwrap()
        else {
            panic!("commit {seq} is not in the .wal")
        };
        std::thread::sleep(Duration::from_millis(2));
        at = Timestamp::now();
        points.ship_segment(&point.key, seq, at, &bytes).unwrap();
        cursor = Some(next);
    }
    drop(app);
    let stem = point
        .key
        .rsplit('/')
        .next()
        .unwrap()
        .trim_end_matches(".json");
    let second = walk(&sandbox.path(&format!("store/production/segments/{stem}")))
        .into_iter()
        .find(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("0000000001-")
        })
        .unwrap();
    let dest = sandbox.path("damaged/r.duckdb");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    fresh.restore_at(at, None, &dest).unwrap();
    assert_eq!(counts(&dest)["tail"], 3);
    std::fs::remove_file(&dest).unwrap();
    let mut bytes = std::fs::read(&second).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&second, bytes).unwrap();
    let error = fresh.restore_at(at, None, &dest).unwrap_err();
    assert!(error.to_string().contains("is damaged"), "{error}");
    std::fs::remove_file(&second).unwrap();
    std::fs::remove_file(&dest).unwrap();
    let error = fresh.restore_at(at, None, &dest).unwrap_err();
    assert!(error.to_string().contains("missing"), "{error}");
}

#[test]
fn prune_keeps_what_retention_keeps_and_every_pack_a_kept_point_needs() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    let config = config(&sandbox, None);
    let site = config.offsite().unwrap();
    let mut points = Points::open(&site, "production").unwrap();
    points.learn().unwrap();
    points.naming_key(&sandbox.path(".upkeep")).unwrap();
    let now = Timestamp::now();
    let hours = |h: i64| jiff::SignedDuration::from_hours(h);
    // Six points taken 6 days, 5, 4, 3 days, 30 hours and 1 hour ago, the
    // rows changed before each; segments 0 to 2 after each.
    let ages = [144, 120, 96, 72, 30, 1];
    let mut keys = Vec::new();
    let mut copies = Vec::new();
    for (n, age) in ages.iter().enumerate() {
        sql(
            &db,
            &format!("UPDATE users SET email = 'v{n}-' || id || '@example.com'; CHECKPOINT"),
        );
        let (copy, iteration) = live_copy(&sandbox, &db, n);
        let taken = now - hours(*age);
        let shipped = points
            .ship(&copy, iteration, taken, &[], &mut Named::default())
            .unwrap();
        for seq in 0..3 {
            let read_at = taken + jiff::SignedDuration::from_mins(seq);
            points
                .ship_segment(&shipped.key, seq as u64, read_at, b"commits")
                .unwrap();
        }
        keys.push(shipped.key);
        copies.push(copy);
    }
    let segments = |key: &str| {
        let stem = key.rsplit('/').next().unwrap().trim_end_matches(".json");
        walk(&sandbox.path(&format!("store/production/segments/{stem}"))).len()
    };
    let packs = || walk(&sandbox.path("store/production/packs")).len();
    let packs_before = packs();
    // Every moment of the last 48 hours: the points of 30 hours and 1 hour
    // ago, and the base before them (3 days ago). Older: 4 daily points,
    // of which the one of 4 days ago is not within 48 hours.
    let keep = Keep {
        rotation: Rotation::Calendar(Policy {
            daily: Some(4),
            ..Policy::default()
        }),
        wal_retention: Duration::from_secs(48 * 3600),
        grace: Duration::from_secs(3600),
    };
    let pruned = points.prune(&keep, now).unwrap();
    assert_eq!(pruned.points, keys[..2], "{pruned:?}");
    // All of the two deleted points' segments; 1 and 2 of the trimmed one.
    assert_eq!(pruned.segments, 2 * 3 + 2, "{pruned:?}");
    // The packs are younger than the grace period: none goes yet.
    assert_eq!((pruned.packs, packs()), (0, packs_before), "{pruned:?}");
    assert_eq!(
        keys.iter().map(|key| segments(key)).collect::<Vec<_>>(),
        [0, 0, 1, 3, 3, 3]
    );
    let fresh = Points::open(&site, "production").unwrap();
    assert_eq!(fresh.keys().unwrap(), keys[2..]);
    // Once the grace period is over (an hour later: the packs were written
    // after `now`), the packs only deleted points used go.
    let later = now + hours(1);
    let pruned = points.prune(&keep, later).unwrap();
    assert!(
        pruned.points.is_empty() && pruned.segments == 0,
        "{pruned:?}"
    );
    assert!(pruned.packs > 0 && packs() < packs_before, "{pruned:?}");
    // Every point kept restores byte for byte; nothing is missing.
    for (key, copy) in keys[2..].iter().zip(&copies[2..]) {
        let dest = sandbox.path("restored.duckdb");
        fresh.restore(key, None, &dest).unwrap();
        assert!(
            std::fs::read(&dest).unwrap() == std::fs::read(copy).unwrap(),
            "{key}"
        );
        std::fs::remove_file(&dest).unwrap();
    }
    let findings = fresh.verify(true).unwrap();
    assert!(
        findings.len() == 4 && findings.iter().all(|finding| finding.ok),
        "{findings:?}"
    );
    // Listing: any moment from the base on; the trimmed point alone before.
    let span = fresh.span(keep.wal_retention).unwrap().unwrap();
    let moment = |age: i64| {
        Timestamp::from_millisecond((now - hours(age)).as_millisecond())
            .unwrap()
            .to_string()
    };
    assert_eq!((span.points, span.from), (4, moment(72)));
    assert_eq!(span.older, [moment(96)]);
    // The second point's blocks again (the pack of those it changed is
    // gone, the first pack stays: later points use some of its blocks). A
    // replicator that forgot them sends them again, so the new point
    // restores.
    let again = points
        .ship(&copies[1], 1, now, &[], &mut Named::default())
        .unwrap();
    assert!(again.new_blocks > 0, "{again:?}");
    let dest = sandbox.path("again.duckdb");
    Points::open(&site, "production")
        .unwrap()
        .restore(&again.key, None, &dest)
        .unwrap();
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(&copies[1]).unwrap());
    // Nothing more to do.
    assert!(points.prune(&keep, later).unwrap().is_empty());
}
