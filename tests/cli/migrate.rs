//! `uses: migrate`: SQL files applied in order and recorded; a failed
//! update puts the database back exactly as it was.

use crate::support::*;

fn tables_and_counts(sandbox: &Sandbox) -> std::collections::BTreeMap<String, i64> {
    counts(&sandbox.db("prod"))
}

/// Two migrations: one adds `users.phone`, the next fails.
fn phone_then_failure(sandbox: &Sandbox) {
    migrations(
        sandbox,
        &[
            ("0001_ok.sql", "ALTER TABLE users ADD COLUMN phone VARCHAR;"),
            ("0002_bad.sql", "SELECT * FROM no_such_table;"),
        ],
    );
}

fn migrations(sandbox: &Sandbox, files: &[(&str, &str)]) {
    for (name, sql) in files {
        sandbox.write(&format!("migrations/{name}"), sql);
    }
}

#[test]
fn applies_in_order_records_and_keeps_the_storage_version() {
    let sandbox = Sandbox::new();
    std::fs::remove_file(sandbox.db("prod")).unwrap();
    make_db(&sandbox.db("prod"), Some("v1.1.0"), 3_000);
    migrations(
        &sandbox,
        &[
            (
                "0002_fill.sql",
                "UPDATE users SET phone = '000' WHERE id < 10;",
            ),
            (
                "0001_phone.sql",
                "ALTER TABLE users ADD COLUMN phone VARCHAR;",
            ),
        ],
    );
    sandbox.pipeline(
        "m",
        "env: production\nsteps:\n- uses: migrate\n  with: { dir: migrations }\n",
    );
    sandbox
        .upkeep(&["run", "m", "--dry-run"])
        .code(0)
        .stdout_has("apply 2 migration(s)")
        .stdout_has("0001_phone.sql, 0002_fill.sql");
    sandbox
        .upkeep(&["run", "m"])
        .code(0)
        .stdout_has("applied 0001_phone.sql, 0002_fill.sql");
    let conn = duckdb::Connection::open(sandbox.db("prod")).unwrap();
    let recorded: Vec<(i64, String)> = conn
        .prepare("SELECT version, name FROM upkeep_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        recorded,
        [
            (1, "0001_phone.sql".to_string()),
            (2, "0002_fill.sql".to_string())
        ]
    );
    let phones: i64 = conn
        .query_row("SELECT count(phone) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(phones, 9);
    drop(conn);
    assert_eq!(
        header_version(&sandbox.db("prod")),
        64,
        "migrate must keep v1.1.0"
    );
    // It made its own restore point, as the run had none.
    assert_eq!(sandbox.backups("production").len(), 1);
    sandbox
        .upkeep(&["run", "m"])
        .code(0)
        .stdout_has("nothing pending");
    assert_eq!(sandbox.backups("production").len(), 1);
}

#[test]
fn a_migration_failing_halfway_leaves_the_data_as_it_was() {
    let sandbox = Sandbox::new();
    migrations(
        &sandbox,
        &[
            (
                "0001_ok.sql",
                "ALTER TABLE users ADD COLUMN phone VARCHAR; DELETE FROM orders WHERE id < 100;",
            ),
            (
                "0002_bad.sql",
                "UPDATE users SET phone = 'x'; SELECT * FROM no_such_table;",
            ),
        ],
    );
    sandbox.pipeline(
        "update",
        "env: production\nsteps:\n- uses: backup\n- uses: migrate\n  with: { dir: migrations }\n",
    );
    let before = tables_and_counts(&sandbox);
    let backups_before = 0;
    sandbox
        .upkeep(&["run", "update"])
        .code(1)
        .stdout_has("0002_bad.sql` failed")
        .stdout_has("back as it was before migrate")
        .stdout_has("rewritten");
    assert_eq!(tables_and_counts(&sandbox), before);
    // Rewound in place: byte for byte the restore point, nothing set aside.
    let backup = &sandbox.backups("production")[0];
    assert!(std::fs::read(sandbox.db("prod")).unwrap() == std::fs::read(backup).unwrap());
    assert!(!sandbox.path("data/aside").exists());
    assert!(
        !has_phone(&sandbox.db("prod")),
        "the first migration must be undone too"
    );
    // The run's own backup was the restore point: no second one was made.
    assert_eq!(sandbox.backups("production").len(), backups_before + 1);
}

#[test]
fn a_restore_point_damaged_since_the_backup_is_never_written_over_the_database() {
    let sandbox = Sandbox::new();
    phone_then_failure(&sandbox);
    // Between the backup and the rollback, the backup loses a byte.
    sandbox.pipeline(
        "update",
        "env: production\nsteps:\n- uses: backup\n- run: truncate -s -1 backups/production_data_*.duckdb\n\
         - uses: migrate\n  with: { dir: migrations }\n",
    );
    sandbox
        .upkeep(&["run", "update"])
        .code(3)
        .stdout_has("no longer matches its manifest")
        .stdout_has("the database was not touched");
    // The database is as migrate left it (0001 applied), whole and sound.
    assert!(has_phone(&sandbox.db("prod")));
}

#[test]
fn once_the_run_went_on_past_migrate_its_rollback_keeps_the_migrated_file_aside() {
    let sandbox = Sandbox::new();
    phone_then_failure(&sandbox);
    // migrate fails but may (allow_failure): the run goes on, the "new app"
    // commits a row (to the .wal: it is killed -9), then a step fails.
    sandbox.pipeline(
        "update",
        "env: production\nsteps:\n- uses: backup\n- uses: migrate\n  with: { dir: migrations }\n  allow_failure: true\n\
         - run: timeout -s KILL 2 \"$APP\" write data/prod.duckdb \"INSERT INTO users (email) VALUES ('after@example.com')\" || true\n\
         - run: exit 1\n",
    );
    let app = format!("APP={APP}");
    sandbox
        .upkeep(&["run", "update", "--var", &app])
        .code(1)
        .stdout_has("the migrated one is in");
    let backup = &sandbox.backups("production")[0];
    assert!(std::fs::read(sandbox.db("prod")).unwrap() == std::fs::read(backup).unwrap());
    // The migrated file and its .wal are aside, with the row written after.
    let aside = walk(&sandbox.path("data/aside"));
    let kept = aside
        .iter()
        .find(|p| p.ends_with("prod.duckdb"))
        .expect("kept aside");
    assert!(
        aside.iter().any(|p| p.ends_with("prod.duckdb.wal")),
        "{aside:?}"
    );
    let conn = duckdb::Connection::open(kept).unwrap();
    let after: i64 = conn
        .query_row(
            "SELECT count(*) FROM users WHERE email = 'after@example.com'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(after, 1);
}

#[test]
fn a_changed_recorded_migration_is_refused_before_anything() {
    let sandbox = Sandbox::new();
    migrations(
        &sandbox,
        &[(
            "0001_phone.sql",
            "ALTER TABLE users ADD COLUMN phone VARCHAR;",
        )],
    );
    sandbox.pipeline(
        "m",
        "env: production\nsteps:\n- uses: migrate\n  with: { dir: migrations, rollback: none }\n",
    );
    sandbox.upkeep(&["run", "m"]).code(0);
    assert!(
        sandbox.backups("production").is_empty(),
        "rollback: none makes no restore point"
    );
    migrations(
        &sandbox,
        &[
            (
                "0001_phone.sql",
                "ALTER TABLE users ADD COLUMN phone VARCHAR(20);",
            ),
            ("0002_more.sql", "ALTER TABLE users ADD COLUMN fax VARCHAR;"),
        ],
    );
    sandbox
        .upkeep(&["run", "m"])
        .code(2)
        .stdout_has("0001_phone.sql` was applied, and its file has changed");
    let conn = duckdb::Connection::open(sandbox.db("prod")).unwrap();
    let fax: i64 = conn
        .query_row(
            "SELECT count(*) FROM duckdb_columns() WHERE column_name = 'fax'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(fax, 0, "nothing may be applied");
    drop(conn);
    sandbox
        .upkeep(&["run", "m", "--dry-run"])
        .code(1)
        .stdout_has("has changed");
}
