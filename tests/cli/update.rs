//! The whole update, end to end: a real app process serving /health and
//! holding its DuckDB, a real git origin with a new release, the shipped
//! `pipelines/update.yaml`.

use std::path::Path;

use crate::support::*;

use upkeep::demo::{START, STOP};

/// The app of the update tests (and of `changed`'s).
pub(crate) struct App {
    pub(crate) sandbox: Sandbox,
    port: u16,
    _origin: tempfile::TempDir,
    dev: tempfile::TempDir,
}

impl App {
    /// The app at v1, running; its origin; a developer clone.
    pub(crate) fn new() -> App {
        let sandbox = Sandbox::new();
        let root = sandbox.dir.path().to_path_buf();
        std::fs::rename(root.join("data"), root.join("backend")).unwrap();
        let port = free_port();
        sandbox.write(
            "upkeep.yaml",
            &format!(
                "databases:\n  production: backend/prod.duckdb\n  staging: backend/staging.duckdb\nbackups:\n  dir: backups\nschema: schema.sql\n\
                 app:\n  stop: ./stop.sh\n  start: APP_BIN={APP} APP_PORT={port} ./start.sh\n  \
                 health: {{ url: 'http://127.0.0.1:{port}/health', timeout: 5s }}\n"
            ),
        );
        sandbox.write(".gitignore", "backend/*.duckdb*\nbackend/aside/\nbackend/quarantine/\nbackups/\n.upkeep/\napp.pid\napp.log\n");
        sandbox.write("VERSION", "v1");
        sandbox.write("start.sh", START);
        sandbox.write("stop.sh", STOP);
        executable(&root.join("start.sh"));
        executable(&root.join("stop.sh"));
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/update.yaml");
        std::fs::create_dir_all(root.join("pipelines")).unwrap();
        std::fs::copy(shipped, root.join("pipelines/update.yaml")).unwrap();
        sandbox.write("backend/migrations/.keep", "");
        git(&root, &["init", "-q", "-b", "main"]);
        git(&root, &["add", "-A"]);
        git(&root, &["commit", "-q", "-m", "v1"]);
        let origin = tempfile::tempdir().unwrap();
        git(origin.path(), &["init", "-q", "--bare", "-b", "main"]);
        git(
            &root,
            &["remote", "add", "origin", origin.path().to_str().unwrap()],
        );
        git(&root, &["push", "-q", "-u", "origin", "main"]);
        let dev = tempfile::tempdir().unwrap();
        git(
            dev.path(),
            &["clone", "-q", origin.path().to_str().unwrap(), "."],
        );
        let app = App {
            sandbox,
            port,
            _origin: origin,
            dev,
        };
        app.start();
        app
    }

    /// Pushes a release: VERSION, and files (migrations, scripts).
    pub(crate) fn release(&self, version: &str, files: &[(&str, &str)]) {
        let dev = self.dev.path();
        std::fs::write(dev.join("VERSION"), version).unwrap();
        for (name, text) in files {
            let path = dev.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
        }
        git(dev, &["add", "-A"]);
        git(dev, &["commit", "-q", "-m", version]);
        git(dev, &["push", "-q"]);
    }

    pub(crate) fn vars(&self) -> Vec<String> {
        vec![
            format!("APP_URL=http://127.0.0.1:{}", self.port),
            format!("APP_PORT={}", self.port),
            format!("APP_BIN={APP}"),
            "HEALTH_TIMEOUT=10s".to_string(),
        ]
    }

    fn env(&self) -> Vec<(String, String)> {
        self.vars()
            .into_iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    pub(crate) fn script(&self, name: &str) {
        let status = std::process::Command::new("sh")
            .arg(name)
            .current_dir(self.sandbox.dir.path())
            .envs(self.env())
            .env("UPKEEP_DB", self.sandbox.path("backend/prod.duckdb"))
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub(crate) fn start(&self) {
        self.script("start.sh");
        for _ in 0..100 {
            if self.health().is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!(
            "the app did not start: {}",
            std::fs::read_to_string(self.sandbox.path("app.log")).unwrap_or_default()
        );
    }

    /// The body of GET /health, waiting up to 5 s for the app to answer
    /// (a rollback restarts it in the background).
    pub(crate) fn healthy(&self) -> Option<String> {
        for _ in 0..100 {
            if let Some(body) = self.health() {
                return Some(body);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    /// The body of GET /health, if the app answers.
    fn health(&self) -> Option<String> {
        upkeep::demo::health(self.port)
    }

    pub(crate) fn update(&self) -> Run {
        self.update_with(&[], &[])
    }

    /// `upkeep run update` with `extra` arguments and `vars` overriding the
    /// app's.
    pub(crate) fn update_with(&self, extra: &[&str], vars: &[&str]) -> Run {
        let mut args = vec!["run".to_string(), "update".to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        for var in self
            .vars()
            .into_iter()
            .chain(vars.iter().map(|v| v.to_string()))
        {
            args.push("--var".to_string());
            args.push(var);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.sandbox.upkeep(&args)
    }

    /// The old code, the old app healthy, the old data.
    pub(crate) fn assert_as_before(
        &self,
        head: &str,
        data: &(std::collections::BTreeMap<String, i64>, Vec<String>),
    ) {
        assert_eq!(self.head(), head, "the code must be back on the old commit");
        let health = self.healthy();
        assert!(
            health
                .as_deref()
                .is_some_and(|h| h.starts_with("v1 users=3000")),
            "{health:?}"
        );
        assert_eq!(&self.data(), data);
    }

    pub(crate) fn head(&self) -> String {
        git(self.sandbox.dir.path(), &["rev-parse", "HEAD"])
    }

    /// Table row counts and the columns of `users`, with the app stopped.
    pub(crate) fn data(&self) -> (std::collections::BTreeMap<String, i64>, Vec<String>) {
        self.script("stop.sh");
        let db = self.sandbox.path("backend/prod.duckdb");
        let rows = counts(&db);
        let conn = duckdb::Connection::open_with_flags(
            &db,
            duckdb::Config::default()
                .access_mode(duckdb::AccessMode::ReadOnly)
                .unwrap(),
        )
        .unwrap();
        let columns: Vec<String> = conn
            .prepare("SELECT column_name FROM duckdb_columns() WHERE table_name = 'users' ORDER BY column_index")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        drop(conn);
        self.start();
        (rows, columns)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = std::process::Command::new("sh")
            .arg("stop.sh")
            .current_dir(self.sandbox.dir.path())
            .status();
    }
}

pub(crate) const PHONE: &str = "ALTER TABLE users ADD COLUMN phone VARCHAR;";

#[test]
fn a_release_with_a_migration_goes_live() {
    let app = App::new();
    assert!(app.health().unwrap().starts_with("v1 users=3000"));
    app.release("v2", &[("backend/migrations/0001_phone.sql", PHONE)]);
    app.update()
        .code(0)
        .stdout_has("applied 0001_phone.sql")
        .stdout_has("it is healthy");
    assert!(
        app.health().unwrap().starts_with("v2 users=3000"),
        "{:?}",
        app.health()
    );
    assert_eq!(app.sandbox.backups("production").len(), 1);
    let (_, columns) = app.data();
    assert!(columns.contains(&"phone".to_string()));
    // Nothing new: the second update looks, and ends there.
    let head = app.head();
    let before = app.data();
    app.update()
        .code(0)
        .stdout_has("no migration pending")
        .stdout_has("up to date")
        .stdout_has("nothing new");
    assert_eq!(app.head(), head);
    assert_eq!(app.data(), before);
    assert_eq!(app.sandbox.backups("production").len(), 1);
}

/// The app's PID, from the pid file its start script writes.
pub(crate) fn app_pid(app: &App) -> String {
    std::fs::read_to_string(app.sandbox.path("app.pid"))
        .unwrap()
        .trim()
        .to_string()
}

/// With nothing to pull and no migration pending, the update ends after
/// its read-only look: the app keeps running (same process), nothing is
/// backed up, `changed: false`, exit 0, and it says there was nothing new.
/// A new commit, or `--force`, runs the whole update.
#[test]
fn an_update_with_nothing_new_leaves_the_app_running_untouched() {
    let app = App::new();
    app.release("v2", &[("backend/migrations/0001_phone.sql", PHONE)]);
    app.update().code(0).stdout_has("applied 0001_phone.sql");
    let pid = app_pid(&app);
    let head = app.head();
    let backups = app.sandbox.backups("production");
    let journals = walk(&app.sandbox.path(".upkeep/runs")).len();

    // Nothing new, while the app holds its database: the migrations it
    // recorded are read from a copy, which does not stay.
    let run = app.update_with(&["--format", "json"], &[]);
    run.code(0);
    let events: Vec<serde_json::Value> = run.json();
    let finished = events
        .iter()
        .find(|e| e["type"] == "run_finished")
        .unwrap_or_else(|| panic!("no run_finished\n{run}"));
    assert_eq!(finished["changed"], false, "{run}");
    assert!(
        finished["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("nothing new") && s.contains("app untouched")),
        "{run}"
    );
    let ran: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "step_finished")
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(ran, ["look for news"], "{run}");
    assert_eq!(
        app_pid(&app),
        pid,
        "the app was restarted
{run}"
    );
    assert!(app.health().unwrap().starts_with("v2 users=3000"));
    assert_eq!(app.head(), head);
    assert_eq!(app.sandbox.backups("production"), backups);
    assert_eq!(walk(&app.sandbox.path(".upkeep/runs")).len(), journals + 1);
    let left: Vec<_> = walk(&app.sandbox.path("backups"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".upkeep-partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // In words too.
    app.update()
        .code(0)
        .stdout_has("nothing new (no commit to pull, no migration pending)");
    assert_eq!(app_pid(&app), pid);
    // The dry-run can tell too once the app is down (it reads no copy).
    app.script("stop.sh");
    app.update_with(&["--dry-run"], &[])
        .code(0)
        .stdout_has("the run would end before it");
    app.start();
    let pid = app_pid(&app);

    // --force: the whole update all the same.
    app.update_with(&["--force"], &[])
        .code(0)
        .stdout_has("--force")
        .stdout_has("it is healthy");
    assert_ne!(app_pid(&app), pid, "--force runs the whole update");
    assert_eq!(app.sandbox.backups("production").len(), backups.len() + 1);
    let pid = app_pid(&app);

    // A new commit: the whole update.
    app.release("v3", &[]);
    let run = app.update_with(&["--format", "json"], &[]);
    run.code(0);
    let finished = run.json().into_iter().find(|e| e["type"] == "run_finished");
    assert_eq!(finished.unwrap()["changed"], true, "{run}");
    assert_ne!(app_pid(&app), pid);
    assert!(app.health().unwrap().starts_with("v3 users=3000"));
    assert_eq!(app.sandbox.backups("production").len(), backups.len() + 2);
}

/// A migration file that no run applied yet, with nothing to pull: the
/// update goes on and applies it.
#[test]
fn a_pending_migration_without_a_new_commit_runs_the_update() {
    let app = App::new();
    // Not committed: untracked files leave the tree clean for git-pull.
    app.sandbox
        .write("backend/migrations/0001_phone.sql", PHONE);
    app.update()
        .code(0)
        .stdout_has("1 migration(s) pending: 0001_phone.sql")
        .stdout_has("applied 0001_phone.sql");
    let (_, columns) = app.data();
    assert!(columns.contains(&"phone".to_string()));
}

#[test]
fn a_migration_failing_halfway_leaves_the_old_app_on_its_old_data() {
    let app = App::new();
    let head = app.head();
    let before = app.data();
    app.release(
        "v2",
        &[
            ("backend/migrations/0001_phone.sql", PHONE),
            (
                "backend/migrations/0002_broken.sql",
                "UPDATE users SET phone = 'x'; SELECT nope FROM nowhere;",
            ),
        ],
    );
    app.update()
        .code(1)
        .stdout_has("0002_broken.sql` failed")
        .stdout_has("rolled back");
    app.assert_as_before(&head, &before);
}

#[test]
fn a_release_that_cannot_start_is_rolled_back() {
    let app = App::new();
    let head = app.head();
    let before = app.data();
    // The new release's start script starts nothing.
    app.release(
        "v2",
        &[
            ("backend/migrations/0001_phone.sql", PHONE),
            ("start.sh", "#!/bin/sh\nexit 0\n"),
        ],
    );
    app.update_with(&[], &[])
        .code(1)
        .stdout_has("not healthy after 5s")
        .stdout_has("the migrated one is in");
    app.assert_as_before(&head, &before);
    // The new release had the database: that file is kept aside, migrated.
    let kept = walk(&app.sandbox.path("backend/aside"))
        .into_iter()
        .find(|p| p.ends_with("prod.duckdb"))
        .expect("the migrated database is kept aside");
    assert!(has_phone(&kept));
}

#[test]
fn dry_run_while_the_app_runs_changes_nothing() {
    let app = App::new();
    app.release("v2", &[("backend/migrations/0001_phone.sql", PHONE)]);
    let root = app.sandbox.dir.path();
    let snapshot = || -> Vec<(std::path::PathBuf, Vec<u8>)> {
        walk(root)
            .into_iter()
            .filter(|p| !p.ends_with("app.log"))
            .map(|p| (p.clone(), bytes(&p)))
            .collect()
    };
    let before = snapshot();
    app.update_with(&["--dry-run"], &[])
        .code(0)
        .stdout_has("not fetched yet")
        .stdout_has("start the app of `production`");
    assert!(snapshot() == before, "the dry-run changed the tree");
}

#[test]
fn a_damaged_database_is_repaired_from_the_newest_backup_then_updated() {
    let app = App::new();
    app.script("stop.sh");
    app.sandbox.upkeep(&["backup", "production"]).code(0);
    // Cut the file before its last data block, as a full disk might.
    let db = app.sandbox.path("backend/prod.duckdb");
    cut_before_last_data_block(&db);
    app.start();
    app.release("v2", &[("backend/migrations/0001_phone.sql", PHONE)]);
    app.update()
        .code(0)
        .stdout_has("truncated")
        .stdout_has("restored the newest backup that verifies")
        .stdout_has("applied 0001_phone.sql");
    assert!(
        app.health().unwrap().starts_with("v2 users=3000"),
        "{:?}",
        app.health()
    );
    let (rows, columns) = app.data();
    assert_eq!(rows["orders"], 30_000);
    assert!(columns.contains(&"phone".to_string()));
    assert_eq!(walk(&app.sandbox.path("backend/quarantine")).len(), 1);
}

#[test]
fn after_kill_9_during_the_migration_recover_brings_back_the_old_app_and_data() {
    let app = App::new();
    let head = app.head();
    let before = app.data();
    // A migration long enough to be killed in the middle of.
    app.release(
        "v2",
        &[(
            "backend/migrations/0001_slow.sql",
            "ALTER TABLE users ADD COLUMN phone VARCHAR; \
             CREATE TABLE scratch AS SELECT i, md5(i::VARCHAR) AS s FROM range(200000000) r(i);",
        )],
    );
    let mut args: Vec<String> = vec!["run".into(), "update".into()];
    for var in app.vars() {
        args.push("--var".into());
        args.push(var);
    }
    let mut upkeep = std::process::Command::new(UPKEEP)
        .args(&args)
        .current_dir(app.sandbox.dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until migrate has journaled its restore point, then a moment.
    let runs = app.sandbox.path(".upkeep/runs");
    let started = std::time::Instant::now();
    loop {
        let journaled = walk(&runs).iter().any(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .any(|line| line.contains("\"step_undo\"") && line.contains("\"uses\":\"migrate\""))
        });
        if journaled {
            break;
        }
        assert!(started.elapsed().as_secs() < 60, "migrate never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    upkeep.kill().unwrap();
    upkeep.wait().unwrap();
    app.sandbox
        .upkeep(&["run", "update"])
        .code(3)
        .stderr_has("upkeep recover");
    app.sandbox.upkeep(&["recover"]).code(0);
    app.assert_as_before(&head, &before);
}
