//! Shared test helpers: a sandbox project in a temp dir, real DuckDB files,
//! the real `upkeep` binary, and failure output that shows everything.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use duckdb::Connection;

pub const UPKEEP: &str = env!("CARGO_BIN_EXE_upkeep");
pub const APP: &str = env!("CARGO_BIN_EXE_upkeep-demo-app");

pub const SCHEMA: &str = "\
CREATE SEQUENCE users_id_seq;
CREATE TABLE users (id INTEGER PRIMARY KEY DEFAULT nextval('users_id_seq'), email VARCHAR NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, note VARCHAR);
";

pub const CONFIG: &str = "\
databases:
  production: data/prod.duckdb
  staging: data/staging.duckdb
backups:
  dir: backups
schema: schema.sql
";

/// What the app stand-in commits to the .wal only: 25 users.
pub const WAL_ROWS: &str =
    "INSERT INTO users (email) SELECT 'wal' || i || '@example.com' FROM range(25) r(i)";

/// A project folder with upkeep.yaml, schema.sql and two databases.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    /// The standard sandbox: both databases made with the default (2.0)
    /// storage version and some rows.
    pub fn new() -> Sandbox {
        Sandbox::new_in(&std::env::temp_dir())
    }

    /// The standard sandbox, in a folder of `parent` (another file system).
    pub fn new_in(parent: &Path) -> Sandbox {
        let sandbox = Sandbox {
            dir: tempfile::Builder::new()
                .prefix("upkeep-test-")
                .tempdir_in(parent)
                .expect("temp dir"),
        };
        sandbox.write("upkeep.yaml", CONFIG);
        sandbox.write("schema.sql", SCHEMA);
        make_db(&sandbox.db("prod"), None, 3_000);
        make_db(&sandbox.db("staging"), None, 100);
        sandbox
    }

    /// A folder with nothing in it.
    pub fn empty() -> Sandbox {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("upkeep-test-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// `data/NAME.duckdb`.
    pub fn db(&self, name: &str) -> PathBuf {
        self.path(&format!("data/{name}.duckdb"))
    }

    pub fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Writes an executable `bin/NAME` in the sandbox; returns a PATH that
    /// finds it first.
    pub fn bin(&self, name: &str, script: &str) -> String {
        let relative = format!("bin/{name}");
        self.write(&relative, script);
        executable(&self.path(&relative));
        format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// Runs upkeep in the sandbox with `args`.
    pub fn upkeep(&self, args: &[&str]) -> Run {
        self.upkeep_with(args, &[])
    }

    pub fn upkeep_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = Command::new(UPKEEP);
        command
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("UPKEEP_CONFIG")
            .env_remove("ENVIRONMENT")
            // The suite may itself run in a GitHub Actions job.
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_STEP_SUMMARY")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let label: Vec<&str> = ["upkeep"].iter().chain(args).copied().collect();
        self.capture(command, &label)
    }

    /// Runs any command to its end and captures what a failed assertion
    /// shows: `label` (what it ran), its streams and the sandbox's files.
    pub fn capture(&self, mut command: Command, label: &[&str]) -> Run {
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("run {label:?}: {e}"));
        Run {
            args: label.iter().map(|a| a.to_string()).collect(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            tree: tree(self.dir.path()),
        }
    }

    /// The backup files of `env`, oldest first.
    pub fn backups(&self, env: &str) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.path("backups"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        let name = p.file_name().unwrap().to_string_lossy().into_owned();
                        name.starts_with(&format!("{env}_data_")) && name.ends_with(".duckdb")
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }

    /// Sets `backups.live` in upkeep.yaml (`never`: a held database is
    /// taken through the app's hook or a window, or is busy).
    pub fn set_live(&self, policy: &str) {
        let config = std::fs::read_to_string(self.path("upkeep.yaml")).unwrap();
        assert!(config.contains("\nbackups:\n"), "{config}");
        self.write(
            "upkeep.yaml",
            &config.replacen(
                "\nbackups:\n",
                &format!("\nbackups:\n  live: {policy}\n"),
                1,
            ),
        );
    }

    /// Starts the app stand-in on a database and waits until it is ready.
    pub fn app(&self, args: &[&str]) -> App {
        let mut child = Command::new(APP)
            .args(args)
            .current_dir(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start app stand-in");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("ready"), "app stand-in said {line:?}");
        App { child }
    }
}

/// A running app stand-in; killed (-9) when dropped.
pub struct App {
    pub child: Child,
}

impl App {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The result of one upkeep run, printed in full when an assertion fails.
pub struct Run {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub tree: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\nexit: {:?}\n--- stdout\n{}\n--- stderr\n{}\n--- sandbox\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr,
            self.tree
        )
    }
}

impl Run {
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Run {
        assert_eq!(self.code, Some(expected), "unexpected exit code\n{self}");
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Run {
        assert!(self.stdout.contains(text), "stdout lacks {text:?}\n{self}");
        self
    }

    #[track_caller]
    pub fn stdout_lacks(&self, text: &str) -> &Run {
        assert!(!self.stdout.contains(text), "stdout has {text:?}\n{self}");
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Run {
        assert!(self.stderr.contains(text), "stderr lacks {text:?}\n{self}");
        self
    }

    /// The JSON objects printed with `--format json`.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}\n{self}"))
            })
            .collect()
    }
}

fn tree(dir: &Path) -> String {
    let mut lines = Vec::new();
    for entry in walk(dir) {
        let size = std::fs::metadata(&entry).map(|m| m.len()).unwrap_or(0);
        lines.push(format!(
            "{} ({size} bytes)",
            entry.strip_prefix(dir).unwrap().display()
        ));
    }
    lines.join("\n")
}

/// Every file below `dir`, sorted.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A database with the test schema: `users` with `rows` rows, `orders` with
/// ten times as many, in `storage_version` (DuckDB's default when `None`).
pub fn make_db(path: &Path, storage_version: Option<&str>, rows: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let conn = Connection::open_in_memory().unwrap();
    let version = storage_version
        .map(|v| format!(" (STORAGE_VERSION '{v}')"))
        .unwrap_or_default();
    conn.execute_batch(&format!(
        "ATTACH '{}' AS app{version}; USE app; {SCHEMA}
         INSERT INTO users (email) SELECT 'user' || i || '@example.com' FROM range({rows}) r(i);
         INSERT INTO orders SELECT i, i % {rows}, 'note number ' || i || repeat('x', i % 50) FROM range({rows} * 10) r(i);
         USE memory; DETACH app;",
        path.display()
    ))
    .unwrap();
}

/// Runs SQL on a database file (read-write).
pub fn sql(path: &Path, statements: &str) {
    Connection::open(path)
        .unwrap()
        .execute_batch(statements)
        .unwrap_or_else(|e| panic!("{statements}: {e}"));
}

/// Row counts of every table of a database, opened read-only.
pub fn counts(path: &Path) -> BTreeMap<String, i64> {
    let conn = Connection::open_with_flags(
        path,
        duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .unwrap(),
    )
    .unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT table_name FROM duckdb_tables() WHERE NOT internal ORDER BY 1")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables
        .into_iter()
        .map(|table| {
            let n: i64 = conn
                .query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
                    r.get(0)
                })
                .unwrap();
            (table, n)
        })
        .collect()
}

/// The storage version number in a file's main header (64: v1.0/v1.1, 999: v2.0).
pub fn header_version(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    u64::from_le_bytes(bytes[12..20].try_into().unwrap())
}

/// Overwrites bytes in the middle of a data block of `table` that no other
/// table of the test schema uses, so that its checksum no longer matches.
pub fn corrupt_block_of(path: &Path, table: &str) {
    let (block, block_size) = {
        let conn = Connection::open(path).unwrap();
        let others = if table == "users" { "orders" } else { "users" };
        let block: i64 = conn
            .query_row(
                &format!(
                    "SELECT min(block_id) FROM pragma_storage_info('{table}') WHERE block_id >= 0 \
                     AND block_id NOT IN (SELECT block_id FROM pragma_storage_info('{others}') WHERE block_id >= 0)"
                ),
                [],
                |r| r.get(0),
            )
            .unwrap();
        let block_size: i64 = conn
            .query_row("SELECT block_size FROM pragma_database_size()", [], |r| {
                r.get(0)
            })
            .unwrap();
        (block as u64, block_size as u64)
    };
    let offset = 12_288 + block * block_size + 1_000;
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&[0xA5; 64]).unwrap();
    file.sync_all().unwrap();
}

pub fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// The manifest beside a backup.
pub fn manifest_of(backup: &Path) -> PathBuf {
    let mut name = backup.as_os_str().to_os_string();
    name.push(".manifest.json");
    PathBuf::from(name)
}

/// Runs git in `dir` with a fixed identity; its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Cuts a database of the test schema just before its last data block (as
/// a full disk might); returns that block's id.
pub fn cut_before_last_data_block(db: &Path) -> i64 {
    let last: i64 = Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT max(block_id) FROM (SELECT block_id FROM pragma_storage_info('users') UNION ALL \
             SELECT block_id FROM pragma_storage_info('orders'))",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let good = bytes(db);
    std::fs::write(db, &good[..12_288 + last as usize * 262_144]).unwrap();
    last
}

/// Whether table `users` of `db` has a column `phone` (the tests' migration
/// adds it).
pub fn has_phone(db: &Path) -> bool {
    let conn = Connection::open(db).unwrap();
    let count: i64 = conn
        .query_row(
            "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'users' AND column_name = 'phone'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    count == 1
}

/// A real HTTP server on 127.0.0.1 that takes one request and answers 200;
/// returns its URL and a handle giving the request's head and body, or
/// `None` when no request came within 30 s (so a missing POST fails the
/// test instead of hanging the suite).
pub fn webhook() -> (String, std::thread::JoinHandle<Option<(String, String)>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/upkeep", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let stream = accept_within(&listener, std::time::Duration::from_secs(30))?;
        let mut reader = std::io::BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut stream = reader.into_inner();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        Some((head, String::from_utf8(body).unwrap()))
    });
    (url, server)
}

pub fn accept_within(
    listener: &std::net::TcpListener,
    wait: std::time::Duration,
) -> Option<std::net::TcpStream> {
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + wait;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return Some(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// A TCP port on 127.0.0.1 that nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Makes a script executable (0755).
pub fn executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A tool the tests drive besides upkeep (`age`, `ansible-playbook`,
/// `actionlint`, `s3s-fs`): from PATH, else from the folder that
/// `scripts/test_tools.sh` installs into. A missing tool fails the test with
/// the command that installs it, never skips it.
// Its first users (the Ansible and off-site tests) land from other branches.
#[allow(dead_code)]
pub fn tool(name: &str) -> PathBuf {
    let cache = std::env::var_os("UPKEEP_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/upkeep-tools")
        });
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([cache.join("bin"), cache.join("venv/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: run `eval \"$(bash scripts/test_tools.sh)\"` first")
        })
}
