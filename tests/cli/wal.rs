//! A `.wal` that DuckDB cannot replay: DuckDB skips it silently, and the
//! next read-write open deletes it with the writes committed in it. check
//! names it; backup, repair and migrate keep a copy before anything opens
//! the database for writing. A torn tail (the last entry cut short by a
//! crash, never committed) is not a problem.

use std::path::Path;

use duckdb::Connection;

use crate::support::*;

/// Commits `count` single-row transactions to `db` that stay in its .wal
/// (no checkpoint, not even at close).
fn commit_to_wal(db: &Path, count: u32) {
    let conn = Connection::open(db).unwrap();
    conn.execute_batch("PRAGMA disable_checkpoint_on_shutdown; SET checkpoint_threshold = '1TB';")
        .unwrap();
    for i in 0..count {
        conn.execute_batch(&format!(
            "INSERT INTO users (email) VALUES ('wal-{i}@example.com')"
        ))
        .unwrap();
    }
}

fn wal(sandbox: &Sandbox) -> std::path::PathBuf {
    sandbox.path("data/prod.duckdb.wal")
}

/// The `.wal` files kept in quarantine.
fn kept_wals(sandbox: &Sandbox) -> Vec<std::path::PathBuf> {
    walk(&sandbox.path("data/quarantine"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".wal"))
        .collect()
}

/// Offsets of the framed entries after the version entry.
fn entries(bytes: &[u8], start: usize) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut at = start;
    while at + 16 <= bytes.len() {
        let size = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        found.push((at, size));
        at += 16 + size;
    }
    found
}

/// The end of the version entry: DuckDB's serializer ends an object with
/// 0xFFFF.
fn header_end(bytes: &[u8]) -> usize {
    bytes.windows(2).position(|w| w == [0xFF, 0xFF]).unwrap() + 2
}

#[test]
fn garbage_in_place_of_the_wal_is_named_by_check() {
    let sandbox = Sandbox::new();
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(wal(&sandbox), &garbage).unwrap();
    sandbox
        .upkeep(&["check", "production"])
        .code(1)
        .stdout_has("prod.duckdb.wal")
        .stdout_has("cannot be replayed");
    let run = sandbox.upkeep(&["--format", "json", "check", "production"]);
    run.code(1);
    assert!(run.stdout.contains("unreplayed_wal"), "{run}");
    assert_eq!(bytes(&wal(&sandbox)), garbage, "check changed the .wal");
}

#[test]
fn a_damaged_entry_with_commits_after_it_is_named_and_a_torn_tail_is_not() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    commit_to_wal(&db, 5);
    let good = bytes(&wal(&sandbox));
    sandbox
        .upkeep(&["check", "production"])
        .code(0)
        .stdout_has("3005");

    // The last entry cut short, as a crash while writing it would.
    let frames = entries(&good, header_end(&good));
    assert!(frames.len() >= 5, "{frames:?}");
    std::fs::write(wal(&sandbox), &good[..good.len() - 5]).unwrap();
    sandbox.upkeep(&["check", "production"]).code(0);

    // An early entry damaged: the commits after it would be lost.
    let mut damaged = good.clone();
    let (at, size) = frames[1];
    damaged[at + 16 + size / 2] ^= 0x5A;
    std::fs::write(wal(&sandbox), &damaged).unwrap();
    sandbox
        .upkeep(&["check", "production"])
        .code(1)
        .stdout_has("cannot be replayed");
}

#[test]
fn a_wal_of_another_database_is_named() {
    let sandbox = Sandbox::new();
    commit_to_wal(&sandbox.db("staging"), 3);
    std::fs::copy(sandbox.path("data/staging.duckdb.wal"), wal(&sandbox)).unwrap();
    sandbox
        .upkeep(&["check", "production"])
        .code(1)
        .stdout_has("another database");
}

#[test]
fn backup_keeps_a_copy_of_an_unreplayable_wal_before_the_checkpoint_deletes_it() {
    let sandbox = Sandbox::new();
    let garbage: Vec<u8> = (0..3000u32).map(|i| (i * 31 % 253) as u8).collect();
    std::fs::write(wal(&sandbox), &garbage).unwrap();
    let run = sandbox.upkeep(&["backup", "production"]);
    run.code(0).stderr_has("could not be replayed");
    let kept = kept_wals(&sandbox);
    assert_eq!(kept.len(), 1, "{run}");
    assert_eq!(bytes(&kept[0]), garbage, "{run}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&kept[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{run}");
    assert!(
        run.stderr.contains(&kept[0].display().to_string()),
        "the warning must say where the copy is\n{run}"
    );
}

#[test]
fn repair_moves_an_unreplayable_wal_to_quarantine_and_keeps_every_row_of_the_file() {
    let sandbox = Sandbox::new();
    let garbage = vec![0x42u8; 4096];
    std::fs::write(wal(&sandbox), &garbage).unwrap();
    let run = sandbox.upkeep(&["repair", "production"]);
    run.code(0);
    assert!(!wal(&sandbox).exists(), "{run}");
    let kept = kept_wals(&sandbox);
    assert_eq!(kept.len(), 1, "{run}");
    assert_eq!(bytes(&kept[0]), garbage);
    sandbox
        .upkeep(&["check", "production", "--deep"])
        .code(0)
        .stdout_has("3000");
}

#[test]
fn migrate_keeps_a_copy_of_an_unreplayable_wal_before_it_opens_the_database() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "migrations/0001_phone.sql",
        "ALTER TABLE users ADD COLUMN phone VARCHAR;",
    );
    sandbox.pipeline(
        "m",
        "env: production\nsteps:\n- uses: migrate\n  with: { dir: migrations }\n",
    );
    let garbage: Vec<u8> = (0..2000u32).map(|i| (i * 13 % 241) as u8 + 1).collect();
    std::fs::write(wal(&sandbox), &garbage).unwrap();
    let run = sandbox.upkeep(&["run", "m"]);
    run.code(0).stdout_has("could not be replayed");
    let kept = kept_wals(&sandbox);
    assert_eq!(kept.len(), 1, "{run}");
    assert_eq!(bytes(&kept[0]), garbage, "{run}");
    assert!(has_phone(&sandbox.db("prod")), "{run}");
}
