//! `upkeep demo`: the README's first command. Builds a sandbox with a small
//! app (a real process serving `/health` on 127.0.0.1 and holding its
//! DuckDB open, with `start.sh` / `stop.sh`), a git origin holding a newer
//! release with a migration, `upkeep.yaml`, `schema.sql` and the shipped
//! pipelines; then runs `upkeep run update` as a user would, and shows the
//! result. A second release, whose migration fails, is rolled back: the old
//! app is healthy again on its old data.

pub mod app;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::db::open::{self, literal};
use crate::error::{bad_input, code};
use crate::report::Printer;

const SCHEMA: &str = "\
CREATE SEQUENCE users_id_seq;
CREATE SEQUENCE orders_id_seq;
CREATE TABLE users (
    id INTEGER PRIMARY KEY DEFAULT nextval('users_id_seq'),
    email VARCHAR NOT NULL,
    created_at TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY DEFAULT nextval('orders_id_seq'),
    user_id INTEGER NOT NULL,
    amount DECIMAL(10, 2),
    note VARCHAR
);
";

const CONFIG: &str = "\
databases:
  production: backend/data.duckdb
  staging: backend/data_staging.duckdb
backups:
  dir: backend/backups
  keep: 5
  live: always    # the app runs DuckDB 2.0, which live copies need (its file is in 1.1's format)
schema: backend/schema.sql
";

const GITIGNORE: &str = "backend/*.duckdb*\nbackend/backups/\nbackend/aside/\nbackend/quarantine/\n.upkeep/\napp.pid\napp.log\n";

/// The demo app's start script (the end-to-end tests use it too).
pub const START: &str = r#"#!/bin/sh
# Starts the app in the background, in its own session. Does nothing when it
# runs already: after a crash, `upkeep recover` may run a rollback that had
# begun. The app's own process writes app.pid before it serves, so a start
# script killed halfway leaves no app that stop.sh cannot find.
if [ -f app.pid ] && grep -q serve "/proc/$(cat app.pid)/cmdline" 2>/dev/null; then exit 0; fi
rm -f app.pid
setsid sh -c 'echo $$ > app.pid.new && mv app.pid.new app.pid && exec "$0" serve "$1" "$2" "$3"' \
  "$APP_BIN" "$UPKEEP_DB" "$APP_PORT" "$(cat VERSION)" > app.log 2>&1 < /dev/null &
i=0
while [ ! -s app.pid ] && [ $i -lt 250 ]; do sleep 0.02; i=$((i+1)); done
"#;

/// The demo app's stop script (the end-to-end tests use it too).
pub const STOP: &str = r#"#!/bin/sh
# Stops the app and waits until it is gone (its database lock with it).
[ -f app.pid ] || exit 0
pid=$(cat app.pid)
kill "$pid" 2>/dev/null
while [ -e "/proc/$pid" ]; do
  # Dead once its main thread is a zombie and no other thread is left: a
  # zombie main thread alone does not mean its files (and lock) are closed.
  if grep -q ') Z ' "/proc/$pid/stat" 2>/dev/null && [ "$(ls "/proc/$pid/task" 2>/dev/null | wc -l)" -le 1 ]; then break; fi
  sleep 0.05
done
rm -f app.pid
"#;

/// The shipped pipelines.
const PIPELINES: &[(&str, &str)] = &[
    ("update.yaml", include_str!("../../pipelines/update.yaml")),
    ("backup.yaml", include_str!("../../pipelines/backup.yaml")),
    ("repair.yaml", include_str!("../../pipelines/repair.yaml")),
    ("restore.yaml", include_str!("../../pipelines/restore.yaml")),
];

struct Demo<'a> {
    printer: &'a Printer,
    /// The app's work tree, with upkeep.yaml.
    app: PathBuf,
    /// A developer's clone, to push releases from.
    dev: PathBuf,
    exe: PathBuf,
    vars: Vec<(String, String)>,
    port: u16,
}

pub fn run(dir: Option<&Path>, printer: &Printer) -> Result<i32> {
    let root = sandbox(dir)?;
    let exe = std::env::current_exe().context("cannot find the upkeep executable")?;
    let app = root.join("app");
    let origin = root.join("origin.git");
    let dev = root.join("dev");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    // The app stand-in is upkeep itself (`upkeep demo-app`), wrapped so
    // that start.sh has one program to run.
    let app_bin = root.join("app-bin");
    write_executable(
        &app_bin,
        &format!(
            "#!/bin/sh\nexec {:?} demo-app \"$@\"\n",
            exe.display().to_string()
        ),
    )?;
    let demo = Demo {
        printer,
        vars: vec![
            ("APP_URL".into(), format!("http://127.0.0.1:{port}")),
            ("APP_PORT".into(), port.to_string()),
            ("APP_BIN".into(), app_bin.display().to_string()),
            ("HEALTH_TIMEOUT".into(), "20s".into()),
        ],
        app,
        dev,
        exe,
        port,
    };
    demo.build(&origin)?;
    let result = demo.scenarios();
    // Leave no process behind, whatever happened.
    let _ = demo.script("stop.sh");
    let status = result?;
    printer.note(&format!(
        "The sandbox stays in {}: `cd {}` and try `upkeep run update --dry-run`, `upkeep backups production`.",
        root.display(),
        demo.app.display()
    ));
    Ok(status)
}

impl Demo<'_> {
    fn build(&self, origin: &Path) -> Result<()> {
        let app = &self.app;
        std::fs::create_dir_all(app.join("backend/migrations"))?;
        std::fs::create_dir_all(app.join("pipelines"))?;
        std::fs::write(app.join("upkeep.yaml"), self.config("always", false))?;
        std::fs::write(app.join("backend/schema.sql"), SCHEMA)?;
        std::fs::write(app.join("backend/migrations/.keep"), "")?;
        std::fs::write(app.join(".gitignore"), GITIGNORE)?;
        std::fs::write(app.join("VERSION"), "v1")?;
        write_executable(&app.join("start.sh"), START)?;
        write_executable(&app.join("stop.sh"), STOP)?;
        for (name, text) in PIPELINES {
            std::fs::write(app.join("pipelines").join(name), text)?;
        }
        make_database(&app.join("backend/data.duckdb"), 2_000, 20_000)?;
        make_database(&app.join("backend/data_staging.duckdb"), 200, 1_000)?;
        git(app, &["init", "-q", "-b", "main"])?;
        git(app, &["add", "-A"])?;
        git(app, &["commit", "-q", "-m", "v1"])?;
        git(
            app,
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                "--",
                &origin.display().to_string(),
            ],
        )?;
        git(
            app,
            &[
                "remote",
                "add",
                "--",
                "origin",
                &origin.display().to_string(),
            ],
        )?;
        git(app, &["push", "-q", "-u", "origin", "main"])?;
        git(
            app,
            &[
                "clone",
                "-q",
                "--",
                &origin.display().to_string(),
                &self.dev.display().to_string(),
            ],
        )?;
        self.script("start.sh")?;
        self.wait_healthy()?;
        self.printer.note(&format!(
            "demo: app v1 running on 127.0.0.1:{} ({}), its code in git, a DuckDB written as DuckDB 1.1 would\n",
            self.port,
            self.app.display()
        ));
        Ok(())
    }

    /// upkeep.yaml: the databases, when live copies are taken
    /// (`backups.live`), and the app's lifecycle (`app:`), with its
    /// snapshot hook or without.
    fn config(&self, live: &str, snapshot: bool) -> String {
        let app_bin = self.app_bin();
        let config = CONFIG.replace("live: always", &format!("live: {live}"));
        let mut text = format!(
            "{config}app:\n  stop: ./stop.sh\n  start: APP_BIN={app_bin} APP_PORT={port} ./start.sh\n  \
             health: {{ url: 'http://127.0.0.1:{port}/health', timeout: 20s }}\n",
            port = self.port
        );
        if snapshot {
            // The app writes a consistent copy itself, from its own process.
            text.push_str(&format!(
                "  snapshot: {app_bin} snapshot {} \"$UPKEEP_SNAPSHOT\"\n",
                self.port
            ));
        }
        text
    }

    fn app_bin(&self) -> String {
        self.vars
            .iter()
            .find(|(name, _)| name == "APP_BIN")
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    }

    fn scenarios(&self) -> Result<i32> {
        self.printer.note(
            "--- backups of the running app: copied live (no downtime, no hook); then, with `backups.live: never`, \
             in a window (stopped for the copy only) and through its snapshot hook (no downtime)",
        );
        let live = self.upkeep(&["backup", "production"])?;
        std::fs::write(self.app.join("upkeep.yaml"), self.config("never", false))?;
        let window = self.upkeep(&["backup", "production"])?;
        std::fs::write(self.app.join("upkeep.yaml"), self.config("never", true))?;
        let hook = self.upkeep(&["backup", "production"])?;
        std::fs::write(self.app.join("upkeep.yaml"), self.config("always", false))?;
        if live != code::OK || window != code::OK || hook != code::OK {
            return Ok(code::FAILED);
        }
        self.release(
            "v2",
            "0001_add_phone.sql",
            "ALTER TABLE users ADD COLUMN phone VARCHAR;\nUPDATE users SET phone = '+33 1 00 00 00 ' || id WHERE id <= 10;\n",
        )?;
        let first = self.upkeep(&["run", "update", "--yes"])?;
        self.printer.note(&format!(
            "health: {}",
            self.health().unwrap_or_else(|| "no answer".into())
        ));
        let listed = self.upkeep(&["backups", "production"])?;

        self.release(
            "v3",
            "0002_broken.sql",
            "ALTER TABLE orders ADD COLUMN shipped BOOLEAN;\nUPDATE orders SET shipped = no_such_column;\n",
        )?;
        let second = self.upkeep(&["run", "update", "--yes"])?;
        self.wait_healthy()?;
        self.printer.note(&format!(
            "health after the rollback: {} (the old app, on its old data)\n",
            self.health().unwrap_or_else(|| "no answer".into())
        ));
        Ok(
            if first == code::OK && listed == code::OK && second == code::FAILED {
                code::OK
            } else {
                code::FAILED
            },
        )
    }

    /// Pushes a release from the developer clone: VERSION and a migration.
    fn release(&self, version: &str, migration: &str, sql: &str) -> Result<()> {
        std::fs::write(self.dev.join("VERSION"), version)?;
        std::fs::write(self.dev.join("backend/migrations").join(migration), sql)?;
        git(&self.dev, &["add", "-A"])?;
        git(&self.dev, &["commit", "-q", "-m", version])?;
        git(&self.dev, &["push", "-q"])?;
        self.printer.note(&format!(
            "--- release {version} pushed to origin, with migration {migration}"
        ));
        Ok(())
    }

    fn upkeep(&self, args: &[&str]) -> Result<i32> {
        let mut command = Command::new(&self.exe);
        command.args(args).current_dir(&self.app);
        if args.first() == Some(&"run") {
            for (name, value) in &self.vars {
                command.arg("--var").arg(format!("{name}={value}"));
            }
        }
        self.printer.note(&format!("$ upkeep {}", args.join(" ")));
        let status = command
            .status()
            .with_context(|| format!("cannot run `upkeep {}`", args.join(" ")))?;
        self.printer.note("");
        Ok(status.code().unwrap_or(code::FAILED))
    }

    fn script(&self, name: &str) -> Result<()> {
        let status = Command::new("sh")
            .arg(name)
            .current_dir(&self.app)
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .env("UPKEEP_DB", self.app.join("backend/data.duckdb"))
            .status()
            .with_context(|| format!("cannot run {name}"))?;
        if !status.success() {
            bail!("{name} failed: {status}");
        }
        Ok(())
    }

    fn wait_healthy(&self) -> Result<()> {
        for _ in 0..200 {
            if self.health().is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "the demo app did not answer on 127.0.0.1:{}: see {}",
            self.port,
            self.app.join("app.log").display()
        )
    }

    fn health(&self) -> Option<String> {
        health(self.port)
    }
}

/// The body of `GET /health` from the app on 127.0.0.1:`port`, if it answers.
pub fn health(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer
        .split("\r\n\r\n")
        .nth(1)
        .map(|body| body.trim().to_string())
}

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "upkeep demo")
        .env("GIT_AUTHOR_EMAIL", "demo@example.com")
        .env("GIT_COMMITTER_NAME", "upkeep demo")
        .env("GIT_COMMITTER_EMAIL", "demo@example.com")
        .output()
        .context("the demo needs git: install it (apt-get install git)")?;
    if !output.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn sandbox(dir: Option<&Path>) -> Result<PathBuf> {
    match dir {
        Some(dir) => {
            if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
                return Err(bad_input(format!(
                    "demo folder `{}` is not empty: give a new or empty folder with --dir",
                    dir.display()
                )));
            }
            std::fs::create_dir_all(dir)?;
            Ok(std::path::absolute(dir)?)
        }
        None => Ok(tempfile::Builder::new()
            .prefix("upkeep-demo-")
            .tempdir()?
            .keep()),
    }
}

/// A database as an app on DuckDB 1.1 would have written it.
fn make_database(path: &Path, users: u32, orders: u32) -> Result<()> {
    if path.exists() {
        bail!("`{}` exists already", path.display());
    }
    let conn = open::open_in_memory()?;
    conn.execute_batch(&format!(
        "ATTACH {} AS app (STORAGE_VERSION 'v1.1.0'); USE app;\n{SCHEMA}\n\
         INSERT INTO users (email) SELECT 'user' || i || '@example.com' FROM range({users}) r(i);\n\
         INSERT INTO orders (user_id, amount, note) \
           SELECT 1 + i % {users}, (i % 1000) / 10.0, 'order ' || i FROM range({orders}) r(i);\n\
         USE memory; DETACH app;",
        literal(&path.to_string_lossy())
    ))
    .with_context(|| format!("cannot create demo database `{}`", path.display()))
}
