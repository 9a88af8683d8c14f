//! `upkeep restore`: only names inside the backups folder, verified before
//! use, the current database kept aside, the exact bytes put in place.

use crate::support::*;

fn backup_name(sandbox: &Sandbox, env: &str) -> String {
    sandbox
        .backups(env)
        .last()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn names_outside_the_backups_folder_are_refused() {
    let sandbox = Sandbox::new();
    sandbox.upkeep(&["backup", "production"]).code(0);
    let db = sandbox.db("prod");
    let before = bytes(&db);
    let absolute = sandbox.backups("production")[0]
        .to_string_lossy()
        .into_owned();
    for name in [
        "../data/staging.duckdb",
        "../x",
        absolute.as_str(),
        "production_data_20000101_000000.duckdb",
        "staging.duckdb",
    ] {
        sandbox.upkeep(&["restore", "production", name]).code(2);
    }
    assert_eq!(bytes(&db), before);
    assert!(!sandbox.path("data/aside").exists());
}

#[test]
fn a_round_trip_gives_the_backup_bytes_and_keeps_the_current_file_aside() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    sandbox.upkeep(&["backup", "production"]).code(0);
    let name = backup_name(&sandbox, "production");
    let backup_bytes = bytes(&sandbox.backups("production")[0]);
    // The app goes on writing; some of it is only in the .wal.
    let mut app = sandbox.app(&["write", db.to_str().unwrap(), WAL_ROWS]);
    app.kill9();
    let current = bytes(&db);
    let current_wal = bytes(&sandbox.path("data/prod.duckdb.wal"));
    sandbox
        .upkeep(&["restore", "production", &name])
        .code(0)
        .stdout_has("restored from")
        .stdout_has("previous database kept in");
    assert_eq!(bytes(&db), backup_bytes);
    assert!(
        !sandbox.path("data/prod.duckdb.wal").exists(),
        "the old .wal must not stay beside the restored file"
    );
    assert_eq!(counts(&db)["users"], 3000);
    let aside: Vec<_> = walk(&sandbox.path("data/aside"));
    assert_eq!(aside.len(), 2, "{aside:?}");
    assert!(
        aside
            .iter()
            .any(|p| p.ends_with("prod.duckdb") && bytes(p) == current)
    );
    assert!(
        aside
            .iter()
            .any(|p| p.ends_with("prod.duckdb.wal") && bytes(p) == current_wal)
    );
}

#[test]
fn latest_passes_over_a_backup_that_does_not_verify() {
    let sandbox = Sandbox::new();
    sandbox.upkeep(&["backup", "staging"]).code(0);
    let older = bytes(&sandbox.backups("staging")[0]);
    sql(
        &sandbox.db("staging"),
        "INSERT INTO users (email) VALUES ('late@example.com')",
    );
    sandbox.upkeep(&["backup", "staging"]).code(0);
    let newest = sandbox.backups("staging")[1].clone();
    // Damage the newest backup behind upkeep's back.
    let mut damaged = bytes(&newest);
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xFF;
    std::fs::write(&newest, damaged).unwrap();
    sandbox
        .upkeep(&["restore", "staging", "--latest"])
        .code(0)
        .stdout_has("skipped")
        .stdout_has("differs from its manifest");
    assert_eq!(bytes(&sandbox.db("staging")), older);
    let newest_name = newest.file_name().unwrap().to_string_lossy().into_owned();
    sandbox
        .upkeep(&["restore", "staging", &newest_name])
        .code(1)
        .stderr_has("does not verify");
}

#[test]
fn restore_refuses_while_the_app_holds_the_database() {
    let sandbox = Sandbox::new();
    sandbox.upkeep(&["backup", "production"]).code(0);
    let db = sandbox.db("prod");
    let before = bytes(&db);
    let app = sandbox.app(&["hold", db.to_str().unwrap()]);
    sandbox
        .upkeep(&["restore", "production", "--latest"])
        .code(4)
        .stderr_has(&format!("PID {}", app.pid()));
    drop(app);
    assert_eq!(bytes(&db), before);
}
