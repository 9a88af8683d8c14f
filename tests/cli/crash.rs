//! Crashes: `kill -9` of upkeep at chosen moments, then `upkeep recover`;
//! and the crash soak script in its short mode.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

/// The parent PID and state of a process, from /proc.
fn stat(pid: u32) -> Option<(u32, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((fields.next()?.parse().ok()?, state))
}

fn children(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(ppid, _)| ppid == parent))
        .collect()
}

fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(_, state)| state != 'Z' && state != 'X')
}

/// upkeep is killed the moment it has forked a rollback command (the
/// child may be between fork and exec, or running): `recover` at once is
/// never refused as busy, stops that command, and runs the rollback once
/// to its end.
#[test]
fn a_kill_when_a_rollback_command_is_forked_is_recovered() {
    for round in 0..3 {
        let sandbox = Sandbox::new();
        sandbox.pipeline(
            "rb",
            "env: production\nsteps:\n\
             - name: first\n  run: \"true\"\n  \
               rollback: \"echo $$ >> rollbacks.txt; [ -f recovering ] || exec sleep 60\"\n\
             - name: fails\n  run: \"exit 1\"\n",
        );
        let mut upkeep = std::process::Command::new(UPKEEP)
            .args(["run", "rb"])
            .current_dir(sandbox.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = upkeep.id();
        let runs = sandbox.path(".upkeep/runs");
        let started = Instant::now();
        loop {
            let rolling_back = walk(&runs).iter().any(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .contains("\"rollback_started\"")
            });
            if rolling_back && !children(pid).is_empty() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "round {round}: the rollback never started"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        upkeep.kill().unwrap();
        upkeep.wait().unwrap();
        sandbox.write("recovering", "");
        let run = sandbox.upkeep(&["recover"]);
        run.code(0)
            .stdout_has("recovered run")
            .stdout_has("undone: first");
        assert!(!run.stdout.contains("failed"), "round {round}\n{run}");
        let pids: Vec<u32> = std::fs::read_to_string(sandbox.path("rollbacks.txt"))
            .unwrap()
            .lines()
            .map(|line| line.parse().unwrap())
            .collect();
        assert!(
            (1..=2).contains(&pids.len()),
            "round {round}: {pids:?}\n{run}"
        );
        for pid in pids {
            assert!(
                !alive(pid),
                "round {round}: the killed run's rollback command {pid} still runs\n{run}"
            );
        }
        sandbox.upkeep(&["run", "rb"]).code(1);
    }
}

/// The crash soak in its short mode: one trial of each scenario.
#[test]
fn the_crash_soak_converges_in_its_short_mode() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/crash_soak.sh");
    let work = tempfile::Builder::new()
        .prefix("upkeep-soak-")
        .tempdir()
        .unwrap();
    let output = std::process::Command::new("bash")
        .arg(&script)
        .env("UPKEEP_BIN", UPKEEP)
        .env("CRASH_SOAK_SHORT", "1")
        .env("CRASH_SOAK_DIR", work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "crash soak failed: {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    for scenario in ["backup", "restore", "repair", "update"] {
        assert!(
            stdout.contains(&format!(
                "crash soak: {scenario}: trials 1, converged 1, failures 0"
            )),
            "{stdout}\n{stderr}"
        );
    }
}

/// A restore (or repair, or rollback) killed after it moved the .wal aside
/// and before the new file took the database's place: the database would
/// lack what was committed in its .wal. `recover` (and any command that
/// swaps) puts the .wal back first.
#[test]
fn a_swap_killed_before_the_new_file_is_in_place_gets_its_wal_back() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    let mut app = sandbox.app(&["write", db.to_str().unwrap(), WAL_ROWS]);
    app.kill9();
    let with_wal = counts(&db);
    assert_eq!(with_wal["users"], 3_025);
    // What `swap::put_in_place` has done at that moment: the database
    // hard-linked into a new aside folder, its .wal moved there.
    let shelf = sandbox.path("data/aside/production_20260101_000000");
    std::fs::create_dir_all(&shelf).unwrap();
    std::fs::hard_link(&db, shelf.join("prod.duckdb")).unwrap();
    std::fs::rename(
        sandbox.path("data/prod.duckdb.wal"),
        shelf.join("prod.duckdb.wal"),
    )
    .unwrap();
    sandbox
        .upkeep(&["recover"])
        .code(0)
        .stdout_has("its `.wal` is back");
    assert!(sandbox.path("data/prod.duckdb.wal").exists());
    assert!(
        !shelf.exists(),
        "the shelf of the swap that never was stays"
    );
    assert_eq!(counts(&db), with_wal);
    // A finished swap's shelf holds the previous file: never touched.
    sandbox.upkeep(&["backup", "production"]).code(0);
    sandbox
        .upkeep(&["restore", "production", "--latest"])
        .code(0);
    let kept = walk(&sandbox.path("data/aside"));
    sandbox
        .upkeep(&["recover"])
        .code(0)
        .stdout_has("nothing to recover");
    assert_eq!(walk(&sandbox.path("data/aside")), kept);
}

/// A restore step killed after its swap, before its end is journaled: it
/// journaled the file it replaced (by inode) before it acted, so `recover`
/// finds that file aside and puts it back, with its .wal.
#[test]
fn a_restore_step_killed_after_its_swap_is_undone_by_recover() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    sandbox.upkeep(&["backup", "production"]).code(0);
    let mut app = sandbox.app(&["write", db.to_str().unwrap(), WAL_ROWS]);
    app.kill9();
    let before = counts(&db);
    assert_eq!(before["users"], 3_025);
    sandbox.pipeline(
        "restore",
        "env: production\nsteps:\n- name: restore\n  uses: restore\n\
         - name: die\n  run: \"kill -9 $PPID\"\n",
    );
    let run = sandbox.upkeep(&["run", "restore"]);
    assert_eq!(run.code, None, "upkeep should be killed\n{run}");
    // The kill lands between the swap and the step's end: the journal as
    // it is then (the lines from the step's end on are not written yet).
    let journal = walk(&sandbox.path(".upkeep/runs")).pop().unwrap();
    let text = std::fs::read_to_string(&journal).unwrap();
    let cut = text.find("{\"event\":\"step_done\",\"step\":0").unwrap();
    std::fs::write(&journal, &text[..cut]).unwrap();
    assert_eq!(counts(&db)["users"], 3_000, "the backup should be in place");
    sandbox
        .upkeep(&["recover"])
        .code(0)
        .stdout_has("recovered run")
        .stdout_has("put the previous database back");
    assert_eq!(counts(&db), before);
}

/// The partial copies in `dir`: upkeep's temporary files, and the files in
/// its temporary folders (a live copy's).
fn partials(dir: &Path) -> Vec<std::path::PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| {
            p.strip_prefix(dir).is_ok_and(|relative| {
                relative.components().any(|part| {
                    part.as_os_str()
                        .to_string_lossy()
                        .starts_with(".upkeep-partial")
                })
            })
        })
        .collect()
}

/// `upkeep run update` killed (-9) while it copies the database (the live
/// copy stop-app takes for the restore point, or the backup after the stop),
/// at several moments: `recover` removes the partial copy the run had
/// begun (its path was journaled before it was created), so that it does
/// not fill the disk the next backup needs, and the app runs again on its
/// code and data as before.
#[test]
fn recover_removes_the_partial_backup_of_an_update_killed_while_backing_up() {
    let app = crate::update::App::new();
    let db = app.sandbox.path("backend/prod.duckdb");
    // Big enough (100+ MB) for the copy to outlast the longest delay: the
    // update after it (pull, migrate, start) is quick.
    app.script("stop.sh");
    sql(
        &db,
        "CREATE TABLE filler AS SELECT i, md5(i::VARCHAR) || md5((i * 7)::VARCHAR) \
         || md5((i * 13)::VARCHAR) AS pad FROM range(3000000) r(i); CHECKPOINT;",
    );
    let size = std::fs::metadata(&db).unwrap().len();
    assert!(size > 100_000_000, "{size} bytes");
    app.start();
    // Something new: the update goes past its first look.
    app.release("v2", &[]);
    let head = app.head();
    let before = app.data();
    let backups = app.sandbox.path("backups");
    let mut args = vec!["run".to_string(), "update".to_string()];
    for var in app.vars() {
        args.push("--var".to_string());
        args.push(var);
    }
    for (round, delay) in [0u64, 3, 10, 30, 60].into_iter().enumerate() {
        let mut upkeep = std::process::Command::new(UPKEEP)
            .args(&args)
            .current_dir(app.sandbox.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let started = Instant::now();
        while partials(&backups).is_empty() {
            assert!(
                upkeep.try_wait().unwrap().is_none(),
                "round {round}: the update ended before its backup"
            );
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "round {round}: no partial copy in sight"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        std::thread::sleep(Duration::from_millis(delay));
        upkeep.kill().unwrap();
        upkeep.wait().unwrap();
        let left = partials(&backups);
        if round == 0 {
            assert!(!left.is_empty(), "killed too late to test anything");
        }
        let run = app.sandbox.upkeep(&["recover"]);
        run.code(0).stdout_has("recovered run");
        assert!(
            partials(&backups).is_empty(),
            "round {round} ({delay} ms): left {left:?}, still {:?}\n{run}",
            partials(&backups)
        );
        if !left.is_empty() {
            run.stdout_has("had begun to write");
        }
        assert!(
            app.healthy().is_some(),
            "round {round}: the app is down\n{run}"
        );
    }
    app.assert_as_before(&head, &before);
}
