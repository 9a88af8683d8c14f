//! `upkeep replicate` against a real S3 server (s3s-fs), with an app
//! holding the database: every commit goes off the machine, SIGTERM stops
//! it cleanly, and a new machine restores the newest commit, or any moment
//! before, from upkeep.yaml and the store alone.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::offsite::{S3, aws, new_machine, s3_offsite, with_offsite};
use crate::support::*;

const LAST: &str = "INSERT INTO users (email) VALUES ('last@example.com')";

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
    let replicate = Command::new(UPKEEP)
        .args(["replicate", "production", "--interval", "100ms"])
        .current_dir(sandbox.path(""))
        .envs(aws())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
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
    let replicate = Command::new(UPKEEP)
        .args([
            "--format",
            "json",
            "replicate",
            "production",
            "--interval",
            "100ms",
        ])
        .current_dir(sandbox.path(""))
        .envs(aws())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
    let start = || {
        Command::new(UPKEEP)
            .args(["replicate", "production", "--interval", "100ms"])
            .current_dir(sandbox.path(""))
            .envs(aws())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
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
}

/// Restores the newest commit shipped on a new machine: its users.
fn users_of_the_latest_on_a_new_machine(sandbox: Sandbox) -> i64 {
    let fresh = new_machine(sandbox);
    let restored = fresh.upkeep_with(&["restore", "production", "--offsite", "--latest"], &aws());
    restored.code(0);
    counts(&fresh.db("prod"))["users"]
}
