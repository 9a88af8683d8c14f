//! Messages that read well: each thing said once, with the file, the step or
//! the environment, and what to do.

use crate::support::*;

/// How many times `text` is in `haystack`.
fn count(haystack: &str, text: &str) -> usize {
    haystack.matches(text).count()
}

#[test]
fn a_duckdb_error_comes_without_the_drivers_noise() {
    let sandbox = Sandbox::new();
    corrupt_block_of(&sandbox.db("prod"), "orders");
    let run = sandbox.upkeep(&["check", "production", "--deep"]);
    run.code(1).stdout_has("checksum");
    assert!(!run.stdout.contains("Error code"), "{run}");
    let json = sandbox.upkeep(&["check", "production", "--format", "json"]);
    assert!(!json.stdout.contains("Unknown error code"), "{json}");
}

#[test]
fn a_backup_that_fails_verification_names_the_blocks_and_what_to_do() {
    let sandbox = Sandbox::new();
    corrupt_block_of(&sandbox.db("prod"), "orders");
    sandbox
        .upkeep(&["backup", "production"])
        .code(1)
        .stderr_has("fail DuckDB's checksum: block id(s) ")
        .stderr_has("run `upkeep check production --deep`, then `upkeep repair production`");
}

#[test]
fn a_rollback_that_fails_says_why_once_and_the_summary_names_it() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "steps:\n  - name: first\n    run: \"true\"\n    rollback: exit 4\n  \
         - name: second\n    run: exit 1\n",
    );
    let run = sandbox.upkeep(&["run", "p"]);
    run.code(3).stdout_has("NOT UNDONE first (").stdout_has(
        "ATTENTION failed at step 2 `second`; ROLLBACK INCOMPLETE: not undone: first. ",
    );
    assert_eq!(count(&run.stdout, "exited with status 4"), 1, "{run}");
    // Nothing was undone, and the summary does not claim there was nothing to.
    assert!(!run.stdout.contains("nothing to undo"), "{run}");
}

#[test]
fn the_webhook_hears_why_a_rollback_failed() {
    let sandbox = Sandbox::new();
    let (url, server) = webhook();
    sandbox.pipeline(
        "p",
        &format!(
            "notify: {{ url: \"{url}\" }}\nsteps:\n  - name: first\n    run: \"true\"\n    \
             rollback: exit 4\n  - name: second\n    run: exit 1\n"
        ),
    );
    sandbox.upkeep(&["run", "p"]).code(3);
    let (_, body) = server.join().unwrap().expect("the webhook got the summary");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["not_undone"][0]["step"], "first", "{body}");
    assert_eq!(
        body["not_undone"][0]["reason"], "`exit 4` exited with status 4",
        "{body}"
    );
}

#[test]
fn a_failed_run_says_failed_in_its_summary_for_scripts_too() {
    let sandbox = Sandbox::new();
    sandbox.pipeline("p", "steps:\n  - name: breaks\n    run: exit 1\n");
    let run = sandbox.upkeep(&["run", "p", "--format", "json"]);
    run.code(1);
    let last = run.json().pop().unwrap();
    assert_eq!(
        last["summary"], "failed at step 1 `breaks`; rolled back (nothing to undo)",
        "{run}"
    );
    // For people, the word is said once.
    let run = sandbox.upkeep(&["run", "p"]);
    run.stdout_has("\nfailed at step 1 `breaks`");
    assert!(!run.stdout.contains("failed failed"), "{run}");
}

#[test]
fn a_step_named_by_its_command_does_not_repeat_it() {
    let sandbox = Sandbox::new();
    sandbox.pipeline("p", "steps:\n  - run: exit 3\n");
    let run = sandbox.upkeep(&["run", "p"]);
    run.code(1)
        .stdout_has("FAILED run `exit 3` (")
        .stdout_has("): exited with status 3\n");
    assert_eq!(
        count(&run.stdout, "`exit 3`"),
        2,
        "the step line and the summary\n{run}"
    );
}

#[test]
fn a_dry_run_says_each_thing_once() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: staging\nsteps:\n  - uses: integrity\n  - run: no-such-program-here --flag\n",
    );
    let run = sandbox.upkeep(&["run", "p", "--dry-run"]);
    run.code(1)
        .stdout_has(" 1. uses integrity\n      would check `staging`")
        .stdout_has(" 2. run `no-such-program-here --flag`\n      BLOCKER: ")
        .stdout_has("dry-run found 1 blocker(s), at step 2 `run `no-such-program-here --flag``; nothing changed");
    assert_eq!(count(&run.stdout, "uses integrity"), 1, "{run}");
    assert_eq!(count(&run.stdout, "is not found"), 1, "{run}");
}

#[test]
fn a_failed_migration_says_what_became_of_it_then_duckdbs_message_indented() {
    let sandbox = Sandbox::new();
    sandbox.write("migrations/0001_bad.sql", "SELECT * FROM no_such_table;\n");
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n  - name: migrate\n    uses: migrate\n    with: { dir: migrations }\n",
    );
    let run = sandbox.upkeep(&["run", "p"]);
    run.code(1)
        .stdout_has(
            "0001_bad.sql` failed (its own changes were rolled back; fix the file, then run again): \
             Catalog Error: Table with name no_such_table does not exist!",
        )
        .stdout_has("\n      LINE 1: SELECT * FROM no_such_table;");
}

#[test]
fn a_pipeline_that_is_not_there_lists_the_ones_that_are() {
    let sandbox = Sandbox::new();
    sandbox.pipeline("update", "steps: []\n");
    sandbox.pipeline("deploy", "steps: []\n");
    sandbox
        .upkeep(&["run", "updat"])
        .code(2)
        .stderr_has("no pipeline file `")
        .stderr_has("pipelines/updat.yaml`: give a path, or one of the names in `")
        .stderr_has("`deploy`, `update`");
}

#[test]
fn restore_without_backups_says_where_it_looked_and_what_to_do() {
    let sandbox = Sandbox::new();
    sandbox
        .upkeep(&["restore", "production", "--latest"])
        .code(1)
        .stderr_has("no backup of `production` in `")
        .stderr_has("set `backups: { dir: ... }` in upkeep.yaml");
}

#[test]
fn a_run_variable_says_what_to_do_instead() {
    let sandbox = Sandbox::new();
    sandbox.pipeline("p", "steps:\n  - run: \"true\"\n");
    sandbox
        .upkeep(&["run", "p", "--var", "UPKEEP_X=1"])
        .code(2)
        .stderr_has("are the run's own variables: pick another name");
}
