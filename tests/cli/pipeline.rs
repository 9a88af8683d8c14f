//! Pipelines: loading and validation, running with rollback, conditions,
//! timeouts, retries, the lock, the crash journal and recover, dry-run.

use std::time::{Duration, Instant};

use crate::support::*;

impl Sandbox {
    /// Starts upkeep in the background and waits until its step has made
    /// the file `ready`.
    pub fn spawn_upkeep(&self, args: &[&str], ready: &str) -> std::process::Child {
        let child = std::process::Command::new(UPKEEP)
            .args(args)
            .current_dir(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        while !self.path(ready).exists() {
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    /// Writes `pipelines/NAME.yaml`.
    pub fn pipeline(&self, name: &str, text: &str) {
        self.write(&format!("pipelines/{name}.yaml"), text);
    }

    /// The lines of a file in the sandbox (empty when it does not exist).
    pub fn lines(&self, relative: &str) -> Vec<String> {
        std::fs::read_to_string(self.path(relative))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Five steps that record to `trace`, the step at `fail` (1-based, 0 for
/// none) failing; every step has a rollback that records too.
fn five_steps(fail: usize) -> String {
    let mut text = String::from("name: five\nenv: production\nsteps:\n");
    for step in 1..=5 {
        let command = if step == fail {
            format!("echo run{step} >> trace; exit 7")
        } else {
            format!("echo run{step} >> trace")
        };
        text.push_str(&format!(
            "  - name: step {step}\n    run: \"{command}\"\n    rollback: \"echo undo{step} >> trace\"\n"
        ));
    }
    text
}

#[test]
fn a_failure_at_each_position_undoes_exactly_what_ran_newest_first() {
    for fail in 0..=5 {
        let sandbox = Sandbox::new();
        sandbox.pipeline("five", &five_steps(fail));
        let run = sandbox.upkeep(&["run", "five"]);
        let mut expected: Vec<String> = (1..=5.min(if fail == 0 { 5 } else { fail }))
            .map(|step| format!("run{step}"))
            .collect();
        if fail == 0 {
            run.code(0);
        } else {
            run.code(1)
                .stdout_has(&format!("failed at step {fail} `step {fail}`"));
            // The failed step's own rollback first, then the others newest first.
            expected.extend((1..=fail).rev().map(|step| format!("undo{step}")));
        }
        assert_eq!(sandbox.lines("trace"), expected, "failing at {fail}\n{run}");
    }
}

#[test]
fn a_failing_rollback_does_not_stop_the_others_and_exits_3() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n\
         - run: echo a >> trace\n  rollback: echo undo-a >> trace\n\
         - run: echo b >> trace\n  rollback: echo undo-b >> trace; exit 1\n\
         - run: exit 1\n",
    );
    sandbox
        .upkeep(&["run", "p"])
        .code(3)
        .stdout_has("ROLLBACK INCOMPLETE")
        .stdout_has("not undone");
    assert_eq!(sandbox.lines("trace"), ["a", "b", "undo-b", "undo-a"]);
}

#[test]
fn a_timeout_stops_the_whole_process_group() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n\
         - name: slow\n  run: \"sleep 300 & echo $! > grandchild; sleep 300\"\n  timeout: 1s\n",
    );
    let started = Instant::now();
    sandbox
        .upkeep(&["run", "p"])
        .code(1)
        .stdout_has("timed out after 1s");
    assert!(started.elapsed() < Duration::from_secs(30));
    let pid: i32 = std::fs::read_to_string(sandbox.path("grandchild"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Give the kernel a moment to reap, then the grandchild must be gone.
    let mut alive = true;
    for _ in 0..50 {
        alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        if !alive {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive, "grandchild {pid} survived the timeout");
}

#[test]
fn retries_run_a_step_again() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n\
         - name: flaky\n  run: \"echo try >> tries; [ $(wc -l < tries) -ge 3 ]\"\n  retries: 2\n",
    );
    sandbox.upkeep(&["run", "p"]).code(0);
    assert_eq!(sandbox.lines("tries").len(), 3);
    sandbox.pipeline(
        "q",
        "env: production\nsteps:\n- name: never\n  run: \"echo try >> never; exit 1\"\n  retries: 1\n",
    );
    sandbox.upkeep(&["run", "q"]).code(1);
    assert_eq!(sandbox.lines("never").len(), 2);
}

#[test]
fn conditions_follow_an_allowed_failure() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n\
         - id: probe\n  run: exit 1\n  allow_failure: true\n\
         - when: probe.ok\n  run: echo ok-branch >> trace\n\
         - id: fix\n  when: probe.failed\n  run: echo failed-branch >> trace\n\
         - when: fix.skipped\n  run: echo fix-skipped >> trace\n\
         - when: fix.ok\n  run: echo fix-ok >> trace\n",
    );
    sandbox.upkeep(&["run", "p"]).code(0).stdout_has("skipped");
    assert_eq!(sandbox.lines("trace"), ["failed-branch", "fix-ok"]);
}

const CHECK_THEN_ACT: &str = "env: production\nsteps:\n\
  - id: check\n  uses: integrity\n  with: { deep: true }\n  allow_failure: true\n\
  - name: back up\n  uses: backup\n  when: check.ok\n\
  - name: repair\n  uses: repair\n  when: check.failed\n\
  - name: recheck\n  uses: integrity\n";

#[test]
fn integrity_then_backup_or_repair() {
    let sandbox = Sandbox::new();
    sandbox.pipeline("p", CHECK_THEN_ACT);
    sandbox
        .upkeep(&["run", "p"])
        .code(0)
        .stdout_has("backed up `production` to");
    assert_eq!(sandbox.backups("production").len(), 1);
    corrupt_block_of(&sandbox.db("prod"), "orders");
    sandbox
        .upkeep(&["run", "p"])
        .code(0)
        .stdout_has("skip back up")
        // The repair step says what it did in words.
        .stdout_has("ok repair (")
        .stdout_has("): `production`: restored the newest backup that verifies, production_data_");
    assert_eq!(sandbox.backups("production").len(), 1);
    sandbox.upkeep(&["check", "production", "--deep"]).code(0);
}

#[test]
fn variables_reach_commands_as_environment_never_as_code() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: production\nvars:\n  GREETING: hello\nsteps:\n\
         - run: \"printf '%s|%s|%s|%s\\\\n' \\\"$GREETING\\\" \\\"$EVIL\\\" \\\"$UPKEEP_ENV\\\" \\\"$UPKEEP_DRY_RUN\\\" > seen\"\n",
    );
    sandbox
        .upkeep(&[
            "run",
            "p",
            "--var",
            "EVIL=$(touch pwned)",
            "--var",
            "GREETING=hi",
        ])
        .code(0);
    assert!(!sandbox.path("pwned").exists(), "a variable was executed");
    assert_eq!(
        sandbox.lines("seen"),
        ["hi|$(touch pwned)|production|false"]
    );
    sandbox.upkeep(&["run", "p", "--var", "no-equals"]).code(2);
}

#[test]
fn two_runs_at_once_the_second_is_busy() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "slow",
        "env: production\nsteps:\n- run: \"touch started; sleep 5\"\n",
    );
    let mut first = sandbox.spawn_upkeep(&["run", "slow"], "started");
    sandbox
        .upkeep(&["run", "slow"])
        .code(4)
        .stderr_has(&format!("PID {}", first.id()))
        .stderr_has("upkeep run slow");
    sandbox.upkeep(&["backup", "production"]).code(4);
    assert!(first.wait().unwrap().success());
}

#[test]
fn after_kill_9_run_refuses_and_recover_undoes_what_was_done() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n\
         - run: echo a >> trace\n  rollback: echo undo-a >> trace\n\
         - run: echo b >> trace\n\
         - run: \"echo c >> trace; touch in-c; sleep 60\"\n  rollback: echo undo-c >> trace\n\
         - run: echo d >> trace\n  rollback: echo undo-d >> trace\n",
    );
    let mut upkeep = sandbox.spawn_upkeep(&["run", "p"], "in-c");
    upkeep.kill().unwrap(); // SIGKILL
    upkeep.wait().unwrap();
    sandbox
        .upkeep(&["run", "p"])
        .code(3)
        .stderr_has("upkeep recover");
    sandbox.upkeep(&["recover"]).code(0).stdout_has("undone");
    // The interrupted step's own rollback first, then the earlier ones.
    assert_eq!(sandbox.lines("trace"), ["a", "b", "c", "undo-c", "undo-a"]);
    sandbox
        .upkeep(&["recover"])
        .code(0)
        .stdout_has("nothing to recover");
    assert_eq!(sandbox.lines("trace").len(), 5);
    sandbox.pipeline("ok", "env: production\nsteps:\n- run: \"true\"\n");
    sandbox.upkeep(&["run", "ok"]).code(0);
}

#[test]
fn sigterm_stops_the_step_and_rolls_back() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n\
         - run: echo a >> trace\n  rollback: echo undo-a >> trace\n\
         - run: \"touch waiting; sleep 60\"\n",
    );
    let upkeep = sandbox.spawn_upkeep(&["run", "p"], "waiting");
    unsafe { libc::kill(upkeep.id() as i32, libc::SIGTERM) };
    let output = upkeep.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(sandbox.lines("trace"), ["a", "undo-a"]);
}

/// Every file below the sandbox with its content hash, mtime and mode.
fn snapshot(sandbox: &Sandbox) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    walk(sandbox.dir.path())
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path).unwrap();
            format!(
                "{} {} {} {:o}",
                path.display(),
                blake3::hash(&bytes(&path)).to_hex(),
                meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
                meta.mode()
            )
        })
        .collect()
}

#[test]
fn dry_run_changes_nothing_even_while_the_app_holds_the_database() {
    let sandbox = Sandbox::new();
    sandbox.write("stop.sh", "#!/bin/sh\ntouch stopped\n");
    sandbox.write("start.sh", "#!/bin/sh\ntouch started\n");
    for script in ["stop.sh", "start.sh"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(sandbox.path(script), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n\
         - run: ./stop.sh\n  rollback: ./start.sh\n\
         - id: check\n  uses: integrity\n  allow_failure: true\n\
         - uses: backup\n  when: check.ok\n\
         - uses: repair\n  when: check.failed\n\
         - run: ./start.sh\n",
    );
    sandbox.upkeep(&["backup", "staging"]).code(0);
    let before = snapshot(&sandbox);
    let run = sandbox.upkeep(&["run", "p", "--dry-run"]);
    run.code(0)
        .stdout_has("would run `./stop.sh`")
        .stdout_has("would back up");
    assert_eq!(
        snapshot(&sandbox),
        before,
        "dry-run changed the sandbox\n{run}"
    );
    let db = sandbox.db("prod");
    let _app = sandbox.app(&["hold", db.to_str().unwrap()]);
    let before = snapshot(&sandbox);
    sandbox
        .upkeep(&["run", "p", "--dry-run"])
        .code(0)
        .stdout_has("cannot look now")
        .stdout_has("known only in a real run");
    assert_eq!(snapshot(&sandbox), before);
}

#[test]
fn dry_run_reports_blockers() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n- run: ./missing.sh\n- run: no-such-program-here --flag\n",
    );
    sandbox
        .upkeep(&["run", "p", "--dry-run"])
        .code(1)
        .stdout_has("BLOCKER")
        .stdout_has("missing.sh")
        .stdout_has("no-such-program-here");
}

#[test]
fn every_validation_error_has_its_line() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "bad",
        "env: production\n\
         steps:\n\
         - id: a\n  run: \"true\"\n  rollbak: \"false\"\n\
         - name: nothing to do\n\
         - uses: frobnicate\n\
         - uses: backup\n  with: { keep: 3, kep: 4 }\n\
         - id: a\n  run: \"true\"\n\
         - run: \"true\"\n  when: later.ok\n\
         - id: later\n  run: \"true\"\n  when: nobody.failed\n\
         - run: \"true\"\n  timeout: soon\n",
    );
    sandbox.pipeline("also-bad", "env: nowhere\nsteps: []\n");
    let run = sandbox.upkeep(&["validate"]);
    run.code(2);
    for expected in [
        "bad.yaml:5:3: unknown key `rollbak` in step 1 (did you mean `rollback`?)",
        "bad.yaml:6:3: step 2 has neither `run`",
        "bad.yaml:7:9: unknown step type `frobnicate`",
        "bad.yaml:9:20: unknown key `kep` in `with` of step type `backup`",
        "bad.yaml:10:7: step id `a` is used twice (first by the step at line 3)",
        "bad.yaml:13:9: `when` names step `later`, which comes later (line 14)",
        "bad.yaml:16:9: `when` names step `nobody`, but no earlier step has that `id`",
        "bad.yaml:18:12: `timeout: soon` is not a duration",
        "also-bad.yaml:1:6: unknown environment `nowhere`",
        "also-bad.yaml:2:8: `steps` is empty",
    ] {
        run.stderr_has(expected);
    }
    sandbox
        .upkeep(&["run", "bad"])
        .code(2)
        .stderr_has("bad.yaml:5:3");
    sandbox.pipeline("syntax", "steps:\n  - run: [unclosed\n");
    sandbox
        .upkeep(&["validate", "syntax"])
        .code(2)
        .stderr_has("syntax.yaml:3:");
}

#[test]
fn the_shipped_pipelines_validate() {
    let sandbox = Sandbox::new();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    for name in ["update", "backup", "restore", "repair"] {
        let path = shipped.join(format!("{name}.yaml"));
        sandbox
            .upkeep(&["validate", path.to_str().unwrap()])
            .code(0);
    }
}

#[test]
fn json_events_one_per_line() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n- id: x\n  run: echo hello\n- run: exit 3\n  when: x.failed\n- run: exit 2\n  rollback: \"true\"\n",
    );
    let run = sandbox.upkeep(&["--format", "json", "run", "p"]);
    run.code(1);
    let types: Vec<String> = run
        .json()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "run_started",
            "step_started",
            "step_output",
            "step_finished",
            "step_skipped",
            "step_started",
            "step_finished",
            "rollback_started",
            "rollback_finished",
            "run_finished"
        ],
        "{run}"
    );
    let last = run.json().pop().unwrap();
    assert_eq!(last["exit_code"], 1);
    // The run's log is kept.
    let logs = walk(&sandbox.path(".upkeep/logs"));
    assert_eq!(logs.len(), 1);
    assert!(std::fs::read_to_string(&logs[0]).unwrap().contains("hello"));
}

#[test]
fn the_shipped_backup_pipeline_backs_up_both_for_cron() {
    let sandbox = Sandbox::new();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/backup.yaml");
    std::fs::create_dir_all(sandbox.path("pipelines")).unwrap();
    std::fs::copy(shipped, sandbox.path("pipelines/backup.yaml")).unwrap();
    sandbox.upkeep(&["run", "backup"]).code(0);
    assert_eq!(sandbox.backups("production").len(), 1);
    assert_eq!(sandbox.backups("staging").len(), 1);
    // A damaged production still gets staging backed up, and the run fails.
    corrupt_block_of(&sandbox.db("prod"), "orders");
    sandbox
        .upkeep(&["run", "backup"])
        .code(1)
        .stdout_has("report a failed production backup");
    assert_eq!(sandbox.backups("production").len(), 1);
    assert_eq!(sandbox.backups("staging").len(), 2);
}

#[test]
fn a_restore_is_undone_when_a_later_step_fails() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    sandbox.upkeep(&["backup", "production"]).code(0);
    sql(
        &db,
        "INSERT INTO users (email) VALUES ('newer@example.com')",
    );
    let current = bytes(&db);
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n- uses: restore\n  with: { backup: latest }\n- run: exit 1\n",
    );
    sandbox
        .upkeep(&["run", "p"])
        .code(1)
        .stdout_has("put the previous database back");
    assert_eq!(bytes(&db), current);
    assert_eq!(counts(&db)["users"], 3001);
}

#[test]
fn lock_wait_waits_for_the_other_run() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "slow",
        "env: production\nsteps:\n- run: \"touch started; sleep 2\"\n",
    );
    let mut first = sandbox.spawn_upkeep(&["run", "slow"], "started");
    sandbox
        .upkeep(&["run", "slow", "--lock-wait", "1m"])
        .code(0);
    assert!(first.wait().unwrap().success());
}

#[test]
fn output_to_a_pipe_has_no_escape_codes() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n- uses: integrity\n- run: echo done\n",
    );
    let output = std::process::Command::new(UPKEEP)
        .args(["run", "p"])
        .current_dir(sandbox.dir.path())
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let all = [output.stdout, output.stderr].concat();
    assert!(!all.contains(&0x1b), "{}", String::from_utf8_lossy(&all));
    assert!(String::from_utf8_lossy(&all).contains("ok uses integrity"));
}

#[test]
fn after_an_incomplete_rollback_recover_retries_what_was_not_undone() {
    let sandbox = Sandbox::new();
    // The rollback of b fails while the file `broken` exists.
    sandbox.write("broken", "");
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n\
         - run: echo a >> trace\n  rollback: echo undo-a >> trace\n\
         - run: echo b >> trace\n  rollback: \"[ ! -e broken ] && echo undo-b >> trace\"\n\
         - run: exit 1\n",
    );
    sandbox
        .upkeep(&["run", "p"])
        .code(3)
        .stdout_has("upkeep recover");
    assert_eq!(sandbox.lines("trace"), ["a", "b", "undo-a"]);
    sandbox
        .upkeep(&["run", "p"])
        .code(3)
        .stderr_has("upkeep recover");
    // Still broken: recover says so and keeps the run open.
    sandbox.upkeep(&["recover"]).code(3);
    std::fs::remove_file(sandbox.path("broken")).unwrap();
    sandbox.upkeep(&["recover"]).code(0);
    assert_eq!(sandbox.lines("trace"), ["a", "b", "undo-a", "undo-b"]);
    sandbox
        .upkeep(&["recover"])
        .code(0)
        .stdout_has("nothing to recover");
}

#[test]
fn recover_stops_what_the_killed_run_left_running() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n\
         - run: \"touch in-step; sleep 2; echo late >> trace\"\n  rollback: echo undo >> trace\n",
    );
    let mut upkeep = sandbox.spawn_upkeep(&["run", "p"], "in-step");
    upkeep.kill().unwrap();
    upkeep.wait().unwrap();
    sandbox.upkeep(&["recover"]).code(0);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        sandbox.lines("trace"),
        ["undo"],
        "the orphaned step went on after recover"
    );
}

#[test]
fn recover_forget_closes_a_run_without_undoing() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n- run: echo a >> trace\n  rollback: exit 1\n- run: exit 1\n",
    );
    sandbox.upkeep(&["run", "p"]).code(3);
    sandbox
        .upkeep(&["recover", "--forget"])
        .code(0)
        .stdout_has("without undoing");
    sandbox.pipeline("ok", "env: production\nsteps:\n- run: \"true\"\n");
    sandbox.upkeep(&["run", "ok"]).code(0);
}

#[test]
fn an_empty_journal_left_by_a_kill_is_closed_by_recover() {
    let sandbox = Sandbox::new();
    sandbox.write(".upkeep/runs/20260101T000000Z-1.jsonl", "");
    sandbox.pipeline("ok", "env: production\nsteps:\n- run: \"true\"\n");
    sandbox.upkeep(&["run", "ok"]).code(3);
    sandbox.upkeep(&["recover"]).code(0);
    sandbox.upkeep(&["run", "ok"]).code(0);
}

#[test]
fn a_closed_output_pipe_does_not_stop_a_rollback() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n\
         - run: echo a >> trace\n  rollback: echo undo-a >> trace\n\
         - run: \"sleep 1; exit 1\"\n",
    );
    let mut child = std::process::Command::new(UPKEEP)
        .args(["--format", "json", "run", "p"])
        .current_dir(sandbox.dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away, as with `| head -1`
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    assert_eq!(sandbox.lines("trace"), ["a", "undo-a"]);
    sandbox
        .upkeep(&["recover"])
        .code(0)
        .stdout_has("nothing to recover");
}

#[test]
fn more_validation_rules() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: production\nvars:\n  UPKEEP_DB: x\nsteps:\n\
         - uses: integrity\n  timeout: 5s\n\
         - run: \"\"\n\
         - run: \"true\"\n  rollback: { run: \"true\", with: { a: b } }\n",
    );
    sandbox
        .upkeep(&["validate", "p"])
        .code(2)
        .stderr_has("p.yaml:3:3: `UPKEEP_DB`")
        .stderr_has("p.yaml:6:12: `timeout` applies to `run:` steps")
        .stderr_has("p.yaml:7:8: `run` is empty")
        .stderr_has("p.yaml:9:34: `with` goes with `uses`");
    sandbox.pipeline(
        "two",
        "env: production\nsteps:\n- run: \"true\"\n---\nsteps: []\n",
    );
    sandbox
        .upkeep(&["validate", "two"])
        .code(2)
        .stderr_has("a second YAML document");
    sandbox.pipeline("ok", "env: production\nsteps:\n- run: \"true\"\n");
    sandbox
        .upkeep(&["run", "ok", "--var", "UPKEEP_DB=/etc/passwd"])
        .code(2);
}

#[test]
fn dry_run_finds_a_rollback_that_cannot_run() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n- run: \"true\"\n  rollback: ./missing-start.sh\n- run: ./also-missing.sh\n  allow_failure: true\n",
    );
    sandbox
        .upkeep(&["run", "p", "--dry-run"])
        .code(1)
        .stdout_has("its rollback cannot run")
        .stdout_has("which is allowed")
        .stdout_has("1 blocker(s)");
}

#[test]
fn a_pipeline_without_env_runs_when_no_step_needs_one_or_upkeep_yaml_has_one() {
    let sandbox = Sandbox::new();
    // Only shell steps and a health probe: no environment needed.
    sandbox.pipeline(
        "deploy",
        "steps:\n- run: echo \"deploying [$UPKEEP_ENV]\" > deployed\n- uses: health\n  with: { cmd: 'test -f deployed' }\n",
    );
    let run = sandbox.upkeep(&["run", "deploy"]);
    run.code(0).stdout_has("running `deploy` (run");
    assert_eq!(sandbox.lines("deployed"), vec!["deploying []"], "{run}");
    sandbox.upkeep(&["run", "deploy", "--dry-run"]).code(0);

    // A step that works on a database, and two environments: which one?
    sandbox.pipeline(
        "nightly",
        "steps:\n- run: 'true'\n- name: back up\n  uses: backup\n",
    );
    sandbox
        .upkeep(&["run", "nightly"])
        .code(2)
        .stderr_has("nightly.yaml:3:3: step `back up` works on an environment")
        .stderr_has("--env");
    assert!(sandbox.backups("production").is_empty());
    // `with: { env: }` is enough.
    sandbox.pipeline(
        "nightly",
        "steps:\n- name: back up\n  uses: backup\n  with: { env: staging }\n",
    );
    sandbox.upkeep(&["run", "nightly"]).code(0);
    assert_eq!(sandbox.backups("staging").len(), 1);

    // With one environment in upkeep.yaml, it is the default.
    sandbox.write(
        "upkeep.yaml",
        "databases:\n  production: data/prod.duckdb\nbackups:\n  dir: backups\nschema: schema.sql\n",
    );
    sandbox.pipeline("nightly", "steps:\n- name: back up\n  uses: backup\n");
    sandbox
        .upkeep(&["run", "nightly"])
        .code(0)
        .stdout_has("on `production`");
    assert_eq!(sandbox.backups("production").len(), 1);
}

#[test]
fn after_kill_9_a_run_without_env_is_recovered() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "deploy",
        "steps:\n\
         - run: echo a >> trace\n  rollback: echo undo-a >> trace\n\
         - run: \"touch in-b; sleep 60\"\n",
    );
    let mut upkeep = sandbox.spawn_upkeep(&["run", "deploy"], "in-b");
    upkeep.kill().unwrap();
    upkeep.wait().unwrap();
    sandbox.upkeep(&["recover"]).code(0).stdout_has("undone");
    assert_eq!(sandbox.lines("trace"), ["a", "undo-a"]);
}
