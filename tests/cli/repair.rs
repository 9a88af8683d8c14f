//! `upkeep repair`: each way back to a sound database, the damaged file
//! always kept in quarantine.

use crate::support::*;

fn quarantined(sandbox: &Sandbox) -> Vec<std::path::PathBuf> {
    walk(&sandbox.path("data/quarantine"))
}

#[test]
fn a_sound_database_is_left_untouched() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    let before = bytes(&db);
    let modified = mtime(&db);
    sandbox
        .upkeep(&["repair", "production"])
        .code(0)
        .stdout_has("nothing to repair");
    assert_eq!(bytes(&db), before);
    assert_eq!(mtime(&db), modified);
    assert!(!sandbox.path("data/quarantine").exists());
}

#[test]
fn the_newest_backup_that_verifies_comes_back() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    sandbox.upkeep(&["backup", "production"]).code(0);
    let backup = bytes(&sandbox.backups("production")[0]);
    corrupt_block_of(&db, "orders");
    let damaged = bytes(&db);
    sandbox
        .upkeep_with(&["repair"], &[("ENVIRONMENT", "production")])
        .code(0)
        .stdout_has("restored the newest backup that verifies")
        .stdout_has("damaged file moved to");
    assert_eq!(bytes(&db), backup);
    let kept = quarantined(&sandbox);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        bytes(&kept[0]),
        damaged,
        "the damaged file must be kept as it was"
    );
}

#[test]
fn without_a_backup_the_readable_tables_are_salvaged() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    corrupt_block_of(&db, "orders");
    let run = sandbox.upkeep(&["repair", "production"]);
    run.code(0)
        .stdout_has("salvaged")
        .stdout_has("users: 3000 rows")
        .stdout_has("orders: LOST, created empty");
    let rows = counts(&db);
    assert_eq!(rows["users"], 3000);
    assert_eq!(rows["orders"], 0);
    assert_eq!(quarantined(&sandbox).len(), 1);
    // The sequence goes on after the salvaged ids: no key collision.
    sql(&db, "INSERT INTO users (email) VALUES ('next@example.com')");
    sandbox.upkeep(&["check", "production", "--deep"]).code(0);
}

#[test]
fn salvage_keeps_rows_whose_keys_were_broken() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    sql(
        &db,
        "CREATE TABLE orders2 AS SELECT * FROM orders; DROP TABLE orders; ALTER TABLE orders2 RENAME TO orders;
         INSERT INTO orders VALUES (1, 1, 'duplicate of 1'), (NULL, 1, 'no key');",
    );
    sandbox
        .upkeep(&["repair", "production"])
        .code(0)
        .stdout_has("orders: 2 row(s) with NULL or duplicate keys left in the quarantined file");
    assert_eq!(counts(&db)["orders"], 30000);
}

#[test]
fn an_unreadable_file_without_backup_becomes_an_empty_database_from_the_schema() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    std::fs::write(&db, vec![0x42u8; 100_000]).unwrap();
    sandbox
        .upkeep(&["repair", "production"])
        .code(0)
        .stdout_has("created an EMPTY database from schema.sql");
    let rows = counts(&db);
    assert_eq!(rows.get("users"), Some(&0));
    assert_eq!(rows.get("orders"), Some(&0));
    assert_eq!(bytes(&quarantined(&sandbox)[0]), vec![0x42u8; 100_000]);
}

#[test]
fn nothing_moves_when_nothing_can_be_brought_back() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "upkeep.yaml",
        "databases:\n  production: data/prod.duckdb\n",
    );
    let db = sandbox.db("prod");
    std::fs::write(&db, b"garbage").unwrap();
    sandbox
        .upkeep(&["repair", "production"])
        .code(1)
        .stderr_has("nothing was moved");
    assert_eq!(bytes(&db), b"garbage");
    assert!(!sandbox.path("data/quarantine").exists());
}

#[test]
fn repair_refuses_while_the_app_holds_the_database() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    let app = sandbox.app(&["hold", db.to_str().unwrap()]);
    sandbox
        .upkeep(&["repair", "production"])
        .code(4)
        .stderr_has(&format!("PID {}", app.pid()));
}

#[test]
fn content_problems_are_mended_by_salvage_keeping_rows_newer_than_the_backup() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    sandbox.upkeep(&["backup", "production"]).code(0);
    // Rows written after the backup, then a table lost by a bad migration.
    sql(
        &db,
        "INSERT INTO users (email) VALUES ('after-backup@example.com'); DROP TABLE orders;",
    );
    sandbox
        .upkeep(&["repair", "production"])
        .code(0)
        .stdout_has("salvaged")
        .stdout_has("orders: LOST, created empty (not in the damaged file)");
    let rows = counts(&db);
    assert_eq!(
        rows["users"], 3001,
        "the row written after the backup must survive"
    );
    assert_eq!(rows["orders"], 0);
}

#[test]
fn the_wal_goes_to_quarantine_with_its_database() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    sandbox.upkeep(&["backup", "production"]).code(0);
    corrupt_block_of(&db, "orders");
    let mut app = sandbox.app(&["write", db.to_str().unwrap(), WAL_ROWS]);
    app.kill9();
    let wal = sandbox.path("data/prod.duckdb.wal");
    let wal_bytes = bytes(&wal);
    sandbox
        .upkeep(&["repair", "production"])
        .code(0)
        .stdout_has("restored");
    assert!(
        !wal.exists(),
        "the old .wal must not stay beside the restored database"
    );
    let kept = quarantined(&sandbox);
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(
        kept.iter()
            .any(|p| p.ends_with("prod.duckdb.wal") && bytes(p) == wal_bytes)
    );
}

#[test]
fn restored_and_repaired_files_keep_mode_and_owner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    sandbox.upkeep(&["backup", "production"]).code(0);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let owner = if unsafe { libc::geteuid() } == 0 {
        65534
    } else {
        unsafe { libc::geteuid() }
    };
    std::os::unix::fs::chown(&db, Some(owner), Some(owner)).unwrap();
    sandbox
        .upkeep(&["restore", "production", "--latest"])
        .code(0);
    let meta = std::fs::metadata(&db).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o644);
    assert_eq!((meta.uid(), meta.gid()), (owner, owner));
    corrupt_block_of(&db, "orders");
    std::os::unix::fs::chown(&db, Some(owner), Some(owner)).unwrap();
    std::fs::remove_dir_all(sandbox.path("backups")).unwrap();
    sandbox
        .upkeep(&["repair", "production"])
        .code(0)
        .stdout_has("salvaged");
    let meta = std::fs::metadata(&db).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o644);
    assert_eq!((meta.uid(), meta.gid()), (owner, owner));
}
