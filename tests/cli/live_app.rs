//! Backups of a running app (`app:` in upkeep.yaml): the real demo app
//! holds its database, serves `/health` and keeps rows in its `.wal`; a
//! window backup stops and starts it around the copy, a snapshot backup
//! asks it for a copy and never stops it.

use std::path::Path;
use std::time::{Duration, Instant};

use upkeep::demo::{START, STOP};

use crate::support::*;

/// Rows the app commits on start, which stay in its `.wal`.
const APP_SQL: &str =
    "INSERT INTO users (email) SELECT 'live' || i || '@example.com' FROM range(40) r(i)";

/// A sandbox whose production database is served by the demo app, with
/// `app:` configured (and the snapshot hook when `snapshot`).
struct Live {
    sandbox: Sandbox,
    port: u16,
}

impl Live {
    /// upkeep.yaml, and its `  snapshot:` line.
    fn config_and_hook(&self) -> (String, String) {
        let config = std::fs::read_to_string(self.sandbox.path("upkeep.yaml")).unwrap();
        let hook = config
            .lines()
            .find(|line| line.starts_with("  snapshot:"))
            .unwrap()
            .to_string();
        (config, hook)
    }

    fn new(snapshot: bool) -> Live {
        let sandbox = Sandbox::new();
        let port = free_port();
        let start = format!("APP_BIN={APP} APP_PORT={port} APP_SQL=\"{APP_SQL}\" ./start.sh");
        sandbox.write("start.sh", START);
        sandbox.write("stop.sh", STOP);
        sandbox.write("VERSION", "v1");
        for script in ["start.sh", "stop.sh"] {
            executable(&sandbox.path(script));
        }
        let hook = if snapshot {
            format!("  snapshot: {APP} snapshot {port} \"$UPKEEP_SNAPSHOT\"\n")
        } else {
            String::new()
        };
        sandbox.write(
            "upkeep.yaml",
            &format!(
                "{CONFIG}app:\n  stop: ./stop.sh\n  start: '{}'\n  health: {{ url: 'http://127.0.0.1:{port}/health', timeout: 20s }}\n{hook}",
                start.replace('\'', "''")
            ),
        );
        // The hook and the window, as `app:` allows: not live copies
        // (tests/cli/live_backup.rs).
        sandbox.set_live("never");
        let live = Live { sandbox, port };
        live.start();
        live
    }

    fn start(&self) {
        let status = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "APP_BIN={APP} APP_PORT={} APP_SQL=\"{APP_SQL}\" UPKEEP_DB={} ./start.sh",
                self.port,
                self.sandbox.db("prod").display()
            ))
            .current_dir(self.sandbox.dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let started = Instant::now();
        while upkeep::demo::health(self.port).is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "app did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn health(&self) -> Option<String> {
        upkeep::demo::health(self.port)
    }

    /// Rows in the newest backup of production.
    fn rows_in_newest_backup(&self) -> i64 {
        let newest = self.sandbox.backups("production").pop().expect("a backup");
        counts(&newest)["users"]
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = std::process::Command::new("/bin/sh")
            .arg("stop.sh")
            .current_dir(self.sandbox.dir.path())
            .status();
    }
}

#[test]
fn a_window_backup_stops_the_app_for_the_copy_only_and_keeps_its_wal_rows() {
    let live = Live::new(false);
    assert!(live.health().unwrap().contains("users=3040"));
    let run = live.sandbox.upkeep(&["backup", "production"]);
    run.code(0).stdout_has("verified").stdout_has("window");
    assert_eq!(live.rows_in_newest_backup(), 3040, "{run}");
    let health = live
        .health()
        .expect("the app serves again after the backup");
    assert!(health.contains("v1"), "{health}");
}

#[test]
fn a_snapshot_backup_never_stops_the_app() {
    let live = Live::new(true);
    let pid_before = std::fs::read_to_string(live.sandbox.path("app.pid")).unwrap();
    // A prober every 10 ms meanwhile: none may fail.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        let port = live.port;
        std::thread::spawn(move || {
            let (mut probes, mut failures) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                probes += 1;
                if upkeep::demo::health(port).is_none() {
                    failures += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (probes, failures)
        })
    };
    let run = live
        .sandbox
        .upkeep(&["backup", "production", "--no-window"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (probes, failures) = prober.join().unwrap();
    run.code(0).stdout_has("verified").stdout_has("snapshot");
    assert_eq!(
        failures, 0,
        "{failures} of {probes} health probes failed\n{run}"
    );
    assert!(probes > 0);
    assert_eq!(live.rows_in_newest_backup(), 3040, "{run}");
    let pid_after = std::fs::read_to_string(live.sandbox.path("app.pid")).unwrap();
    assert_eq!(pid_before, pid_after, "the app was restarted\n{run}");
}

#[test]
fn no_window_with_a_held_database_and_no_hook_is_busy() {
    let live = Live::new(false);
    let run = live
        .sandbox
        .upkeep(&["backup", "production", "--no-window"]);
    run.code(4).stderr_has("--no-window");
    assert!(live.sandbox.backups("production").is_empty(), "{run}");
    assert!(live.health().is_some());
}

#[test]
fn without_app_a_held_database_is_busy_with_a_hint() {
    let sandbox = Sandbox::new();
    sandbox.set_live("never");
    let db = sandbox.db("prod");
    let _app = sandbox.app(&["hold", db.to_str().unwrap()]);
    sandbox
        .upkeep(&["backup", "production"])
        .code(4)
        .stderr_has("configure `app:`");
}

#[test]
fn an_app_that_does_not_come_back_is_exit_3_notified_and_the_verified_copy_is_published() {
    let live = Live::new(false);
    let (url, webhook) = webhook();
    // The release on disk can no longer start: health never answers.
    let config = std::fs::read_to_string(live.sandbox.path("upkeep.yaml")).unwrap();
    live.sandbox.write(
        "upkeep.yaml",
        &format!(
            "{}  notify: '{url}'\n",
            config
                .replace("timeout: 20s", "timeout: 2s")
                .replace("start: '", "start: 'exit 0; ")
        ),
    );
    let run = live.sandbox.upkeep(&["backup", "production"]);
    run.code(3).stderr_has("DOWN");
    assert!(
        run.stderr
            .trim_start()
            .starts_with("error: THE APP OF production IS DOWN"),
        "said first\n{run}"
    );
    let (_, body) = webhook.join().unwrap().expect("the webhook was told");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["exit_code"], 3, "{body}");
    assert_eq!(body["env"], "production");
    assert!(
        body["reason"].as_str().unwrap().contains("is down"),
        "{body}"
    );
    assert_eq!(live.sandbox.backups("production").len(), 1, "{run}");
    assert_eq!(live.rows_in_newest_backup(), 3040, "{run}");
    assert!(live.health().is_none());
}

#[test]
fn a_hook_that_writes_garbage_or_nothing_publishes_nothing_and_keeps_older_backups() {
    let live = Live::new(true);
    live.sandbox.upkeep(&["backup", "production"]).code(0);
    let before = live.sandbox.backups("production");
    let (config, hook) = live.config_and_hook();
    for bad in [
        "  snapshot: 'head -c 300000 /dev/urandom > \"$UPKEEP_SNAPSHOT\"'",
        "  snapshot: 'true'",
        "  snapshot: 'exit 7'",
    ] {
        live.sandbox
            .write("upkeep.yaml", &config.replace(&hook, bad));
        // A new second, so that a published backup would show.
        std::thread::sleep(Duration::from_millis(1100));
        let run = live.sandbox.upkeep(&["backup", "production"]);
        run.code(1);
        assert_eq!(live.sandbox.backups("production"), before, "{bad}\n{run}");
        let leftovers: Vec<_> = walk(&live.sandbox.path("backups"))
            .into_iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{bad}: {leftovers:?}\n{run}");
        assert!(live.health().is_some(), "{bad}");
    }
}

#[test]
fn check_of_a_running_app_reads_a_fresh_snapshot_or_is_busy_and_never_stops_it() {
    let live = Live::new(true);
    let pid = std::fs::read_to_string(live.sandbox.path("app.pid")).unwrap();
    live.sandbox
        .upkeep(&["check", "production", "--deep"])
        .code(0)
        .stdout_has("fresh snapshot")
        .stdout_has("3040");
    assert_eq!(
        std::fs::read_to_string(live.sandbox.path("app.pid")).unwrap(),
        pid
    );
    let leftovers: Vec<_> = walk(&live.sandbox.path("backups"));
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let live = Live::new(false);
    live.sandbox
        .upkeep(&["check", "production"])
        .code(4)
        .stderr_has("PID")
        .stderr_has("snapshot");
    assert!(live.health().is_some());
}

impl Live {
    fn stop(&self) {
        let status = std::process::Command::new("/bin/sh")
            .arg("stop.sh")
            .current_dir(self.sandbox.dir.path())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Leaves the app stopped, with a backup it cannot run on: its `users`
    /// table is gone. (No schema.sql, so that upkeep verifies the backup
    /// as it is; a short health timeout.)
    fn backup_the_app_cannot_run_on(&self) {
        let config = std::fs::read_to_string(self.sandbox.path("upkeep.yaml")).unwrap();
        self.sandbox.write(
            "upkeep.yaml",
            &config
                .replace("schema: schema.sql\n", "")
                .replace("timeout: 20s", "timeout: 3s"),
        );
        self.stop();
        let db = self.sandbox.db("prod");
        sql(&db, "ALTER TABLE users RENAME TO people");
        self.sandbox.upkeep(&["backup", "production"]).code(0);
        sql(&db, "ALTER TABLE people RENAME TO users");
    }

    fn users_table(&self) -> bool {
        let conn = duckdb::Connection::open(self.sandbox.db("prod")).unwrap();
        conn.query_row(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'users'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 1
    }
}

#[test]
fn restore_on_a_running_app_stops_it_restores_and_starts_it() {
    let live = Live::new(false);
    live.sandbox.upkeep(&["backup", "production"]).code(0);
    let backup = live.sandbox.backups("production").pop().unwrap();
    let name = backup.file_name().unwrap().to_str().unwrap().to_string();
    // New rows after the backup, which the restore takes away.
    live.stop();
    sql(&live.sandbox.db("prod"), "DELETE FROM users WHERE id > 100");
    live.start();
    assert!(live.health().unwrap().contains("users=140"));
    let run = live.sandbox.upkeep(&["restore", "production", &name]);
    run.code(0);
    let health = live.health().expect("the app serves after the restore");
    // The backup's 3040 users, and the 40 the app writes on each start.
    assert!(health.contains("users=3080"), "{health}\n{run}");
}

#[test]
fn an_app_that_is_not_healthy_after_restore_gets_its_previous_database_back() {
    let live = Live::new(false);
    live.backup_the_app_cannot_run_on();
    live.start();
    let name = live.sandbox.backups("production")[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let run = live.sandbox.upkeep(&["restore", "production", &name]);
    run.code(1);
    let health = live
        .health()
        .expect("the app serves again on its previous database");
    assert!(health.contains("users="), "{health}\n{run}");
    live.stop();
    assert!(live.users_table(), "the previous database is back\n{run}");
}

#[test]
fn repair_on_a_running_app_stops_it_repairs_and_starts_it() {
    let live = Live::new(false);
    live.sandbox.upkeep(&["backup", "production"]).code(0);
    live.stop();
    // Rows whose key the table no longer enforces: a content problem that
    // salvage mends while the app is down.
    sql(
        &live.sandbox.db("prod"),
        "CREATE TABLE tmp AS SELECT * FROM orders; DROP TABLE orders; \
         CREATE TABLE orders (id INTEGER, user_id INTEGER, note VARCHAR); \
         INSERT INTO orders SELECT * FROM tmp; INSERT INTO orders SELECT * FROM tmp LIMIT 3; DROP TABLE tmp;",
    );
    live.start();
    let run = live.sandbox.upkeep(&["repair", "production"]);
    run.code(0);
    assert!(live.health().is_some(), "{run}");
    live.stop();
    live.sandbox
        .upkeep(&["check", "production", "--deep"])
        .code(0);
}

#[test]
fn dry_run_says_which_way_each_backup_would_go() {
    for (snapshot, way) in [(false, "in a window"), (true, "snapshot hook")] {
        let live = Live::new(snapshot);
        live.sandbox.pipeline(
            "b",
            "env: production\nsteps:\n- uses: backup\n  with: { env: production }\n- uses: backup\n  with: { env: staging }\n",
        );
        live.sandbox
            .upkeep(&["run", "b", "--dry-run"])
            .code(0)
            .stdout_has(way)
            .stdout_has("PID")
            .stdout_has("directly: nothing holds the database");
        assert!(live.sandbox.backups("production").is_empty());
    }
}

#[test]
fn the_shipped_backup_pipeline_and_the_old_script_back_up_a_running_app() {
    let live = Live::new(false);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/backup.yaml");
    std::fs::create_dir_all(live.sandbox.path("pipelines")).unwrap();
    std::fs::copy(shipped, live.sandbox.path("pipelines/backup.yaml")).unwrap();
    let run = live.sandbox.upkeep(&["run", "backup"]);
    run.code(0);
    assert_eq!(live.sandbox.backups("production").len(), 1, "{run}");
    assert_eq!(live.sandbox.backups("staging").len(), 1, "{run}");
    assert!(live.health().is_some(), "{run}");

    // The old entry point, as cron runs it: from another folder.
    std::thread::sleep(Duration::from_millis(1100));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/backup_db.sh");
    let mut command = std::process::Command::new("bash");
    command
        .arg(&script)
        .arg("production")
        .current_dir("/")
        .env("UPKEEP_CONFIG", live.sandbox.path("upkeep.yaml"))
        .env("UPKEEP", UPKEEP);
    let run = live
        .sandbox
        .capture(command, &["backup_db.sh", "production"]);
    run.code(0);
    assert_eq!(live.sandbox.backups("production").len(), 2, "{run}");
    assert!(live.health().is_some(), "{run}");
}

#[test]
fn production_and_staging_served_by_two_processes_are_each_backed_up_in_their_window() {
    let live = Live::new(false);
    let port = free_port();
    let config = std::fs::read_to_string(live.sandbox.path("upkeep.yaml")).unwrap();
    live.sandbox.write(
        "upkeep.yaml",
        &format!(
            "{config}  environments:\n    staging:\n      stop: cd staging-app && ../stop.sh\n      \
             start: cd staging-app && APP_BIN={APP} APP_PORT={port} ../start.sh\n      \
             health: {{ url: 'http://127.0.0.1:{port}/health', timeout: 20s }}\n"
        ),
    );
    live.sandbox.write("staging-app/VERSION", "staging");
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "cd staging-app && APP_BIN={APP} APP_PORT={port} UPKEEP_DB={} ../start.sh",
            live.sandbox.db("staging").display()
        ))
        .current_dir(live.sandbox.dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    while upkeep::demo::health(port).is_none() {
        assert!(started.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = live.sandbox.upkeep(&["backup", "both"]);
    let stop_staging = || {
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("cd staging-app && ../stop.sh")
            .current_dir(live.sandbox.dir.path())
            .status()
    };
    let staging_health = upkeep::demo::health(port);
    let _ = stop_staging();
    run.code(0);
    assert_eq!(run.stdout.matches("in a window").count(), 2, "{run}");
    assert!(
        staging_health.unwrap_or_default().starts_with("staging"),
        "{run}"
    );
    assert!(live.health().unwrap().starts_with("v1"), "{run}");
    assert_eq!(live.sandbox.backups("staging").len(), 1);
    assert_eq!(live.sandbox.backups("production").len(), 1);
}

#[test]
fn after_kill_9_during_a_window_backup_recover_starts_the_app_again() {
    let live = Live::new(false);
    let config = std::fs::read_to_string(live.sandbox.path("upkeep.yaml")).unwrap();
    // A start that never brings the app up: upkeep waits for it, and is
    // killed meanwhile, with the app down.
    live.sandbox.write(
        "upkeep.yaml",
        &config.replace("start: '", "start: 'exit 0; "),
    );
    let mut child = std::process::Command::new(UPKEEP)
        .args(["backup", "production"])
        .current_dir(live.sandbox.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while live.health().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the app was never stopped"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(live.health().is_none());
    live.sandbox.write("upkeep.yaml", &config);
    let run = live.sandbox.upkeep(&["recover"]);
    run.code(0);
    assert!(
        live.health().is_some(),
        "recover did not start the app\n{run}"
    );
    live.sandbox
        .upkeep(&["recover"])
        .code(0)
        .stdout_has("nothing to recover");
}

#[test]
fn app_config_errors_name_the_line_and_what_to_write() {
    let sandbox = Sandbox::new();
    for (app, expected) in [
        (
            "app:\n  stop: ~\n  start: ./start.sh\n",
            "upkeep.yaml:8:9: `app.stop`: no command given",
        ),
        (
            "app:\n  start: ./start.sh\n",
            "needs both `stop` and `start`",
        ),
        (
            "app:\n  stop: ./stop.sh\n  start: ./start.sh\n  health: { url: 'http://x', tcp: 'y:1' }\n",
            "exactly one of `url`, `tcp` or `cmd`",
        ),
        (
            "app:\n  stop: ./stop.sh\n  start: ./start.sh\n  environments:\n    nope: { start: ./s.sh }\n",
            "`app.environments.nope` names no environment",
        ),
        (
            "app:\n  stop: ./stop.sh\n  start: ./start.sh\n  health: { url: 'http://x', timeout: soon }\n",
            "not a duration",
        ),
    ] {
        sandbox.write("upkeep.yaml", &format!("{CONFIG}{app}"));
        sandbox
            .upkeep(&["check", "production"])
            .code(2)
            .stderr_has(expected);
    }
}

#[test]
fn an_app_that_is_not_healthy_after_repair_gets_its_previous_database_back() {
    let live = Live::new(false);
    live.backup_the_app_cannot_run_on();
    let db = live.sandbox.db("prod");
    corrupt_block_of(&db, "orders");
    let damaged = bytes(&db);
    live.start();
    let run = live.sandbox.upkeep(&["repair", "production"]);
    run.code(1);
    assert!(live.health().is_some(), "the app serves again\n{run}");
    live.stop();
    assert!(
        bytes(&db) == damaged,
        "the previous (damaged) file is back as it was\n{run}"
    );
}

#[test]
fn a_hook_that_hangs_is_stopped_at_hook_timeout_with_its_process_group() {
    let sandbox = Sandbox::new();
    // Each hook records its shell's PID and a background child's, then hangs.
    let hangs = "echo $$ >> hook.pids; sleep 41 & echo $! >> hook.pids; sleep 40";
    sandbox.write(
        "upkeep.yaml",
        &format!(
            "{CONFIG}app:\n  stop: '{hangs}'\n  start: echo start >> trace\n  \
             snapshot: '{hangs}'\n  hook_timeout: 2s\n"
        ),
    );
    sandbox.set_live("never");
    let no_survivor = |run: &Run| {
        let pids: Vec<i32> = std::fs::read_to_string(sandbox.path("hook.pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect();
        assert_eq!(pids.len(), 2, "{run}");
        for pid in pids {
            assert!(
                !crate::health::running(pid),
                "PID {pid} of the hook outlived it\n{run}"
            );
        }
        std::fs::remove_file(sandbox.path("hook.pids")).unwrap();
    };

    // stop-app: the step fails, and its own rollback starts the app again.
    sandbox.pipeline("p", "env: production\nsteps:\n- uses: stop-app\n");
    let started = Instant::now();
    let run = sandbox.upkeep(&["run", "p"]);
    let took = started.elapsed();
    run.code(1)
        .stdout_has("the app's stop command")
        .stdout_has("did not end within 2s (`hook_timeout` under `app:`)");
    assert!(took < Duration::from_secs(15), "took {took:?}\n{run}");
    assert_eq!(sandbox.lines("trace"), ["start"], "{run}");
    no_survivor(&run);

    // The snapshot hook of a backup of a running app: nothing published,
    // nothing left behind.
    let db = sandbox.db("prod");
    let _app = sandbox.app(&["hold", db.to_str().unwrap()]);
    let run = sandbox.upkeep(&["backup", "production"]);
    run.code(1)
        .stderr_has("the app's snapshot command")
        .stderr_has("did not end within 2s");
    assert!(sandbox.backups("production").is_empty(), "{run}");
    let left = std::fs::read_dir(sandbox.path("backups"))
        .map(|entries| entries.flatten().count())
        .unwrap_or(0);
    assert_eq!(left, 0, "{run}");
    no_survivor(&run);
}

#[test]
fn a_backup_never_removes_the_snapshot_that_a_concurrent_check_reads() {
    let live = Live::new(true);
    let (config, hook) = live.config_and_hook();
    // The hook lingers after writing its copy: a backup started meanwhile
    // clears the backups folder of what crashes left.
    live.sandbox.write(
        "upkeep.yaml",
        &config.replace(&hook, &format!("{hook} && sleep 3")),
    );
    let backups = live.sandbox.path("backups");
    let snapshot_written = || {
        walk(&backups).iter().any(|path| {
            path.to_string_lossy().contains(".upkeep-partial-")
                && std::fs::metadata(path).is_ok_and(|meta| meta.len() > 0)
        })
    };
    let check = || {
        let child = std::process::Command::new(UPKEEP)
            .args(["check", "production", "--deep"])
            .current_dir(live.sandbox.dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !snapshot_written() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no snapshot was written"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        child
    };

    let checking = check();
    let backup = live.sandbox.upkeep(&["backup", "production"]);
    let checked = checking.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr),
    );
    backup.code(0);
    assert_eq!(
        checked.status.code(),
        Some(0),
        "check failed\n{stdout}\n{stderr}\n{backup}"
    );
    assert!(stdout.contains("fresh snapshot"), "{stdout}");

    // A check killed with -9 holds its folder no more: the next backup
    // clears it.
    let mut killed = check();
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(snapshot_written());
    let run = live.sandbox.upkeep(&["backup", "production"]);
    run.code(0);
    let partials: Vec<_> = std::fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with(".upkeep-partial-")
        })
        .collect();
    assert!(partials.is_empty(), "{partials:?}\n{run}");

    // A hook that writes nothing says nothing of the database: no
    // "missing file" sending the user to repair it.
    live.sandbox
        .write("upkeep.yaml", &config.replace(&hook, "  snapshot: 'true'"));
    let run = live.sandbox.upkeep(&["check", "production"]);
    run.code(1).stderr_has("wrote nothing to $UPKEEP_SNAPSHOT");
    assert!(!run.stdout.contains("repair"), "{run}");
}

#[test]
fn an_app_command_that_cannot_run_is_found_before_the_app_is_stopped() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "upkeep.yaml",
        &format!("{CONFIG}app:\n  stop: echo stop >> trace\n  start: ./start.sh\n"),
    );
    sandbox.set_live("never");
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n- uses: stop-app\n- uses: start-app\n",
    );
    sandbox
        .upkeep(&["run", "p", "--dry-run"])
        .code(1)
        .stdout_has("start.sh` does not exist");
    let run = sandbox.upkeep(&["run", "p"]);
    run.code(1).stdout_has("the app was not stopped");
    assert!(
        !sandbox.path("trace").exists(),
        "the app was stopped\n{run}"
    );
    // Nor does a window backup stop it.
    let db = sandbox.db("prod");
    let _app = sandbox.app(&["hold", db.to_str().unwrap()]);
    let run = sandbox.upkeep(&["backup", "production"]);
    run.code(1).stderr_has("the app was not stopped");
    assert!(
        !sandbox.path("trace").exists(),
        "the app was stopped\n{run}"
    );
}
