//! Clones: on a file system that shares blocks (a loop-mounted XFS with
//! reflink), a backup's copy is a clone of the database, so the copy (and
//! a window backup's downtime) does not grow with the database's size.
//! Skipped, with the reason printed, where such a mount cannot be made
//! (not root, no loop devices, no mkfs.xfs); CI runs as root and installs
//! xfsprogs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// A 400 MiB XFS with reflink, loop-mounted in a temp dir; unmounted when
/// dropped.
struct Xfs {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl Xfs {
    /// The mount, or `None` with the reason printed: the test is skipped.
    fn or_skip() -> Option<Xfs> {
        Xfs::new()
            .inspect_err(|reason| eprintln!("skipped: no XFS with reflink here ({reason})"))
            .ok()
    }

    fn new() -> Result<Xfs, String> {
        // SAFETY: no arguments, no side effects.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: cannot mount a loop device".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = dir.path().join("xfs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        std::fs::File::create(&image)
            .and_then(|file| file.set_len(400 << 20))
            .map_err(|e| e.to_string())?;
        run(
            "mkfs.xfs",
            &["-q", "-m", "reflink=1", image.to_str().unwrap()],
        )?;
        run(
            "mount",
            &[
                "-o",
                "loop",
                image.to_str().unwrap(),
                mount.to_str().unwrap(),
            ],
        )?;
        Ok(Xfs { _dir: dir, mount })
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// `filefrag -v`'s extent lines of `path`, and how many are shared.
fn extents(path: &Path) -> (usize, usize) {
    let output = Command::new("filefrag")
        .arg("-v")
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| {
            line.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .collect();
    let shared = lines.iter().filter(|line| line.contains("shared")).count();
    (lines.len(), shared)
}

#[test]
fn on_xfs_with_reflink_a_backup_is_a_verified_clone_of_the_database() {
    let Some(xfs) = Xfs::or_skip() else {
        return;
    };
    let sandbox = Sandbox::new_in(&xfs.mount);
    let db = sandbox.db("prod");
    sql(
        &db,
        "INSERT INTO orders SELECT 100000 + i, i % 100, repeat('y', 200) FROM range(200000) r(i); CHECKPOINT;",
    );
    let run = sandbox.upkeep(&["backup", "production"]);
    run.code(0).stdout_has("verified");
    let backup = sandbox.backups("production").pop().unwrap();
    let (all, shared) = extents(&backup);
    assert!(
        all > 0 && shared == all,
        "{shared} of {all} extents shared\n{run}"
    );
    assert!(
        bytes(&backup) == bytes(&db),
        "the clone differs from the database\n{run}"
    );
    sandbox.upkeep(&["check", "production", "--deep"]).code(0);
}

#[test]
fn on_xfs_with_reflink_a_live_copy_of_a_held_database_is_a_clone() {
    let Some(xfs) = Xfs::or_skip() else {
        return;
    };
    let sandbox = Sandbox::new_in(&xfs.mount);
    let mut app = crate::live_backup::held(&sandbox, "v2.0.0");
    let run = sandbox.upkeep(&["backup", "production", "--format", "json"]);
    run.code(0);
    let events = run.json();
    let backup = crate::live_backup::event(&events, "backup");
    assert_eq!(backup["taken"], "live", "{run}");
    assert_eq!(backup["live"]["cloned"], true, "{run}");
    assert!(backup["live"]["copy_seconds"].as_f64().is_some(), "{run}");
    // The clone holds the app's rows, those only in its .wal too.
    let backups = sandbox.backups("production");
    assert_eq!(counts(&backups[0])["users"], 237, "{run}");
    assert!(
        app.child.try_wait().unwrap().is_none(),
        "the holder stopped"
    );
}
