//! `upkeep replicate` against a real S3 server (s3s-fs), with an app
//! holding the database: every commit goes off the machine, SIGTERM stops
//! it cleanly, and a new machine restores the newest commit, or any moment
//! before, from upkeep.yaml and the store alone.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::offsite::{S3, aws, new_machine, s3_offsite, with_offsite};
use crate::support::*;

const LAST: &str = "INSERT INTO users (email) VALUES ('last@example.com')";

/// `upkeep BEFORE.. replicate production --interval 100ms` in `sandbox`,
/// with the test store's credentials; its output to `stdout`.
fn replicator(sandbox: &Sandbox, before: &[&str], stdout: impl Into<Stdio>) -> Child {
    Command::new(UPKEEP)
        .args(before)
        .args(["replicate", "production", "--interval", "100ms"])
        .current_dir(sandbox.path(""))
        .envs(aws())
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until the store holds `count` points of production.
fn points(s3: &S3, count: usize) {
    let started = Instant::now();
    loop {
        let held = s3
            .keys()
            .iter()
            .filter(|key| key.contains("production/points/"))
            .count();
        if held >= count {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{held} point(s) in the store after a minute: {:?}",
            s3.keys()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An app holding production with `WAL_ROWS` in its `.wal`; a replicator
/// runs until a point is in the store, then is stopped (SIGTERM), and the
/// app too.
fn replicated_once(sandbox: &Sandbox, s3: &S3) {
    let db = sandbox.db("prod");
    let mut app = sandbox.app(&["write", db.to_str().unwrap(), WAL_ROWS]);
    let replicate = replicator(sandbox, &[], Stdio::null());
    points(s3, 1);
    unsafe { libc::kill(replicate.id() as i32, libc::SIGTERM) };
    assert!(replicate.wait_with_output().unwrap().status.success());
    let _ = app.child.kill();
    let _ = app.child.wait();
}

#[test]
fn every_commit_goes_off_site_and_a_new_machine_restores_the_newest_or_any_moment() {
    let s3 = S3::start();
    let sandbox = Sandbox::new();
    with_offsite(&sandbox, &s3_offsite(&s3));
    let db = sandbox.db("prod");
    // 3,000 users in the file, 25 in the .wal; one more as it stops.
    let until = sandbox.path("stop-now");
    let mut app = sandbox.app(&[
        "write-until",
        db.to_str().unwrap(),
        WAL_ROWS,
        until.to_str().unwrap(),
        LAST,
    ]);
    let replicate = replicator(&sandbox, &["--format", "json"], Stdio::piped());
    points(&s3, 1);
    // A second replicator of the same environment is refused.
    sandbox
        .upkeep_with(&["replicate", "production"], &aws())
        .code(4)
        .stderr_has("one replicator per environment");
    std::thread::sleep(Duration::from_millis(1100));
    let before_last = jiff::Timestamp::now();
    std::thread::sleep(Duration::from_millis(1100));
    // The app's last commit, then a clean close (a checkpoint): the .wal
    // ends, a new point is taken.
    std::fs::write(&until, "").unwrap();
    assert!(app.child.wait().unwrap().success());
    points(&s3, 2);
    // SIGTERM: ships what is pending, then exits 0.
    unsafe { libc::kill(replicate.id() as i32, libc::SIGTERM) };
    let out = replicate.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("\"kind\":\"point\""), "{stdout}");

    // A new machine: upkeep.yaml and the store only.
    let fresh = new_machine(sandbox);
    fresh
        .upkeep_with(&["backups", "production", "--offsite"], &aws())
        .code(0)
        .stdout_has("restorable to any moment from");
    let restored = fresh.upkeep_with(&["restore", "production", "--offsite", "--latest"], &aws());
    restored.code(0).stdout_has("downloaded");
    assert_eq!(counts(&fresh.db("prod"))["users"], 3_026, "{restored}");
    // Before the last commit: the 25 of the .wal, without the last one.
    let at = before_last.to_string();
    let restored = fresh.upkeep_with(&["restore", "production", "--offsite", "--at", &at], &aws());
    restored.code(0);
    assert_eq!(counts(&fresh.db("prod"))["users"], 3_025, "{restored}");
    // Before anything was shipped: refused, nothing changed.
    let restored = fresh.upkeep_with(
        &[
            "restore",
            "production",
            "--offsite",
            "--at",
            "2001-01-01T00:00:00Z",
        ],
        &aws(),
    );
    assert_ne!(restored.code, Some(0), "{restored}");
    assert_eq!(counts(&fresh.db("prod"))["users"], 3_025, "{restored}");
}

#[test]
fn bad_intervals_and_a_missing_database_are_refused_before_anything_is_sent() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path("store")).unwrap();
    with_offsite(
        &sandbox,
        &format!("    url: file://{}\n", sandbox.path("store").display()),
    );
    for (args, says) in [
        (
            &["--interval", "10ms"][..],
            "`interval: 10ms` is shorter than 100ms",
        ),
        (
            &["--point-every", "1ms"][..],
            "`point_every: 1ms` is shorter than `interval: 1s`",
        ),
        (&["--interval", "soon"][..], "invalid value"),
    ] {
        let mut all = vec!["replicate", "production"];
        all.extend(args);
        sandbox.upkeep(&all).code(2).stderr_has(says);
    }
    // The same settings in upkeep.yaml: refused where they are written.
    let offsite = format!("    url: file://{}\n", sandbox.path("store").display());
    for (continuous, says) in [
        (
            "{ wal_retention: 1m }",
            "`wal_retention: 1m` is shorter than `point_every: 15m`",
        ),
        ("{ interval: 0s }", "leaves no time at all"),
        ("{ every: 1s }", "unknown field `every`"),
    ] {
        with_offsite(
            &sandbox,
            &format!("{offsite}    continuous: {continuous}\n"),
        );
        sandbox
            .upkeep(&["replicate", "production"])
            .code(2)
            .stderr_has("upkeep.yaml")
            .stderr_has(says);
    }
    with_offsite(&sandbox, &offsite);
    std::fs::remove_file(sandbox.db("prod")).unwrap();
    sandbox
        .upkeep(&["replicate", "production"])
        .code(2)
        .stderr_has("no database file");
    assert_eq!(std::fs::read_dir(sandbox.path("store")).unwrap().count(), 0);
}

#[test]
fn a_replicator_killed_at_any_moment_starts_again_and_leaves_nothing_behind() {
    let s3 = S3::start();
    let sandbox = Sandbox::new();
    with_offsite(&sandbox, &s3_offsite(&s3));
    let db = sandbox.db("prod");
    let _app = sandbox.app(&["write", db.to_str().unwrap(), WAL_ROWS]);
    let start = || replicator(&sandbox, &[], Stdio::null());
    // kill -9 while it starts, copies, uploads, or waits.
    for delay in [5u64, 40, 120, 300, 700] {
        let mut child = start();
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let child = start();
    let shipped = s3
        .keys()
        .iter()
        .filter(|key| key.contains("production/points/"))
        .count();
    points(&s3, shipped + 1);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait_with_output().unwrap().status.success());
    // The killed replicators' live copies were swept.
    let left: Vec<_> = std::fs::read_dir(sandbox.path("backups"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(users_of_the_latest_on_a_new_machine(sandbox), 3_025);
}

#[test]
fn a_push_never_takes_the_continuous_copies_for_leftovers() {
    let s3 = S3::start();
    let sandbox = Sandbox::new();
    with_offsite(&sandbox, &s3_offsite(&s3));
    replicated_once(&sandbox, &s3);
    // Hours old, as a push's cleanup counts leftovers of crashed uploads.
    let stored = s3.keys();
    let aged = Command::new("sh")
        .arg("-c")
        .arg("find \"$0\" -type f -exec touch -d '3 hours ago' {} +")
        .arg(s3.root.path())
        .status()
        .unwrap();
    assert!(aged.success());
    sandbox.upkeep(&["backup", "production"]).code(0);
    sandbox.upkeep_with(&["push", "production"], &aws()).code(0);
    let kept = s3.keys();
    for key in stored.iter().filter(|key| key.contains("production/")) {
        assert!(kept.contains(key), "the push removed {key}");
    }
    assert_eq!(users_of_the_latest_on_a_new_machine(sandbox), 3_025);
}

#[test]
fn verify_finds_a_damaged_pack_and_a_missing_naming_key_without_the_identity() {
    let s3 = S3::start();
    let sandbox = Sandbox::new();
    with_offsite(&sandbox, &s3_offsite(&s3));
    replicated_once(&sandbox, &s3);
    let verify = |args: &[&str]| {
        let mut all = vec!["verify", "production", "--offsite"];
        all.extend(args);
        sandbox.upkeep_with(&all, &aws())
    };
    verify(&[]).code(0).stdout_has("point verified");
    verify(&["--read-data"])
        .code(0)
        .stdout_has("read back and hashed");
    // The newest moment restored into a scratch folder and checked; then
    // the folder is gone.
    verify(&["--restore-test"])
        .code(0)
        .stdout_has("the deep check passed");
    let left: Vec<_> = std::fs::read_dir(sandbox.path("backups"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // One byte of a pack: same size, so only reading it finds it.
    let pack = s3
        .keys()
        .into_iter()
        .find(|key| key.contains("production/packs/"))
        .unwrap();
    let path = s3.path(&pack);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    verify(&[]).code(0);
    verify(&["--read-data"]).code(1).stdout_has("is damaged");
    verify(&["--restore-test"])
        .code(1)
        .stdout_has("restore test of the newest moment")
        .stdout_has("is damaged");
    let key = s3
        .keys()
        .into_iter()
        .find(|key| key.contains("production/naming-keys/"))
        .unwrap();
    std::fs::remove_file(s3.path(&key)).unwrap();
    verify(&[]).code(1).stdout_has("naming key");
}

#[test]
fn encrypted_continuous_copies_restore_only_with_the_identity() {
    let s3 = S3::start();
    let sandbox = Sandbox::new();
    let (identity, public) = crate::offsite::age_keys(&sandbox.path(""));
    with_offsite(
        &sandbox,
        &format!("{}    encrypt_to: [{public}]\n", s3_offsite(&s3)),
    );
    replicated_once(&sandbox, &s3);
    // No plaintext row in the store.
    for key in s3.keys() {
        let bytes = s3.object(&key);
        assert!(
            !bytes.windows(18).any(|w| w == b"user17@example.com"),
            "{key} holds plaintext"
        );
    }
    let kept = std::fs::read(&identity).unwrap();
    let fresh = new_machine(sandbox);
    let restore = ["restore", "production", "--offsite", "--latest"];
    fresh
        .upkeep_with(&restore, &aws())
        .code(2)
        .stderr_has("--identity");
    let key = fresh.path("key.txt");
    std::fs::write(&key, kept).unwrap();
    let mut with_key = restore.to_vec();
    with_key.extend(["--identity", key.to_str().unwrap()]);
    let restored = fresh.upkeep_with(&with_key, &aws());
    restored.code(0);
    assert_eq!(counts(&fresh.db("prod"))["users"], 3_025, "{restored}");
    // The restore test decrypts with the identity, and only with it; so
    // does --read-data of the newest point's blocks. A point named that is
    // not there is a failure.
    let verify = |args: &[&str]| {
        let mut all = vec!["verify", "production", "--offsite"];
        all.extend(args);
        fresh.upkeep_with(&all, &aws())
    };
    let key = key.to_str().unwrap();
    verify(&["--restore-test"]).code(1).stdout_has("identity");
    verify(&["--restore-test", "--identity", key])
        .code(0)
        .stdout_has("the deep check passed");
    verify(&["--read-data", "--identity", key])
        .code(0)
        .stdout_has("read back and decrypted");
    verify(&["--read-data", "--identity", key, "--point", "1-1.json"])
        .code(1)
        .stdout_has("no point `1-1.json`");
    verify(&["--read-data", "--point", "newest"])
        .code(1)
        .stdout_has("identity");
}

/// Restores the newest commit shipped on a new machine: its users.
fn users_of_the_latest_on_a_new_machine(sandbox: Sandbox) -> i64 {
    let fresh = new_machine(sandbox);
    let restored = fresh.upkeep_with(&["restore", "production", "--offsite", "--latest"], &aws());
    restored.code(0);
    counts(&fresh.db("prod"))["users"]
}

/// An order the test committed through the app: when it was first sent,
/// and when the app said it was committed (Unix ms).
struct Order {
    id: i64,
    sent: i64,
    acked: i64,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// The first order the test makes: above the sandbox's own orders.
const FIRST_ORDER: i64 = 1_000_000;

/// Posts orders `FIRST_ORDER`, and on, to the app on `port` until `stop`, each until
/// the app commits it (a retry of one it committed without answering is
/// a no-op), as an app's users do; the app may be down meanwhile.
fn order_writer(
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<Order>> {
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut orders = Vec::new();
        let mut id = FIRST_ORDER;
        let mut sent = None;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let first = *sent.get_or_insert_with(now_ms);
            let body = id.to_string();
            let answer = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut stream| {
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                write!(
                    stream,
                    "POST /order HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )?;
                let mut text = String::new();
                stream.read_to_string(&mut text)?;
                Ok(text)
            });
            if answer.is_ok_and(|text| text.starts_with("HTTP/1.1 200")) {
                orders.push(Order {
                    id,
                    sent: first,
                    acked: now_ms(),
                });
                id += 1;
                sent = None;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        orders
    })
}

/// The orders the test made in a database, and whether its `users` has
/// the column the release added.
fn orders_and_phone(db: &std::path::Path) -> (Vec<i64>, bool) {
    let conn = duckdb::Connection::open(db).unwrap();
    let ids = conn
        .prepare("SELECT id FROM orders WHERE note = 'live' ORDER BY id")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<Vec<i64>, _>>()
        .unwrap();
    let phone: i64 = conn
        .query_row(
            "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'users' AND column_name = 'phone'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    (ids, phone == 1)
}

#[test]
fn an_update_and_a_restore_while_replicating_restore_at_any_moment_as_it_was() {
    let s3 = S3::start();
    let app = crate::update::App::new();
    let sandbox = &app.sandbox;
    // The app's upkeep.yaml is in its repository: the off-site store goes
    // into a copy beside it (not tracked), which every command here names.
    let config = std::fs::read_to_string(sandbox.path("upkeep.yaml")).unwrap();
    let offsite = s3_offsite(&s3);
    sandbox.write(
        "offsite.yaml",
        &config.replace(
            "  dir: backups\n",
            &format!("  dir: backups\n  offsite:\n{offsite}"),
        ),
    );
    let with_config = ["--config", "offsite.yaml"];
    let port: u16 = app
        .vars()
        .iter()
        .find_map(|var| var.strip_prefix("APP_PORT="))
        .unwrap()
        .parse()
        .unwrap();
    let log = sandbox.path("replicate.jsonl");
    let mut replicating = replicator(
        sandbox,
        &["--config", "offsite.yaml", "--format", "json"],
        std::fs::File::create(&log).unwrap(),
    );
    points(&s3, 1);
    let first_point = now_ms();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = order_writer(port, stop.clone());
    std::thread::sleep(Duration::from_secs(4));

    // An update with a migration, while orders come in.
    app.release(
        "v2",
        &[("backend/migrations/0001_phone.sql", crate::update::PHONE)],
    );
    let update = (now_ms(), {
        app.update_with(&with_config, &[])
            .code(0)
            .stdout_has("applied 0001_phone.sql");
        now_ms()
    });
    std::thread::sleep(Duration::from_secs(4));
    // Then the app is killed (kill -9), and the newest backup restored
    // (the update's restore point, from before the migration).
    let restore_point = sandbox.backups("production").pop().unwrap();
    let (in_restore_point, _) = orders_and_phone(&restore_point);
    assert!(
        !in_restore_point.is_empty(),
        "{restore_point:?} holds no order"
    );
    let pid: i32 = crate::update::app_pid(&app).parse().unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    while std::path::Path::new(&format!("/proc/{pid}/status")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .contains("State:\tZ")
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let restore_started = now_ms();
    sandbox
        .upkeep(&[
            "--config",
            "offsite.yaml",
            "restore",
            "production",
            "--latest",
        ])
        .code(0);
    app.start();
    let restore = (restore_started, now_ms());
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let orders = writer.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let end = now_ms();
    unsafe { libc::kill(replicating.id() as i32, libc::SIGTERM) };
    assert!(replicating.wait().unwrap().success());
    let shipped = std::fs::read_to_string(&log).unwrap();
    assert!(shipped.contains(r#""kind":"paused""#), "{shipped}");
    assert!(
        orders.len() > 100 && orders.iter().any(|order| order.sent > restore.1),
        "{} orders",
        orders.len()
    );

    // A new machine restores moments every 300 ms from the first point
    // to the end: each one exactly a state the database was in.
    let fresh = Sandbox::empty();
    fresh.write(
        "upkeep.yaml",
        &format!("databases:\n  production: data/prod.duckdb\nbackups:\n  dir: backups\n  offsite:\n{offsite}"),
    );
    let slack = 200 + 2000;
    let acked_by = |t: i64| {
        orders
            .iter()
            .filter(move |o| o.acked <= t - slack)
            .map(|o| o.id)
    };
    let sent_after = |t: i64| orders.iter().filter(|o| o.sent > t).map(|o| o.id).min();
    let mut at = first_point + 500;
    let (mut checked, mut bounded) = (0, [0; 3]);
    while at < end {
        let moment = jiff::Timestamp::from_millisecond(at).unwrap().to_string();
        // A new machine each time: no database, no backups.
        let _ = std::fs::remove_dir_all(fresh.path("data"));
        let _ = std::fs::remove_dir_all(fresh.path("backups"));
        fresh
            .upkeep_with(
                &["restore", "production", "--offsite", "--at", &moment],
                &aws(),
            )
            .code(0);
        let (ids, phone) = orders_and_phone(&fresh.db("prod"));
        let context = format!(
            "at {at} (update {update:?}, restore {restore:?}): orders {:?}..{:?} ({} of them), phone {phone}",
            ids.first(),
            ids.last(),
            ids.len()
        );
        // Never an order first sent after the moment.
        if let Some(later) = sent_after(at) {
            assert!(ids.iter().all(|id| *id < later), "{context}");
        }
        let after_restore = at > restore.1 + slack;
        let before_restore = at < restore.0;
        if before_restore {
            // Orders FIRST_ORDER to k, with no gap.
            assert!(
                ids.iter()
                    .enumerate()
                    .all(|(n, id)| *id == FIRST_ORDER + n as i64),
                "{context}"
            );
            if at < update.0 {
                assert!(!phone, "{context}");
            }
            if at > update.1 + slack {
                assert!(phone, "{context}");
            }
            // Every order the app committed long enough before: except
            // while an update runs, whose app stops and whose last
            // commits may come off-site with the point after it.
            if !(update.0..update.1 + slack).contains(&at) {
                assert!(acked_by(at).all(|id| ids.contains(&id)), "{context}");
                bounded[usize::from(at > update.1)] += usize::from(acked_by(at).next().is_some());
            }
        }
        if after_restore {
            // The restore point's orders, then each order since, no gap.
            assert!(!phone, "{context}");
            assert!(ids.starts_with(&in_restore_point), "{context}");
            let since = &ids[in_restore_point.len()..];
            let first = orders
                .iter()
                .find(|o| o.acked > restore.0)
                .map_or(0, |o| o.id);
            assert!(
                since
                    .iter()
                    .enumerate()
                    .all(|(n, id)| *id == first + n as i64),
                "{context}: after the restore point's, {since:?}"
            );
            assert!(
                acked_by(at)
                    .filter(|id| *id >= first)
                    .all(|id| ids.contains(&id)),
                "{context}"
            );
            bounded[2] += usize::from(acked_by(at).any(|id| id >= first));
        }
        checked += 1;
        at += 300;
    }
    eprintln!(
        "{checked} moments restored and checked, {} orders; moments that had to hold orders \
         before the update, after it, after the restore: {bounded:?}",
        orders.len()
    );
    assert!(bounded.iter().all(|count| *count >= 3), "{bounded:?}");
}

#[test]
fn an_interrupted_restore_resumes_and_fetches_only_what_it_lacks() {
    let s3 = S3::start();
    let sandbox = Sandbox::new();
    with_offsite(&sandbox, &s3_offsite(&s3));
    crate::live_backup::big_v2_db(&sandbox);
    replicated_once(&sandbox, &s3);
    let expected = counts(&sandbox.db("prod"));
    let fresh = new_machine(sandbox);
    let partial = fresh.path("backups/.resume-production/moment.duckdb");
    let restore = ["restore", "production", "--offsite", "--latest"];
    // kill -9 once the point's blocks are coming in.
    let mut interrupted = false;
    for delay in [50u64, 100, 200, 300, 500, 800] {
        let mut child = Command::new(UPKEEP)
            .args(restore)
            .current_dir(fresh.path(""))
            .envs(aws())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        let killed = child.wait().unwrap().code().is_none();
        if killed && std::fs::metadata(&partial).is_ok_and(|meta| meta.len() > 0) {
            interrupted = true;
            break;
        }
        let _ = std::fs::remove_dir_all(fresh.path("data"));
        let _ = std::fs::remove_dir_all(fresh.path("backups"));
    }
    assert!(interrupted, "no restore was killed while it fetched");
    let again = fresh.upkeep_with(&restore, &aws());
    again.code(0).stdout_has("resumed: ");
    assert_eq!(counts(&fresh.db("prod")), expected, "{again}");
    assert!(!partial.parent().unwrap().exists(), "{again}");
}

#[test]
fn encrypted_continuous_copies_through_seaweedfs_restore_on_a_new_machine() {
    let weed = crate::offsite::Seaweed::start();
    let sandbox = Sandbox::new();
    let (identity, public) = crate::offsite::age_keys(&sandbox.path(""));
    with_offsite(
        &sandbox,
        &format!(
            "    url: s3://{}/upkeep\n    endpoint: http://127.0.0.1:{}\n    encrypt_to: [{public}]\n",
            crate::offsite::BUCKET,
            weed.s3_port
        ),
    );
    weed.until_listed(&sandbox);
    let db = sandbox.db("prod");
    let mut app = sandbox.app(&["write", db.to_str().unwrap(), WAL_ROWS]);
    let replicate = replicator(&sandbox, &["--format", "json"], Stdio::piped());
    let started = Instant::now();
    while !sandbox
        .upkeep_with(&["backups", "production", "--offsite"], &aws())
        .stdout
        .contains("restorable to any moment")
    {
        assert!(started.elapsed() < Duration::from_secs(60), "no point");
        std::thread::sleep(Duration::from_millis(200));
    }
    unsafe { libc::kill(replicate.id() as i32, libc::SIGTERM) };
    let output = replicate.wait_with_output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains(r#""kind":"point""#));
    let _ = app.child.kill();
    let _ = app.child.wait();
    let expected = counts(&db);
    // Without the key: every pack and segment read back and hashed.
    sandbox
        .upkeep_with(
            &["verify", "production", "--offsite", "--read-data"],
            &aws(),
        )
        .code(0)
        .stdout_has("point verified, its packs and segments read back and hashed");
    let kept = std::fs::read(&identity).unwrap();
    let fresh = new_machine(sandbox);
    let key = fresh.path("key.txt");
    std::fs::write(&key, kept).unwrap();
    let key = key.to_str().unwrap();
    fresh
        .upkeep_with(
            &[
                "verify",
                "production",
                "--offsite",
                "--restore-test",
                "--identity",
                key,
            ],
            &aws(),
        )
        .code(0)
        .stdout_has("the deep check passed");
    fresh
        .upkeep_with(
            &[
                "restore",
                "production",
                "--offsite",
                "--latest",
                "--identity",
                key,
            ],
            &aws(),
        )
        .code(0);
    assert_eq!(counts(&fresh.db("prod")), expected);
}

#[test]
fn a_command_waits_for_a_point_in_progress_and_no_point_starts_while_it_runs() {
    let sandbox = Sandbox::new();
    let state = sandbox.path(".upkeep");
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // A replicator's point in progress: the shared side of `rounds`.
    let point = upkeep::lock::round(&state)
        .unwrap()
        .expect("no command holds the lock yet");
    // A run (it may change the database) takes upkeep's lock, then waits
    // for the point before its first step.
    sandbox.pipeline(
        "slow",
        "env: production\nsteps:\n- run: \"touch started; sleep 2\"\n",
    );
    let mut run = Command::new(UPKEEP)
        .args(["run", "slow"])
        .current_dir(sandbox.path(""))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the run never took the lock", &|| {
        upkeep::lock::holder(&state).is_some()
    });
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !sandbox.path("started").exists(),
        "a step ran during the point"
    );
    drop(point);
    wait_for("the run never started once the point ended", &|| {
        sandbox.path("started").exists()
    });
    // While it runs, no point starts; once it ends, one may.
    assert!(upkeep::lock::round(&state).unwrap().is_none());
    assert!(run.wait().unwrap().success());
    assert!(upkeep::lock::round(&state).unwrap().is_some());
}
