//! `upkeep check`: every problem by name, read-only, busy detection.

use crate::support::*;

#[test]
fn a_sound_database_passes_and_is_not_written() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    let before = bytes(&db);
    let modified = mtime(&db);
    sandbox
        .upkeep(&["check", "production", "--deep"])
        .code(0)
        .stdout_has("users")
        .stdout_has("3000")
        .stdout_has("30000")
        .stdout_has("sound");
    sandbox.upkeep(&["check", "both"]).code(0);
    assert_eq!(bytes(&db), before, "check changed the database");
    assert_eq!(mtime(&db), modified);
    assert!(!sandbox.path("data/prod.duckdb.wal").exists());
}

#[test]
fn pending_wal_is_read_but_left_alone() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    let mut app = sandbox.app(&["write", db.to_str().unwrap(), WAL_ROWS]);
    app.kill9();
    let wal = sandbox.path("data/prod.duckdb.wal");
    let wal_before = bytes(&wal);
    let db_before = bytes(&db);
    sandbox
        .upkeep(&["check", "production"])
        .code(0)
        .stdout_has("3025");
    assert_eq!(bytes(&wal), wal_before);
    assert_eq!(bytes(&db), db_before);
}

#[test]
fn json_output_gives_the_same_as_data() {
    let sandbox = Sandbox::new();
    let run = sandbox.upkeep(&["--format", "json", "check", "both"]);
    run.code(0);
    let events = run.json();
    assert_eq!(events.len(), 2, "{run}");
    assert_eq!(events[0]["env"], "production");
    assert_eq!(events[0]["ok"], true);
    let tables = events[0]["report"]["tables"].as_array().unwrap();
    assert!(
        tables
            .iter()
            .any(|t| t["table"] == "orders" && t["rows"] == 30000),
        "{run}"
    );
}

fn problem(sandbox: &Sandbox, args: &[&str], kind: &str, text: &str) {
    let run = sandbox.upkeep(args);
    run.code(1).stdout_has(kind).stdout_has(text);
}

#[test]
fn missing_empty_foreign_and_truncated_files() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    std::fs::remove_file(&db).unwrap();
    problem(
        &sandbox,
        &["check", "production"],
        "missing_file",
        "no database file",
    );
    std::fs::write(&db, b"").unwrap();
    problem(&sandbox, &["check", "production"], "empty_file", "empty");
    let mut sqlite = b"SQLite format 3\0".to_vec();
    sqlite.resize(8192, 0);
    std::fs::write(&db, sqlite).unwrap();
    problem(&sandbox, &["check", "production"], "not_duckdb", "SQLite");
    make_db(&sandbox.db("fresh"), None, 3_000);
    let good = bytes(&sandbox.db("fresh"));
    // Cut off the second half: data blocks in use are gone.
    std::fs::write(&db, &good[..good.len() / 2]).unwrap();
    problem(&sandbox, &["check", "production"], "truncated", "truncated");
}

#[test]
fn a_damaged_block_is_found_by_the_deep_check() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    corrupt_block_of(&db, "orders");
    problem(
        &sandbox,
        &["check", "production", "--deep"],
        "checksum",
        "orders",
    );
}

#[test]
fn missing_table_column_and_sequence() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    sql(
        &db,
        "DROP TABLE orders; ALTER TABLE users ALTER id DROP DEFAULT; DROP SEQUENCE users_id_seq; ALTER TABLE users DROP COLUMN email;",
    );
    let run = sandbox.upkeep(&["check", "production"]);
    run.code(1)
        .stdout_has("table `orders` is missing")
        .stdout_has("column `email` of table `users` is missing")
        .stdout_has("sequence `users_id_seq` is missing");
}

#[test]
fn null_and_duplicate_keys_in_a_table_that_lost_its_constraint() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    // Rebuild `orders` without its PRIMARY KEY, as a bad migration would.
    sql(
        &db,
        "CREATE TABLE orders2 AS SELECT * FROM orders; DROP TABLE orders; ALTER TABLE orders2 RENAME TO orders;
         INSERT INTO orders VALUES (NULL, 1, 'no key'), (7, 1, 'dup'), (8, 1, 'dup');",
    );
    sandbox
        .upkeep(&["check", "production"])
        .code(1)
        .stdout_has("null_primary_key")
        .stdout_has("1 row(s) with NULL in primary key (id)")
        .stdout_has("duplicate_primary_key")
        .stdout_has("2 primary key value(s)");
}

#[test]
fn a_database_held_by_the_app_is_checked_live_or_with_live_never_busy_and_named() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    let app = sandbox.app(&["hold", db.to_str().unwrap()]);
    sandbox
        .upkeep(&["check", "production"])
        .code(0)
        .stdout_has("checked a live copy");
    sandbox.set_live("never");
    sandbox
        .upkeep(&["check", "production"])
        .code(4)
        .stderr_has(&format!("PID {}", app.pid()));
    // The other environment is still checked.
    sandbox
        .upkeep(&["check", "both"])
        .code(4)
        .stdout_has("staging");
}

#[test]
fn a_file_cut_before_its_last_data_block_is_truncated_even_without_deep() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    let last_data_block = cut_before_last_data_block(&db);
    problem(
        &sandbox,
        &["check", "production"],
        "truncated",
        &format!("block {last_data_block} in use"),
    );
}
