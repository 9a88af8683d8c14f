//! The update's restore point taken live before the app stops
//! (`stop-app` with `restore_point: live`), and topped up by the `backup`
//! after the stop with only the blocks that changed (`db::topup`): it holds
//! the app's last commits, made after the live copy, and a failed update
//! goes back to it.

use crate::support::*;

/// The app's last commit, made as it stops (after the live copy).
const LAST: &str = "INSERT INTO users (email) VALUES ('last@example.com')";

/// The update of most tests: the check reads the restore point, and the
/// backup publishes it; then a migration, then a failure.
const UPDATE: &str = "- uses: stop-app\n  with: { restore_point: live }\n\
                      - uses: integrity\n\
                      - uses: backup\n\
                      - uses: migrate\n  with: { dir: migrations }\n\
                      - run: 'false'\n";

/// Production in v2.0.0 with 200 users and 200,000 orders (many blocks),
/// held by an app that commits `WAL_ROWS` now and `LAST` as it stops
/// (when the stop command touches `stop-now`), and closes cleanly; and
/// pipeline `u` of `steps`.
fn app_and_config(sandbox: &Sandbox, stop: &str, steps: &str) -> App {
    let db = crate::live_backup::big_v2_db(sandbox);
    // A block in use by `orders`, which the app does not change.
    let in_use: u64 = duckdb::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT max(block_id) FROM pragma_storage_info('orders') WHERE block_id >= 0",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let until = sandbox.path("stop-now");
    let app = sandbox.app(&[
        "write-until",
        db.to_str().unwrap(),
        WAL_ROWS,
        until.to_str().unwrap(),
        LAST,
    ]);
    let stop = stop
        .replace("UNTIL", until.to_str().unwrap())
        .replace("PID", &app.pid().to_string())
        .replace("OFFSET", &(12288 + in_use * (256 << 10)).to_string());
    sandbox.write(
        "upkeep.yaml",
        &format!("{CONFIG}app:\n  stop: {stop}\n  start: 'true'\n"),
    );
    sandbox.write("migrations/0001_add.sql", "CREATE TABLE added (i INTEGER);");
    sandbox.pipeline("u", &format!("env: production\nsteps:\n{steps}"));
    app
}

#[test]
fn the_live_restore_point_holds_the_apps_last_commits_and_a_failed_update_goes_back_to_it() {
    let sandbox = Sandbox::new();
    let mut app = app_and_config(&sandbox, "touch UNTIL", UPDATE);
    let run = sandbox.upkeep(&["run", "u"]);
    run.code(1)
        .stdout_has("copied live first")
        .stdout_has("checked on the restore point")
        .stdout_has("topped up with");
    assert!(
        app.child.wait().unwrap().success(),
        "the app did not close cleanly\n{run}"
    );
    // Only some blocks were copied after the stop.
    let topped: u64 = run
        .stdout
        .split("topped up with ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no block count\n{run}"));
    let blocks = std::fs::metadata(sandbox.db("prod")).unwrap().len() / (256 << 10);
    assert!(
        topped * 2 < blocks,
        "{topped} of {blocks} blocks topped up\n{run}"
    );
    // The restore point: verified (its blake3 is the file's), with the
    // app's rows, the last one included.
    let backups = sandbox.backups("production");
    assert_eq!(backups.len(), 1, "{run}");
    assert_eq!(counts(&backups[0])["users"], 226, "{run}");
    sandbox
        .upkeep(&["verify", "production"])
        .code(0)
        .stdout_has("verified");
    // The failed update went back to it: the last commit is there, the
    // migration's table is not.
    let now = counts(&sandbox.db("prod"));
    assert_eq!(now["users"], 226, "{run}");
    assert!(!now.contains_key("added"), "{now:?}\n{run}");
}

#[test]
fn an_app_that_leaves_a_wal_gets_a_whole_backup_instead() {
    let sandbox = Sandbox::new();
    // Killed, not stopped: its `.wal` stays, and the top-up refuses it.
    let mut app = app_and_config(&sandbox, "kill -9 PID", UPDATE);
    let run = sandbox.upkeep(&["run", "u"]);
    run.code(1)
        .stdout_has("copied live first")
        .stdout_lacks("checked on the restore point")
        .stdout_has("could not be topped up")
        .stdout_has("whole file was copied");
    let _ = app.child.wait();
    let backups = sandbox.backups("production");
    assert_eq!(backups.len(), 1, "{run}");
    // What the app committed before it was killed, without `LAST`.
    assert_eq!(counts(&backups[0])["users"], 225, "{run}");
    assert_eq!(counts(&sandbox.db("prod"))["users"], 225, "{run}");
}

#[test]
fn stop_app_refuses_a_restore_point_it_does_not_know() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "u",
        "env: production\nsteps:\n- uses: stop-app\n  with: { restore_point: hook }\n",
    );
    sandbox
        .upkeep(&["run", "u", "--dry-run"])
        .code(2)
        .stderr_has("restore_point: live");
}

#[test]
fn a_block_damaged_after_the_stop_is_never_published_as_the_restore_point() {
    // The app stops cleanly; then a block in use is damaged (its stored
    // checksum overwritten) before the backup tops the copy up.
    for (steps, says) in [
        // The backup's own verification finds it...
        (
            "- uses: stop-app\n  with: { restore_point: live }\n- uses: backup\n",
            "failed verification",
        ),
        // ...and so does the check on the restore point, which a check of
        // the database that reads no block of `orders` would not.
        (
            "- uses: stop-app\n  with: { restore_point: live }\n\
             - uses: integrity\n\
             - uses: backup\n",
            "integrity check of `production` found",
        ),
    ] {
        let sandbox = Sandbox::new();
        let damage = format!(
            "touch UNTIL; while [ -e UNTIL ]; do sleep 0.05; done; \
             printf XXXXXXXX | dd of={} bs=1 seek=OFFSET conv=notrunc 2>/dev/null",
            sandbox.db("prod").display()
        );
        let mut app = app_and_config(&sandbox, &format!("\"{damage}\""), steps);
        let run = sandbox.upkeep(&["run", "u"]);
        let _ = app.child.wait();
        run.code(1)
            .stdout_has("copied live first")
            .stdout_has(says)
            .stdout_has("fail DuckDB's checksum");
        assert!(
            sandbox.backups("production").is_empty(),
            "a damaged copy was published\n{run}"
        );
    }
}

#[test]
fn a_change_between_the_check_and_the_backup_is_in_the_restore_point() {
    let sandbox = Sandbox::new();
    // The migration runs after the check (on the restore point) and before
    // the backup: the backup must not publish what was checked as it was.
    let mut app = app_and_config(
        &sandbox,
        "touch UNTIL",
        "- uses: stop-app\n  with: { restore_point: live }\n\
         - uses: integrity\n\
         - uses: migrate\n  with: { dir: migrations }\n\
         - uses: backup\n",
    );
    let run = sandbox.upkeep(&["run", "u"]);
    run.code(0)
        .stdout_has("checked on the restore point")
        .stdout_has("topped up with");
    assert!(app.child.wait().unwrap().success(), "{run}");
    // The newest: migrate made its own restore point before it ran.
    let backups = sandbox.backups("production");
    let kept = counts(backups.last().unwrap());
    assert_eq!(kept["users"], 226, "{run}");
    assert!(kept.contains_key("added"), "{kept:?}\n{run}");
    sandbox
        .upkeep(&["verify", "production"])
        .code(0)
        .stdout_has("verified");
}
