//! The old entry points, `scripts/backup_db.sh` and
//! `scripts/check_db_integrity.sh`, now thin wrappers over upkeep. They are
//! copied into the sandbox's `scripts/` beside its upkeep.yaml, where they
//! live in a real project, and run from another folder, as cron runs them.

use std::process::{Command, Stdio};

use crate::support::*;

const SCRIPTS: [&str; 3] = ["_upkeep.sh", "backup_db.sh", "check_db_integrity.sh"];

/// The standard sandbox with the scripts in its `scripts/` folder.
fn project() -> Sandbox {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path("scripts")).unwrap();
    for name in SCRIPTS {
        let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts")
            .join(name);
        std::fs::copy(&source, sandbox.path(&format!("scripts/{name}"))).unwrap();
    }
    sandbox
}

/// Runs `scripts/NAME ARGS` with UPKEEP set to the built binary, from a
/// folder outside the project (no upkeep.yaml to discover there).
fn script(sandbox: &Sandbox, name: &str, args: &[&str]) -> Run {
    script_with(sandbox, name, args, &[("UPKEEP", UPKEEP)])
}

fn script_with(sandbox: &Sandbox, name: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let elsewhere = Sandbox::empty();
    let path = sandbox.path(&format!("scripts/{name}"));
    let mut command = Command::new(&path);
    command
        .args(args)
        .current_dir(elsewhere.dir.path())
        .env_remove("UPKEEP")
        .env_remove("UPKEEP_CONFIG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let label: Vec<&str> = [path.to_str().unwrap()]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    sandbox.capture(command, &label)
}

#[test]
fn backup_db_sh_both_makes_a_verified_backup_of_each_env() {
    let sandbox = project();
    script(&sandbox, "backup_db.sh", &["both"])
        .code(0)
        .stdout_has("production backed up")
        .stdout_has("staging backed up");
    for env in ["production", "staging"] {
        let backups = sandbox.backups(env);
        assert_eq!(backups.len(), 1, "{env}: {backups:?}");
        let manifest: serde_json::Value =
            serde_json::from_slice(&bytes(&manifest_of(&backups[0]))).unwrap();
        assert_eq!(manifest["verified"], true);
    }
}

#[test]
fn backup_db_sh_keep_rotates_in_both_spellings() {
    let sandbox = project();
    for args in [&["staging", "--keep=2"][..], &["--keep", "2", "staging"]] {
        for _ in 0..3 {
            script(&sandbox, "backup_db.sh", args).code(0);
        }
        assert_eq!(sandbox.backups("staging").len(), 2, "{args:?}");
    }
    assert!(sandbox.backups("production").is_empty());
}

#[test]
fn backup_db_sh_bad_arguments_exit_2_and_make_nothing() {
    let sandbox = project();
    for args in [
        &[][..],
        &["prod"],
        &["all"],
        &["both", "staging"],
        &["both", "--keep"],
        &["both", "--kep=3"],
    ] {
        script(&sandbox, "backup_db.sh", args)
            .code(2)
            .stderr_has("usage: backup_db.sh production|staging|both [--keep=N]");
    }
    // A bad count reaches upkeep, which refuses it before doing anything.
    script(&sandbox, "backup_db.sh", &["both", "--keep=0"])
        .code(2)
        .stderr_has("keep must be");
    assert!(!sandbox.path("backups").exists());
}

#[test]
fn check_db_integrity_sh_exits_0_when_sound_and_1_when_damaged() {
    let sandbox = project();
    script(&sandbox, "check_db_integrity.sh", &["production"])
        .code(0)
        .stdout_has("sound");
    script(&sandbox, "check_db_integrity.sh", &["both"]).code(0);
    corrupt_block_of(&sandbox.db("prod"), "orders");
    script(&sandbox, "check_db_integrity.sh", &["production", "--deep"])
        .code(1)
        .stdout_has("checksum");
    sql(&sandbox.db("staging"), "DROP TABLE orders");
    script(&sandbox, "check_db_integrity.sh", &["staging"])
        .code(1)
        .stdout_has("table `orders` is missing");
    script(&sandbox, "check_db_integrity.sh", &["staging", "--fast"])
        .code(2)
        .stderr_has("usage:");
}

#[test]
fn the_scripts_copy_a_held_database_live_and_pass_busy_through() {
    let sandbox = project();
    let db = sandbox.db("prod");
    let _app = sandbox.app(&["hold", db.to_str().unwrap()]);
    script(&sandbox, "check_db_integrity.sh", &["production"])
        .code(0)
        .stdout_has("checked a live copy");
    script(&sandbox, "backup_db.sh", &["production"]).code(0);
    assert_eq!(sandbox.backups("production").len(), 1);
    sandbox.set_live("never");
    script(&sandbox, "check_db_integrity.sh", &["production"]).code(4);
    script(&sandbox, "backup_db.sh", &["production"]).code(4);
}

#[test]
fn without_upkeep_env_the_cargo_build_is_found() {
    let sandbox = project();
    let target = sandbox.path("target");
    std::fs::create_dir_all(target.join("debug")).unwrap();
    std::os::unix::fs::symlink(UPKEEP, target.join("debug/upkeep")).unwrap();
    let env = [
        ("PATH", "/usr/bin:/bin"),
        ("CARGO_TARGET_DIR", target.to_str().unwrap()),
    ];
    script_with(&sandbox, "check_db_integrity.sh", &["staging"], &env)
        .code(0)
        .stdout_has("sound");
    // Nowhere to be found: said so, exit 1.
    let nowhere = sandbox.path("nowhere");
    let env = [
        ("PATH", "/usr/bin:/bin"),
        ("CARGO_TARGET_DIR", nowhere.to_str().unwrap()),
    ];
    script_with(&sandbox, "backup_db.sh", &["both"], &env)
        .code(1)
        .stderr_has("upkeep not found");
}

#[test]
fn the_scripts_are_valid_bash() {
    for name in SCRIPTS {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts")
            .join(name);
        let status = Command::new("bash").arg("-n").arg(&path).status().unwrap();
        assert!(status.success(), "bash -n {}", path.display());
    }
}
