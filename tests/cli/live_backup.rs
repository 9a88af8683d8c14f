//! Backups and checks of a database that another process holds, copied
//! live (`db::live`, docs/live-copies.md): no `app:` section, no hook, no
//! downtime; and each way a live copy is refused falls back to the hook, a
//! window or busy, saying why.

use std::time::Duration;

use crate::support::*;

/// Rows the holder commits after it opens the database: in its `.wal` only.
const WAL_ROWS: &str =
    "INSERT INTO users (email) SELECT 'wal' || i || '@example.com' FROM range(37) r(i)";

/// Production, re-made in `storage_version` with 200 users, held by the app
/// stand-in with 37 more in its `.wal`.
pub fn held(sandbox: &Sandbox, storage_version: &str) -> App {
    let db = sandbox.db("prod");
    std::fs::remove_file(&db).unwrap();
    make_db(&db, Some(storage_version), 200);
    sandbox.app(&["write", db.to_str().unwrap(), WAL_ROWS])
}

pub fn event<'a>(events: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    events
        .iter()
        .find(|e| e["type"] == kind)
        .unwrap_or_else(|| panic!("no `{kind}` event in {events:?}"))
}

#[test]
fn a_held_database_is_backed_up_live_with_its_wal_rows_and_no_app_section() {
    let sandbox = Sandbox::new();
    let mut app = held(&sandbox, "v2.0.0");
    let run = sandbox.upkeep(&["backup", "production", "--format", "json"]);
    run.code(0);
    let events = run.json();
    let backup = event(&events, "backup");
    assert_eq!(backup["taken"], "live", "{run}");
    assert_eq!(backup["downtime_ms"], 0, "{run}");
    assert!(backup["live"]["wal_commits"].as_u64() >= Some(1), "{run}");
    assert!(
        app.child.try_wait().unwrap().is_none(),
        "the holder stopped\n{run}"
    );
    let backups = sandbox.backups("production");
    assert_eq!(backups.len(), 1, "{run}");
    assert_eq!(counts(&backups[0])["users"], 237, "{run}");
    // Whole on its own: no .wal beside it, nothing left behind.
    assert!(!fsx_wal(&backups[0]).exists());
    let left: Vec<_> = walk(&sandbox.path("backups"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".upkeep-partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    sandbox
        .upkeep(&["verify", "production"])
        .code(0)
        .stdout_has("verified");
    // --no-window forbids stopping the app: a live copy stops nothing.
    sandbox
        .upkeep(&["backup", "production", "--no-window"])
        .code(0)
        .stdout_has("copied live");
    assert!(app.child.try_wait().unwrap().is_none());
}

fn fsx_wal(db: &std::path::Path) -> std::path::PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push(".wal");
    path.into()
}

#[test]
fn a_check_of_a_held_database_reads_a_live_copy_with_its_wal_rows() {
    let sandbox = Sandbox::new();
    let _app = held(&sandbox, "v2.0.0");
    let run = sandbox.upkeep(&["check", "production", "--deep", "--format", "json"]);
    run.code(0);
    assert!(run.stdout.contains("237"), "{run}");
    sandbox
        .upkeep(&["check", "production"])
        .code(0)
        .stdout_has("checked a live copy");
}

#[test]
fn a_storage_version_that_does_not_prove_duckdb_2_falls_back_and_says_why() {
    let sandbox = Sandbox::new();
    let _app = held(&sandbox, "v1.0.0");
    // No `app:`: nothing else to fall back to.
    sandbox
        .upkeep(&["backup", "production"])
        .code(4)
        .stderr_has("no live copy")
        .stderr_has("v1.0.0")
        .stderr_has("backups.live: always");
    sandbox.pipeline("b", "env: production\nsteps:\n  - uses: backup\n");
    sandbox
        .upkeep(&["run", "b", "--dry-run"])
        .stdout_has("not live");
    // The user says the app runs DuckDB 2.0 or later.
    sandbox.set_live("always");
    sandbox
        .upkeep(&["backup", "production"])
        .code(0)
        .stdout_has("copied live");
    assert_eq!(counts(&sandbox.backups("production")[0])["users"], 237);
    assert_eq!(
        header_version(&sandbox.backups("production")[0]),
        header_version(&sandbox.db("prod")),
        "the copy keeps the app's storage version"
    );
}

#[test]
fn a_format_upkeep_does_not_read_falls_back_to_the_hook_and_says_why() {
    let sandbox = Sandbox::new();
    sandbox.set_live("always");
    let db = sandbox.db("prod");
    // A newer DuckDB's file: its main header's version number unknown.
    let mut bytes = bytes(&db);
    bytes[12..20].copy_from_slice(&12345u64.to_le_bytes());
    // Its checksum made good again: only the version is new. (DuckDB's
    // block checksum of 4,088 bytes: whole words only.)
    let sum = bytes[8..4096].chunks_exact(8).fold(5381u64, |sum, word| {
        sum ^ u64::from_le_bytes(word.try_into().unwrap()).wrapping_mul(0xbf58476d1ce4e5b9)
    });
    bytes[..8].copy_from_slice(&sum.to_le_bytes());
    std::fs::write(&db, &bytes).unwrap();
    let mut holder = lock(&db);
    let run = sandbox.upkeep(&["backup", "production"]);
    let _ = holder.kill();
    let _ = holder.wait();
    run.code(4)
        .stderr_has("no live copy")
        .stderr_has("not one upkeep reads");
    assert!(sandbox.backups("production").is_empty(), "{run}");
}

/// A process that holds `db` as DuckDB does (an exclusive POSIX record
/// lock), for files the app stand-in cannot open.
fn lock(db: &std::path::Path) -> std::process::Child {
    let program = "import fcntl, sys, time\nheld = open(sys.argv[1], 'r+b')\n\
                   fcntl.lockf(held, fcntl.LOCK_EX)\nprint('ready', flush=True)\ntime.sleep(600)\n";
    let mut holder = std::process::Command::new("python3")
        .args(["-c", program])
        .arg(db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    holder
}

/// upkeep.yaml with `app:` whose snapshot hook copies `source`.
fn with_hook(sandbox: &Sandbox, backups: &str, source: &std::path::Path) {
    sandbox.write(
        "upkeep.yaml",
        &format!(
            "{}app:\n  stop: 'true'\n  start: 'true'\n  snapshot: cp {} \"$UPKEEP_SNAPSHOT\"\n",
            CONFIG.replacen("\nbackups:\n", &format!("\nbackups:\n{backups}"), 1),
            source.display()
        ),
    );
}

#[test]
fn an_encrypted_database_is_not_copied_live_and_falls_back_to_the_hook_saying_why() {
    let sandbox = Sandbox::new();
    sandbox.set_live("always");
    let db = sandbox.db("prod");
    std::fs::remove_file(&db).unwrap();
    duckdb::Connection::open_in_memory()
        .unwrap()
        .execute_batch(&format!(
            // The bundled DuckDB writes encrypted files only with its
            // fallback crypto module allowed: the format is what matters.
            "SET force_mbedtls_unsafe = 'true'; ATTACH '{}' AS secret (ENCRYPTION_KEY 'k3y'); \
             CREATE TABLE secret.users AS SELECT range AS id FROM range(10); DETACH secret;",
            db.display()
        ))
        .unwrap();
    let mut holder = lock(&db);
    let hook_source = sandbox.path("hook-source.duckdb");
    make_db(&hook_source, None, 5);
    with_hook(&sandbox, "  live: always\n", &hook_source);
    let run = sandbox.upkeep(&["backup", "production", "--format", "json"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_fell_back_to_the_hook(&run, "encrypted");
}

/// The backup was taken through the hook, and says why not live.
fn assert_fell_back_to_the_hook(run: &Run, why_not_live: &str) {
    run.code(0);
    let events = run.json();
    let backup = event(&events, "backup");
    assert_eq!(backup["taken"], "snapshot", "{run}");
    assert!(
        backup["not_live"]
            .as_str()
            .is_some_and(|why| why.contains(why_not_live)),
        "{run}"
    );
}

#[test]
fn backups_ways_sets_which_ways_a_held_database_is_backed_up_and_in_what_order() {
    let sandbox = Sandbox::new();
    let mut app = held(&sandbox, "v2.0.0");
    let hook_source = sandbox.path("hook-source.duckdb");
    make_db(&hook_source, None, 5);
    let taken = |ways: &str| {
        with_hook(&sandbox, &format!("  ways: {ways}\n"), &hook_source);
        let run = sandbox.upkeep(&["backup", "production", "--format", "json"]);
        run.code(0);
        event(&run.json(), "backup")["taken"].clone()
    };
    // The default: live first.
    assert_eq!(taken("[live, hook, window]"), "live");
    // The hook first, though a live copy would do.
    assert_eq!(taken("[hook, live]"), "snapshot");
    assert_eq!(taken("[hook]"), "snapshot");
    // The window first: a dry-run says so (a real one would stop the app;
    // the window tests stop one).
    with_hook(&sandbox, "  ways: [window, live]\n", &hook_source);
    sandbox.pipeline("b", "env: production\nsteps:\n  - uses: backup\n");
    sandbox
        .upkeep(&["run", "b", "--dry-run"])
        .stdout_has("in a window");
    // No way left: busy, each passed over with its reason, nothing stopped.
    with_hook(&sandbox, "  ways: [live]\n  live: never\n", &hook_source);
    sandbox
        .upkeep(&["backup", "production"])
        .code(4)
        .stderr_has("no live copy (`backups.live: never`")
        .stderr_has("the ways of `backups.ways`: live");
    assert!(
        app.child.try_wait().unwrap().is_none(),
        "the holder stopped"
    );
    // Bad lists: exit 2, with the line.
    for (ways, says) in [
        ("[]", "is empty"),
        ("[live, hook, live]", "names `live` twice"),
        ("[live, snapshot]", "snapshot"),
        ("live", "ways"),
    ] {
        with_hook(&sandbox, &format!("  ways: {ways}\n"), &hook_source);
        sandbox
            .upkeep(&["backup", "production"])
            .code(2)
            .stderr_has(says)
            .stderr_has("upkeep.yaml");
    }
    assert_eq!(sandbox.backups("production").len(), 3);
}

#[test]
fn with_app_and_a_hook_a_refused_live_copy_falls_back_to_the_hook() {
    let sandbox = Sandbox::new();
    let _app = held(&sandbox, "v1.0.0");
    let db = sandbox.db("prod");
    // The hook: a consistent copy the app would write (here, of the file
    // made before the holder's commits: the hook is what it is).
    let hook_source = sandbox.path("hook-source.duckdb");
    make_db(&hook_source, Some("v1.0.0"), 5);
    with_hook(&sandbox, "", &hook_source);
    let run = sandbox.upkeep(&["backup", "production", "--format", "json"]);
    assert_fell_back_to_the_hook(&run, "v1.0.0");
    assert!(db.exists());
}

/// Production re-made in v2.0.0 with 200 users and 200,000 orders: some
/// 100 MB, many blocks.
pub fn big_v2_db(sandbox: &Sandbox) -> std::path::PathBuf {
    let db = sandbox.db("prod");
    std::fs::remove_file(&db).unwrap();
    make_db(&db, Some("v2.0.0"), 200);
    sql(
        &db,
        "INSERT INTO orders SELECT 100000 + i, i % 97, repeat(md5(i::VARCHAR), 12) FROM range(200000) r(i)",
    );
    db
}

#[test]
fn kill_9_during_a_live_copy_publishes_nothing_and_leaves_the_app_alone() {
    let sandbox = Sandbox::new();
    let db = big_v2_db(&sandbox);
    let mut app = sandbox.app(&["write", db.to_str().unwrap(), WAL_ROWS]);
    let mut killed = 0;
    for delay in [5u64, 20, 45, 80, 120] {
        let mut backup = std::process::Command::new(UPKEEP)
            .args(["backup", "production"])
            .current_dir(sandbox.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let finished = backup.try_wait().unwrap().is_some();
        let _ = backup.kill();
        let _ = backup.wait();
        killed += usize::from(!finished);
        // Every backup listed is whole and verified; the holder runs on.
        let listed = sandbox.backups("production");
        if !listed.is_empty() {
            sandbox.upkeep(&["verify", "production"]).code(0);
        }
        for listed in listed {
            assert_eq!(counts(&listed)["users"], 237);
        }
        assert!(
            app.child.try_wait().unwrap().is_none(),
            "the holder stopped"
        );
    }
    assert!(
        killed > 0,
        "every backup finished before its kill: make the database bigger"
    );
    // The next backup sweeps what the killed ones left.
    sandbox.upkeep(&["backup", "production"]).code(0);
    let left: Vec<_> = walk(&sandbox.path("backups"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".upkeep-partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
