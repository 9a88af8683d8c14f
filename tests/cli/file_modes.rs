//! Files upkeep keeps (quarantine, aside, the lock, journals, run logs) are
//! readable by their owner only, whatever the mode of the folder they are
//! in; the database it puts back keeps the mode it had.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Commits rows that stay in `db`'s .wal (the writer is killed -9).
fn leave_a_wal(sandbox: &Sandbox, db: &Path) {
    let mut app = sandbox.app(&["write", db.to_str().unwrap(), WAL_ROWS]);
    app.kill9();
    let wal = db.with_extension("duckdb.wal");
    assert!(wal.exists(), "no {}", wal.display());
}

#[test]
fn kept_files_are_private_in_folders_that_let_others_in() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    let wal = sandbox.path("data/prod.duckdb.wal");
    // Folders that exist already, open to all, and a lock file left by an
    // older upkeep.
    for folder in [
        "data/quarantine",
        "data/aside",
        ".upkeep/runs",
        ".upkeep/logs",
    ] {
        std::fs::create_dir_all(sandbox.path(folder)).unwrap();
    }
    for folder in [
        "data/quarantine",
        "data/aside",
        ".upkeep",
        ".upkeep/runs",
        ".upkeep/logs",
    ] {
        set_mode(&sandbox.path(folder), 0o755);
    }
    sandbox.write(".upkeep/lock", "");
    set_mode(&sandbox.path(".upkeep/lock"), 0o644);
    // The app's database is group-readable: it must stay so.
    set_mode(&db, 0o640);

    sandbox.upkeep(&["backup", "production"]).code(0);
    leave_a_wal(&sandbox, &db);
    set_mode(&wal, 0o640);
    sandbox
        .upkeep(&["restore", "production", "--latest"])
        .code(0);
    assert_eq!(mode(&db), 0o640, "the restored database keeps the mode");

    // A pipeline restores, fails, and puts the previous database (and its
    // .wal) back: they get the modes they had, not the aside folder's 0600.
    leave_a_wal(&sandbox, &db);
    set_mode(&wal, 0o640);
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n- uses: restore\n  with: { backup: latest }\n- run: exit 1\n",
    );
    sandbox
        .upkeep(&["run", "p"])
        .code(1)
        .stdout_has("put the previous database back");
    assert_eq!(mode(&db), 0o640, "the database put back keeps its mode");
    assert_eq!(
        mode(&wal),
        0o640,
        "the .wal put back takes the database's mode"
    );

    std::fs::write(&db, b"not a database at all").unwrap();
    let _ = std::fs::remove_file(&wal);
    sandbox.upkeep(&["repair", "production"]).code(0);
    assert_eq!(mode(&db), 0o640, "the repaired database keeps the mode");

    let mut seen = Vec::new();
    for folder in ["data/quarantine", "data/aside", ".upkeep"] {
        for file in walk(&sandbox.path(folder)) {
            seen.push(format!("{} {:o}", file.display(), mode(&file)));
            assert_eq!(
                mode(&file),
                0o600,
                "{} is not private; all kept files:\n{}",
                file.display(),
                walk(&sandbox.path(folder))
                    .iter()
                    .map(|f| format!("{:o} {}", mode(f), f.display()))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    // Every kind of file was there to look at.
    for kind in [
        "quarantine/",
        "aside/",
        ".upkeep/lock",
        ".upkeep/runs/",
        ".upkeep/logs/",
    ] {
        assert!(
            seen.iter().any(|s| s.contains(kind)),
            "no {kind} in {seen:#?}"
        );
    }
    assert!(
        seen.iter()
            .any(|s| s.contains("aside/") && s.contains(".wal")),
        "no .wal aside in {seen:#?}"
    );
    // The folders that were there are left as they were.
    assert_eq!(mode(&sandbox.path("data/aside")), 0o755);
    assert_eq!(mode(&sandbox.path(".upkeep")), 0o755);
}
