//! The README's first command runs the demo end to end.

use crate::support::*;

#[test]
fn the_demo_checks_backs_up_and_lists() {
    let sandbox = Sandbox::empty();
    let dir = sandbox.path("demo");
    let run = sandbox.upkeep(&["demo", "--dir", dir.to_str().unwrap()]);
    run.code(0)
        .stdout_has("$ upkeep backup both")
        .stdout_has("verified");
    assert_eq!(header_version(&dir.join("backend/data.duckdb")), 64);
    sandbox
        .upkeep(&["demo", "--dir", dir.to_str().unwrap()])
        .code(2)
        .stderr_has("not empty");
}
