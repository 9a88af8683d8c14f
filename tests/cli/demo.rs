//! The README's first command runs the demo end to end: a real app, a real
//! git origin, an update that goes live and one that is rolled back.

use crate::support::*;

#[test]
fn the_demo_updates_the_app_and_rolls_back_a_bad_release() {
    let sandbox = Sandbox::empty();
    let dir = sandbox.path("demo");
    let run = sandbox.upkeep(&["demo", "--dir", dir.to_str().unwrap()]);
    run.code(0)
        .stdout_has("applied 0001_add_phone.sql")
        .stdout_has("copied live: no downtime")
        .stdout_has("in a window: the app was down")
        .stdout_has("through the app's snapshot hook, no downtime")
        .stdout_has("health: v2 users=2000")
        .stdout_has("verified")
        .stdout_has("undone pull")
        .stdout_has("health after the rollback: v2 users=2000");
    // Written as DuckDB 1.1 would, and kept so through backup and migrate.
    assert_eq!(header_version(&dir.join("app/backend/data.duckdb")), 64);
    assert!(
        !dir.join("app/app.pid").exists(),
        "the demo stops its app at the end"
    );
    sandbox
        .upkeep(&["demo", "--dir", dir.to_str().unwrap()])
        .code(2)
        .stderr_has("not empty");
}
