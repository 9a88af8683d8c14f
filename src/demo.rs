//! `upkeep demo`: the README's first command. Builds a sandbox project (an
//! upkeep.yaml, a schema.sql, production and staging databases written in an
//! older storage version, as an app on DuckDB 1.1 would have them), then
//! runs upkeep on it exactly as a user would type it: check, backup, the
//! backups list, and the repair pipeline (dry-run, then for real).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::commands::most_serious;
use crate::db::open::{self, literal};
use crate::error::bad_input;
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

/// The shipped pipelines the demo uses (update.yaml needs the step types of
/// the next release).
const PIPELINES: &[(&str, &str)] = &[
    ("backup.yaml", include_str!("../pipelines/backup.yaml")),
    ("repair.yaml", include_str!("../pipelines/repair.yaml")),
    ("restore.yaml", include_str!("../pipelines/restore.yaml")),
];

/// Stand-ins for the app's own scripts.
const SCRIPTS: &[(&str, &str)] = &[
    ("stop.sh", "#!/bin/sh\necho \"app stopped\"\n"),
    ("start.sh", "#!/bin/sh\necho \"app started\"\n"),
];

const CONFIG: &str = "\
databases:
  production: backend/data.duckdb
  staging: backend/data_staging.duckdb
backups:
  dir: backend/backups
  keep: 5
schema: backend/schema.sql
";

pub fn run(dir: Option<&Path>, printer: &Printer) -> Result<i32> {
    let root = sandbox(dir)?;
    let backend = root.join("backend");
    std::fs::create_dir_all(&backend)?;
    std::fs::write(root.join("upkeep.yaml"), CONFIG)?;
    std::fs::write(backend.join("schema.sql"), SCHEMA)?;
    let pipelines = root.join("pipelines");
    std::fs::create_dir_all(&pipelines)?;
    for (name, text) in PIPELINES {
        std::fs::write(pipelines.join(name), text)?;
    }
    for (name, text) in SCRIPTS {
        let path = root.join(name);
        std::fs::write(&path, text)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    make_database(&backend.join("data.duckdb"), 2_000, 20_000)?;
    make_database(&backend.join("data_staging.duckdb"), 200, 1_000)?;
    printer.note(&format!("demo sandbox: {}\n", root.display()));

    let exe = std::env::current_exe().context("cannot find the upkeep executable")?;
    let mut worst = 0;
    for args in [
        &["check", "both"][..],
        &["backup", "both"],
        &["backups", "production"],
        &["check", "production", "--deep"],
        &["run", "repair", "--dry-run"],
        &["run", "repair"],
    ] {
        printer.note(&format!("$ upkeep {}", args.join(" ")));
        let status = Command::new(&exe)
            .args(args)
            .current_dir(&root)
            .status()
            .with_context(|| format!("cannot run `upkeep {}`", args.join(" ")))?;
        printer.note("");
        worst = most_serious(worst, status.code().unwrap_or(1));
    }
    printer.note(&format!(
        "The sandbox stays in {}: try `cd {} && upkeep repair production`.",
        root.display(),
        root.display()
    ));
    Ok(worst)
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
