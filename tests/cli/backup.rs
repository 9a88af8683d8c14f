//! `upkeep backup` and `upkeep backups`: consistent, atomic, verified,
//! private, rotated, and never at the cost of an older backup.

use std::os::unix::fs::PermissionsExt;

use crate::support::*;

#[test]
fn rows_committed_only_in_the_wal_are_in_the_backup() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    let mut app = sandbox.app(&["write", db.to_str().unwrap(), WAL_ROWS]);
    app.kill9();
    assert!(
        sandbox.path("data/prod.duckdb.wal").exists(),
        "the rows should be in the .wal only"
    );
    sandbox.upkeep(&["backup", "production"]).code(0);
    let backups = sandbox.backups("production");
    assert_eq!(backups.len(), 1);
    assert_eq!(counts(&backups[0])["users"], 3025);
}

#[test]
fn a_backup_is_verified_private_and_described_by_its_manifest() {
    let sandbox = Sandbox::new();
    sandbox
        .upkeep(&["backup", "production"])
        .code(0)
        .stdout_has("verified");
    let backup = &sandbox.backups("production")[0];
    let name = backup.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("production_data_")
            && name.len() == "production_data_20240115_020000.duckdb".len()
    );
    assert_eq!(
        std::fs::metadata(backup).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let manifest_path = sandbox.path(&format!("backups/{name}.manifest.json"));
    let manifest: serde_json::Value = serde_json::from_slice(&bytes(&manifest_path)).unwrap();
    assert_eq!(manifest["size"], std::fs::metadata(backup).unwrap().len());
    assert_eq!(
        manifest["blake3"],
        blake3::hash(&bytes(backup)).to_hex().as_str()
    );
    assert_eq!(manifest["tables"]["users"], 3000);
    assert_eq!(manifest["tables"]["orders"], 30000);
    assert_eq!(manifest["verified"], true);
    assert!(
        manifest["source"]
            .as_str()
            .unwrap()
            .ends_with("data/prod.duckdb")
    );
    assert!(
        manifest["duckdb_version"]
            .as_str()
            .unwrap()
            .starts_with('v')
    );
    assert_eq!(manifest["storage_version"], "v2.0.0");
    assert!(manifest["created_at"].as_str().is_some());
    assert_eq!(
        std::fs::metadata(&manifest_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    sandbox
        .upkeep(&["backups", "production"])
        .code(0)
        .stdout_has(&name)
        .stdout_has("verified");
}

#[test]
fn backups_in_the_same_second_do_not_collide() {
    let sandbox = Sandbox::new();
    sandbox.upkeep(&["backup", "staging"]).code(0);
    sandbox.upkeep(&["backup", "staging"]).code(0);
    assert_eq!(sandbox.backups("staging").len(), 2);
}

#[test]
fn rotation_keeps_the_newest() {
    let sandbox = Sandbox::new();
    for _ in 0..5 {
        sandbox.upkeep(&["backup", "staging", "--keep=3"]).code(0);
    }
    let kept = sandbox.backups("staging");
    assert_eq!(kept.len(), 3, "{kept:?}");
    let manifests = walk(&sandbox.path("backups"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .count();
    assert_eq!(manifests, 3, "manifests of rotated backups must go too");
    // The next backup rotates the oldest kept one out, never the newest.
    let newest = kept[2].clone();
    sandbox
        .upkeep(&["backup", "staging", "--keep", "3"])
        .code(0);
    let now = sandbox.backups("staging");
    assert!(now.contains(&newest) && !now.contains(&kept[0]));
}

#[test]
fn old_script_backups_are_listed_rotated_and_restorable() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path("backups")).unwrap();
    for day in ["20240115", "20240116", "20240117"] {
        std::fs::copy(
            sandbox.db("staging"),
            sandbox.path(&format!("backups/staging_data_{day}_020000.duckdb")),
        )
        .unwrap();
    }
    sandbox
        .upkeep(&["backups", "staging"])
        .code(0)
        .stdout_has("staging_data_20240117_020000.duckdb")
        .stdout_has("2024-01-17 02:00:00 UTC")
        .stdout_has("legacy");
    sandbox
        .upkeep(&["restore", "staging", "staging_data_20240115_020000.duckdb"])
        .code(0);
    sandbox
        .upkeep(&["backup", "staging", "--keep", "2"])
        .code(0);
    let kept: Vec<String> = sandbox
        .backups("staging")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0], "staging_data_20240117_020000.duckdb");
}

#[test]
fn a_damaged_source_never_costs_an_older_backup() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    sandbox.upkeep(&["backup", "production"]).code(0);
    let good = sandbox.backups("production");
    let good_bytes = bytes(&good[0]);
    corrupt_block_of(&db, "orders");
    sandbox
        .upkeep(&["backup", "production", "--keep", "1"])
        .code(1)
        .stderr_has("failed verification")
        .stderr_has("no older backup was deleted");
    assert_eq!(sandbox.backups("production"), good);
    assert_eq!(bytes(&good[0]), good_bytes);
    let leftovers: Vec<_> = walk(&sandbox.path("backups"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".upkeep-partial")
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn a_database_held_by_the_app_is_copied_live_and_with_live_never_not_at_all() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    let mut app = sandbox.app(&["hold", db.to_str().unwrap()]);
    sandbox
        .upkeep(&["backup", "production"])
        .code(0)
        .stdout_has("copied live");
    assert_eq!(sandbox.backups("production").len(), 1);
    assert!(
        app.child.try_wait().unwrap().is_none(),
        "the holder was stopped"
    );

    sandbox.set_live("never");
    sandbox
        .upkeep(&["backup", "production"])
        .code(4)
        .stderr_has(&format!("PID {}", app.pid()))
        .stderr_has("backups.live: never");
    assert_eq!(sandbox.backups("production").len(), 1);
}

#[test]
fn an_unverified_manifest_is_shown() {
    let sandbox = Sandbox::new();
    sandbox.upkeep(&["backup", "staging"]).code(0);
    let backup = &sandbox.backups("staging")[0];
    let manifest = crate::support::manifest_of(backup);
    let mut value: serde_json::Value = serde_json::from_slice(&bytes(&manifest)).unwrap();
    value["size"] = serde_json::json!(1);
    std::fs::write(&manifest, value.to_string()).unwrap();
    sandbox
        .upkeep(&["backups", "staging"])
        .code(0)
        .stdout_has("unverified");
}

/// A real full disk: the backups folder on a 3 MiB tmpfs.
#[test]
fn a_full_disk_is_refused_before_copying() {
    let sandbox = Sandbox::new();
    let backups = sandbox.path("backups");
    std::fs::create_dir_all(&backups).unwrap();
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&backups)
        .status()
        .unwrap();
    assert!(mounted.success(), "cannot mount a tmpfs as root");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(backups.clone());
    sandbox.upkeep(&["backup", "staging"]).code(0);
    let before = sandbox.backups("staging");
    sandbox
        .upkeep(&["backup", "production", "--keep", "1"])
        .code(1)
        .stderr_has("not enough space");
    assert_eq!(sandbox.backups("staging"), before);
    assert!(sandbox.backups("production").is_empty());
    let names: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".upkeep-partial")),
        "{names:?}"
    );
}

/// A block on DuckDB's free list may hold anything: the read-back finds
/// its checksum wrong, the file's own free list excuses it, and the backup
/// goes through.
#[test]
fn a_damaged_free_block_does_not_fail_a_backup() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("staging");
    sql(
        &db,
        "CREATE TABLE scratch AS SELECT i, md5(i::VARCHAR) AS s FROM range(400000) r(i); CHECKPOINT;
         CREATE TABLE keep AS SELECT i FROM range(300000) r(i); CHECKPOINT;
         DROP TABLE scratch; CHECKPOINT;",
    );
    let free_block = {
        let header = upkeep::db::header::read(&db).unwrap().unwrap();
        let file = std::fs::File::open(&db).unwrap();
        let size = file.metadata().unwrap().len();
        let free = upkeep::db::layout::free_blocks(&file, &header, size).unwrap();
        *free
            .iter()
            .find(|&&block| 12_288 + (block + 1) * 262_144 <= size)
            .expect("the dropped table should leave free blocks inside the file")
    };
    let mut bytes = bytes(&db);
    bytes[12_288 + free_block as usize * 262_144 + 100] ^= 0xFF;
    std::fs::write(&db, bytes).unwrap();
    sandbox.upkeep(&["check", "staging", "--deep"]).code(0);
    sandbox
        .upkeep(&["backup", "staging"])
        .code(0)
        .stdout_has("verified");
}

#[test]
fn leftovers_of_a_crash_are_never_backups_and_are_swept() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path("backups")).unwrap();
    std::fs::copy(
        sandbox.db("staging"),
        sandbox.path("backups/.upkeep-partial-crashed"),
    )
    .unwrap();
    std::fs::write(
        sandbox.path("backups/staging_data_20240101_000000.duckdb.manifest.json"),
        "{}",
    )
    .unwrap();
    sandbox
        .upkeep(&["backups", "staging"])
        .code(0)
        .stdout_has("no backups");
    sandbox
        .upkeep(&["restore", "staging", ".upkeep-partial-crashed"])
        .code(2);
    sandbox.upkeep(&["backup", "staging"]).code(0);
    assert!(!sandbox.path("backups/.upkeep-partial-crashed").exists());
    assert!(
        !sandbox
            .path("backups/staging_data_20240101_000000.duckdb.manifest.json")
            .exists()
    );
}

#[test]
fn rotation_never_deletes_the_backup_just_made() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path("backups")).unwrap();
    // A backup from "the future" (a clock that was set back since).
    let future = sandbox.path("backups/staging_data_29990101_000000.duckdb");
    std::fs::copy(sandbox.db("staging"), &future).unwrap();
    sandbox
        .upkeep(&["backup", "staging", "--keep", "1"])
        .code(0);
    let kept = sandbox.backups("staging");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_ne!(kept[0], future, "the new backup must be the one kept");
}

/// `keep: N` and `retention: last: N` leave exactly N backups once the new
/// one is verified, counting it: it is the newest verified one, so the
/// previous one is not kept as such beside it.
#[test]
fn keep_n_and_last_n_leave_exactly_n_counting_the_new_backup() {
    for n in 1..=3usize {
        let sandbox = Sandbox::new();
        for _ in 0..n + 2 {
            sandbox
                .upkeep(&["backup", "staging", &format!("--keep={n}")])
                .code(0);
        }
        let kept = sandbox.backups("staging");
        assert_eq!(kept.len(), n, "--keep {n}: {kept:?}");
        // In upkeep.yaml, with `keep:` and with `retention: { last: N }`.
        for backups in [
            format!("backups:\n  dir: backups\n  keep: {n}\n"),
            format!("backups:\n  dir: backups\n  retention: {{ last: {n} }}\n"),
        ] {
            sandbox.write(
                "upkeep.yaml",
                &CONFIG.replace("backups:\n  dir: backups\n", &backups),
            );
            let newest = sandbox.backups("staging").last().unwrap().clone();
            sandbox.upkeep(&["backup", "staging"]).code(0);
            let now = sandbox.backups("staging");
            assert_eq!(now.len(), n, "{backups}: {now:?}");
            assert!(n == 1 || now.contains(&newest), "{now:?}");
            let listing = sandbox
                .upkeep(&["backups", "staging"])
                .code(0)
                .stdout
                .clone();
            assert_eq!(listing.matches("newest verified").count(), 1, "{listing}");
        }
    }
}

/// The last verified backup is never deleted: a backup that fails its
/// verification leaves it, with `keep: 1`, as the only one.
#[test]
fn with_keep_1_a_failed_backup_leaves_the_last_verified_one() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    sandbox
        .upkeep(&["backup", "production", "--keep", "1"])
        .code(0);
    sandbox
        .upkeep(&["backup", "production", "--keep", "1"])
        .code(0);
    let good = sandbox.backups("production");
    assert_eq!(good.len(), 1, "{good:?}");
    corrupt_block_of(&db, "orders");
    sandbox
        .upkeep(&["backup", "production", "--keep", "1"])
        .code(1)
        .stderr_has("failed verification");
    assert_eq!(sandbox.backups("production"), good);
    sandbox
        .upkeep(&["backups", "production"])
        .code(0)
        .stdout_has("newest verified");
}

/// What the docs and the code say of restic: it keeps the oldest snapshot
/// when a rule finds fewer periods than its count since 0.16.0, and calls
/// that reason "oldest" since 0.18.0. Every "restic ... since" claim in
/// the docs and sources names one of those.
#[test]
fn restic_versions_named_in_docs_and_code_are_the_right_ones() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for folder in ["docs", "src"] {
        files.extend(walk(&root.join(folder)).into_iter().filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "md" || ext == "rs")
        }));
    }
    let mut claims = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // A claim may wrap: look at each line with the one before it.
        let lines: Vec<&str> = text.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            let Some((_, after)) = line.split_once("since 0.") else {
                continue;
            };
            let context = format!("{} {line}", if at > 0 { lines[at - 1] } else { "" });
            if !context.contains("restic") {
                continue;
            }
            claims += 1;
            let version: String = after
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let version = version.trim_end_matches('.');
            assert!(
                version == "16.0" || version == "18.0",
                "{}:{}: restic since 0.{version}: keeping the oldest came in 0.16.0, its `oldest` wording in 0.18.0",
                file.display(),
                at + 1
            );
            if version == "18.0" {
                assert!(context.contains("oldest"), "{}:{}", file.display(), at + 1);
            }
        }
    }
    assert!(claims >= 2, "the docs and retention.rs say which restic");
}

/// Another process that holds the database is shown by its PID and its
/// program on one short line, however long its command line: here a
/// Python program given with `-c`, many lines long, that holds a write
/// lock on the file as DuckDB does. Every message that names it: backup,
/// check, and a dry-run's plan.
#[test]
fn a_holder_with_a_long_command_line_is_shown_on_one_line() {
    let sandbox = Sandbox::new();
    // Busy, to be shown: not copied live.
    sandbox.set_live("never");
    let db = sandbox.db("prod");
    let program = "import fcntl, sys, time\n\
                   held = open(sys.argv[1], 'r+b')\n\
                   fcntl.lockf(held, fcntl.LOCK_EX)\n\
                   print('ready', flush=True)\n\
                   time.sleep(600)\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", program])
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let holder = Kill(child);
    let pid = holder.0.id();
    sandbox.write(
        "pipelines/b.yaml",
        "env: production\nsteps:\n- uses: backup\n",
    );
    let backup = sandbox.upkeep(&["backup", "production"]);
    let check = sandbox.upkeep(&["check", "production"]);
    let plan = sandbox.upkeep(&["run", "b", "--dry-run"]);
    for (run, text) in [
        (backup.code(4), &backup.stderr),
        (check.code(4), &check.stderr),
        (&plan, &plan.stdout),
    ] {
        let lines: Vec<&str> = text
            .lines()
            .filter(|line| line.contains(&format!("PID {pid}")))
            .collect();
        assert!(!lines.is_empty(), "{run}");
        for line in lines {
            assert!(
                line.contains("python3 -c import fcntl, sys, time…`)"),
                "{line}\n{run}"
            );
        }
        assert!(!text.contains("fcntl.lockf"), "{run}");
    }
}
