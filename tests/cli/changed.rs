//! `changed` and `schema` in the JSON output: what a fleet engine (Ansible's
//! `changed_when:`) reads to tell a rerun that had nothing to do.

use serde_json::Value;

use crate::support::*;
use crate::update::App;

/// The JSON lines of a run, each checked for `"schema": 1`.
#[track_caller]
fn lines(run: &Run) -> Vec<Value> {
    let lines = run.json();
    assert!(!lines.is_empty(), "no JSON at all\n{run}");
    for line in &lines {
        assert_eq!(
            line["schema"], 1,
            "a line without `schema: 1`: {line}\n{run}"
        );
    }
    lines
}

/// The one line of `type`.
#[track_caller]
fn of_type(run: &Run, kind: &str) -> Value {
    let found: Vec<Value> = lines(run)
        .into_iter()
        .filter(|line| line["type"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "expected one `{kind}` line\n{run}");
    found[0].clone()
}

/// The `changed` of a run's `step_finished` for the step called `name`.
#[track_caller]
fn step_changed(run: &Run, name: &str) -> Value {
    lines(run)
        .into_iter()
        .find(|line| line["type"] == "step_finished" && line["name"] == name)
        .unwrap_or_else(|| panic!("no step `{name}` finished\n{run}"))["changed"]
        .clone()
}

#[test]
fn a_rerun_of_the_update_with_nothing_new_is_not_a_change() {
    let app = App::new();
    app.release(
        "v2",
        &[(
            "backend/migrations/0001_phone.sql",
            "ALTER TABLE users ADD COLUMN phone VARCHAR;",
        )],
    );
    // Ansible's check mode: the dry-run changes nothing, and says that a
    // real run would (the migration comes with the pull).
    let check = app.update_with(&["--dry-run", "--format", "json"], &[]);
    check.code(0);
    let finished = of_type(&check, "run_finished");
    assert_eq!(
        (&finished["changed"], &finished["would_change"]),
        (&Value::from(false), &Value::from(true)),
        "{check}"
    );
    assert!(
        finished["summary"]
            .as_str()
            .is_some_and(|s| s.ends_with("a real run would change: pull")),
        "{check}"
    );

    let first = app.update_with(&["--format", "json"], &[]);
    first.code(0);
    let finished = of_type(&first, "run_finished");
    assert_eq!(finished["changed"], true, "{first}");
    assert!(
        finished["summary"]
            .as_str()
            .is_some_and(|s| s.ends_with("changed: pull, migrate")),
        "{first}"
    );
    assert_eq!(step_changed(&first, "pull"), true);
    assert_eq!(step_changed(&first, "migrate"), true);
    // Bouncing the app and backing it up change neither code nor data.
    for name in ["stop app", "check integrity", "back up", "start app"] {
        assert_eq!(step_changed(&first, name), false, "{name}\n{first}");
    }
    let head = app.head();

    let second = app.update_with(&["--format", "json"], &[]);
    second.code(0);
    let finished = of_type(&second, "run_finished");
    assert_eq!(finished["changed"], false, "{second}");
    assert!(
        finished["summary"]
            .as_str()
            .is_some_and(|s| s.ends_with("nothing changed")),
        "{second}"
    );
    // It ended after its read-only look: no backup, the app untouched.
    assert_eq!(step_changed(&second, "look for news"), false);
    assert!(
        lines(&second)
            .iter()
            .all(|line| line["type"] != "step_finished" || line["name"] == "look for news"),
        "{second}"
    );
    assert_eq!(app.head(), head);
    assert_eq!(app.sandbox.backups("production").len(), 1);

    // Nothing to pull; whether a migration is pending, only the database
    // can tell, and the running app holds it: not a change, not a promise.
    let check = app.update_with(&["--dry-run", "--format", "json"], &[]);
    check.code(0);
    let finished = of_type(&check, "run_finished");
    assert_eq!(finished["would_change"], Value::Null, "{check}");
    assert!(
        finished["summary"]
            .as_str()
            .is_some_and(|s| s.ends_with("planned, nothing changed")),
        "{check}"
    );
}

#[test]
fn a_dry_run_says_whether_a_real_run_would_change_anything() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "migrations/0001_phone.sql",
        "ALTER TABLE users ADD COLUMN phone VARCHAR;",
    );
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n  - uses: integrity\n  - uses: backup\n  \
         - name: migrate\n    uses: migrate\n    with: { dir: migrations }\n  \
         - run: echo done\n    changes: false\n",
    );
    let finished = |args: &[&str]| {
        let mut args = args.to_vec();
        args.extend(["--format", "json"]);
        let run = sandbox.upkeep(&args);
        run.code(0);
        of_type(&run, "run_finished")
    };
    let plan = finished(&["run", "p", "--dry-run"]);
    assert_eq!(
        (&plan["changed"], &plan["would_change"]),
        (&false.into(), &true.into())
    );
    assert!(
        plan["summary"]
            .as_str()
            .unwrap()
            .ends_with("a real run would change: migrate")
    );
    assert_eq!(finished(&["run", "p"])["changed"], true);

    let plan = finished(&["run", "p", "--dry-run"]);
    assert_eq!(plan["would_change"], false, "{plan}");
    assert!(
        plan["summary"]
            .as_str()
            .unwrap()
            .ends_with("a real run would change nothing")
    );
    assert_eq!(finished(&["run", "p"])["changed"], false);
}

#[test]
fn backup_restore_and_repair_say_whether_they_changed_anything() {
    let sandbox = Sandbox::new();
    let backup = sandbox.upkeep(&["backup", "staging", "--format", "json"]);
    backup.code(0);
    assert_eq!(of_type(&backup, "backup")["changed"], true, "{backup}");

    let sound = sandbox.upkeep(&["repair", "staging", "--format", "json"]);
    sound.code(0);
    let repair = of_type(&sound, "repair");
    assert_eq!(
        (&repair["outcome"], &repair["changed"]),
        (&Value::from("sound"), &Value::from(false)),
        "{sound}"
    );

    let restore = sandbox.upkeep(&["restore", "staging", "--latest", "--format", "json"]);
    restore.code(0);
    assert_eq!(of_type(&restore, "restore")["changed"], true, "{restore}");

    corrupt_block_of(&sandbox.db("staging"), "orders");
    let repaired = sandbox.upkeep(&["repair", "staging", "--format", "json"]);
    repaired.code(0);
    let repair = of_type(&repaired, "repair");
    assert_eq!(
        (&repair["outcome"], &repair["changed"]),
        (&Value::from("restored_backup"), &Value::from(true)),
        "{repaired}"
    );
}

#[test]
fn a_command_is_a_change_unless_its_step_says_changes_false() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "steps:\n  - name: make\n    run: touch made\n    rollback: rm made\n  \
         - name: look\n    run: test -f made\n    changes: false\n",
    );
    let run = sandbox.upkeep(&["run", "p", "--format", "json"]);
    run.code(0);
    assert_eq!(step_changed(&run, "make"), true);
    assert_eq!(step_changed(&run, "look"), false);
    let finished = of_type(&run, "run_finished");
    assert_eq!(finished["changed"], true, "{run}");

    sandbox.pipeline(
        "quiet",
        "steps:\n  - name: look\n    run: test -f made\n    changes: false\n",
    );
    let run = sandbox.upkeep(&["run", "quiet"]);
    run.code(0)
        .stdout_has("1 step(s) ran, 0 skipped; nothing changed");
    let run = sandbox.upkeep(&["run", "quiet", "--format", "json"]);
    assert_eq!(of_type(&run, "run_finished")["changed"], false, "{run}");
}

#[test]
fn a_run_rolled_back_in_full_changed_nothing() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "steps:\n  - name: make\n    run: touch made\n    rollback: rm made\n  \
         - name: fail\n    run: exit 1\n    changes: false\n",
    );
    let run = sandbox.upkeep(&["run", "p", "--format", "json"]);
    run.code(1);
    assert_eq!(step_changed(&run, "make"), true);
    assert_eq!(of_type(&run, "run_finished")["changed"], false, "{run}");
    assert!(!sandbox.path("made").exists());

    // A step with no rollback stays changed.
    sandbox.pipeline(
        "kept",
        "steps:\n  - name: make\n    run: touch made\n  - name: fail\n    run: exit 1\n    changes: false\n",
    );
    let run = sandbox.upkeep(&["run", "kept", "--format", "json"]);
    run.code(1);
    assert_eq!(of_type(&run, "run_finished")["changed"], true, "{run}");
}

#[test]
fn changes_is_for_commands_only() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: staging\nsteps:\n  - uses: integrity\n    changes: false\n",
    );
    sandbox
        .upkeep(&["validate", "p"])
        .code(2)
        .stderr_has("p.yaml:4:14: `changes` applies to `run:` steps");
}

#[test]
fn every_json_line_has_the_schema_version() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: staging\nsteps:\n  - run: echo out\n  - uses: integrity\n  - run: exit 1\n",
    );
    for args in [
        &["check", "both"][..],
        &["backups", "production"],
        &["validate"],
        &["run", "p"],
        &["run", "p", "--dry-run"],
        &["backup", "nowhere"],
        &["schedule"],
    ] {
        let mut args = args.to_vec();
        args.extend(["--format", "json"]);
        lines(&sandbox.upkeep(&args));
    }
}
