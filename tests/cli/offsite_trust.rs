//! What upkeep trusts of an off-site store that others can write to, and
//! of its own environment: a manifest names only its own data, a push
//! skips only a backup that is really there, a restore takes plaintext
//! only when asked where `encrypt_to` is set and keeps no download that
//! failed its check, two hosts share a `file://` folder, and an
//! environment variable stands in only for the command that takes it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::offsite::{
    S3, age_keys, aws, backup_at, big_db, name_of, push, s3_offsite, with_offsite,
};
use crate::support::*;

/// `backups.offsite` lines for a `file://` store in `folder`.
fn file_offsite(folder: &Path) -> String {
    format!("    url: file://{}\n", folder.display())
}

/// Rewrites a manifest in place, as someone with write access could.
fn edit_manifest(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut manifest: Value = serde_json::from_slice(&bytes(path)).unwrap();
    edit(&mut manifest);
    std::fs::write(path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

/// Removes the local backups of `env` and their manifests: a new machine.
fn forget_local_backups(sandbox: &Sandbox, env: &str) {
    for backup in sandbox.backups(env) {
        std::fs::remove_file(manifest_of(&backup)).unwrap();
        std::fs::remove_file(backup).unwrap();
    }
}

/// The temporary files upkeep left in the backups folder.
fn partials(sandbox: &Sandbox) -> Vec<PathBuf> {
    walk(&sandbox.path("backups"))
        .into_iter()
        .filter(|path| path.to_string_lossy().contains(".upkeep-partial"))
        .collect()
}

#[test]
fn with_encrypt_to_set_a_plaintext_object_is_restored_only_with_allow_plaintext() {
    let store = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (identity, public) = age_keys(keys.path());
    let sandbox = Sandbox::new();
    with_offsite(
        &sandbox,
        &format!("{}    encrypt_to: [{public}]\n", file_offsite(store.path())),
    );
    sandbox.upkeep(&["backup", "production"]).code(0);
    let name = name_of(&sandbox.backups("production")[0]);
    sandbox
        .upkeep(&["push", "production"])
        .code(0)
        .stdout_has("(encrypted)");

    // Someone who can write to the store swaps in a plaintext backup of
    // other data (every order gone), with a manifest that says so.
    let other = Sandbox::new();
    sql(&other.db("prod"), "DELETE FROM orders");
    other.upkeep(&["backup", "production"]).code(0);
    let planted_backup = other.backups("production").pop().unwrap();
    let planted = bytes(&planted_backup);
    let planted_local: Value =
        serde_json::from_slice(&bytes(&manifest_of(&planted_backup))).unwrap();
    let folder = store.path().join("production");
    let manifest = folder.join(format!("{name}.manifest.json"));
    let plant = |key: &str, encrypted: bool| {
        for old in [name.clone(), format!("{name}.age")] {
            let _ = std::fs::remove_file(folder.join(old));
        }
        std::fs::write(store.path().join(key), &planted).unwrap();
        let hash = blake3::hash(&planted).to_hex().to_string();
        edit_manifest(&manifest, |m| {
            m["encrypted"] = encrypted.into();
            m["object"] = json!({"key": key, "size": planted.len(), "blake3": hash});
            m["plaintext"] = json!({"size": planted.len(), "blake3": hash});
            m["local"] = planted_local.clone();
        });
    };
    plant(&format!("production/{name}"), false);
    forget_local_backups(&sandbox, "production");
    let before = bytes(&sandbox.db("prod"));
    let identity_text = identity.to_string_lossy().into_owned();
    for env in [
        vec![],
        vec![("UPKEEP_AGE_IDENTITY", identity_text.as_str())],
    ] {
        sandbox
            .upkeep_with(&["restore", "production", "--offsite", "--latest"], &env)
            .code(1)
            .stderr_has(&format!("off-site backup `{name}` is not encrypted"))
            .stderr_has("encrypt_to")
            .stderr_has("nothing was changed")
            .stderr_has("--allow-plaintext");
        assert_eq!(bytes(&sandbox.db("prod")), before, "nothing was changed");
        assert!(sandbox.backups("production").is_empty());
        assert!(partials(&sandbox).is_empty(), "{:?}", partials(&sandbox));
    }
    // The flag belongs to the off-site restore.
    sandbox
        .upkeep(&["restore", "production", "--latest", "--allow-plaintext"])
        .code(2)
        .stderr_has("--offsite");
    // Asked for: it is restored.
    sandbox
        .upkeep(&[
            "restore",
            "production",
            "--offsite",
            "--latest",
            "--allow-plaintext",
        ])
        .code(0);
    assert_eq!(counts(&sandbox.db("prod"))["orders"], 0);

    // A manifest that says encrypted, over an object that is not age: it
    // does not decrypt, and nothing is kept.
    forget_local_backups(&sandbox, "production");
    plant(&format!("production/{name}.age"), true);
    let before = bytes(&sandbox.db("prod"));
    sandbox
        .upkeep(&[
            "restore",
            "production",
            "--offsite",
            "--latest",
            "--identity",
            &identity_text,
        ])
        .code(1)
        .stderr_has("is not a readable age file");
    assert_eq!(bytes(&sandbox.db("prod")), before);
    assert!(sandbox.backups("production").is_empty());
}

#[test]
fn off_site_retention_deletes_only_the_keys_of_its_own_names() {
    let store = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new();
    with_offsite(
        &sandbox,
        &format!(
            "{}    retention: {{ last: 1 }}\n",
            file_offsite(store.path())
        ),
    );
    sandbox.upkeep(&["backup", "both"]).code(0);
    let made = sandbox.backups("production").pop().unwrap();
    let staging = name_of(&sandbox.backups("staging")[0]);
    sandbox.upkeep(&["push", "staging"]).code(0);
    let old = backup_at(&sandbox, &made, "20240102_020000");
    sandbox.upkeep(&["push", "production", &old]).code(0);

    // A production manifest that names staging's object, and another that
    // names a file of nobody's under production/.
    let at = |key: &str| store.path().join(key);
    let staging_key = format!("staging/{staging}");
    let staging_size = bytes(&at(&staging_key)).len();
    edit_manifest(&at(&format!("production/{old}.manifest.json")), |m| {
        m["object"]["key"] = staging_key.clone().into();
        m["object"]["size"] = staging_size.into();
    });
    let older = "production_data_20240101_020000.duckdb";
    std::fs::write(at("production/unrelated.bin"), b"not a backup").unwrap();
    let mut manifest: Value =
        serde_json::from_slice(&bytes(&at(&format!("production/{old}.manifest.json")))).unwrap();
    manifest["name"] = older.into();
    manifest["object"] = json!({"key": "production/unrelated.bin", "size": 12, "blake3": blake3::hash(b"not a backup").to_hex().to_string()});
    std::fs::write(
        at(&format!("production/{older}.manifest.json")),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();

    // Listed as damage, never read.
    let listed = sandbox.upkeep(&["backups", "production", "--offsite", "--format", "json"]);
    listed.code(0);
    let statuses: Vec<String> = listed.json()[0]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses.len(), 2, "{listed}");
    for status in &statuses {
        assert!(status.contains("names another object"), "{listed}");
    }
    sandbox
        .upkeep(&["verify", "production", "--offsite", "--read-data"])
        .code(1)
        .stdout_has(&format!(
            "its manifest names another object than `production/{old}`"
        ));
    sandbox
        .upkeep(&["restore", "production", "--offsite", &old])
        .code(1)
        .stderr_has("cannot be restored");

    // Retention removes both damaged backups: their own keys only.
    let pushed = sandbox.upkeep(&["push", "production", "--format", "json"]);
    pushed.code(0);
    assert_eq!(pushed.json()[0]["deleted"], json!([older, old]), "{pushed}");
    assert!(
        at(&staging_key).exists(),
        "staging's object was deleted\n{pushed}"
    );
    assert!(at("production/unrelated.bin").exists(), "{pushed}");
    for gone in [
        format!("production/{old}"),
        format!("production/{old}.manifest.json"),
        format!("production/{older}.manifest.json"),
    ] {
        assert!(!at(&gone).exists(), "{gone} is left\n{pushed}");
    }
    sandbox
        .upkeep(&["verify", "staging", "--offsite", "--read-data"])
        .code(0)
        .stdout_has("data read back and hashed");
}

#[test]
fn a_planted_or_foreign_manifest_never_makes_a_push_skip_its_backup() {
    let s3 = S3::start();
    let sandbox = Sandbox::new();
    with_offsite(&sandbox, &s3_offsite(&s3));
    sandbox.upkeep(&["backup", "production"]).code(0);
    let name = name_of(&sandbox.backups("production")[0]);
    let planted = s3.path(&format!("upkeep/production/{name}.manifest.json"));
    std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
    std::fs::write(&planted, "{}").unwrap();
    push(&sandbox, &["production"])
        .code(1)
        .stderr_has(&format!(
            "`production/{name}.manifest.json` (unreadable manifest)"
        ))
        .stderr_has("nothing was sent")
        .stderr_has("delete it and its data")
        .stderr_has("then push again");
    assert_eq!(
        s3.keys(),
        [format!("upkeep/production/{name}.manifest.json")],
        "nothing was sent, the planted manifest was left for a person to see"
    );
    // Done as the message says: the push sends it.
    std::fs::remove_file(&planted).unwrap();
    push(&sandbox, &["production"])
        .code(0)
        .stdout_has(&format!("pushed {name}"));
    sandbox
        .upkeep_with(
            &["verify", "production", "--offsite", "--read-data"],
            &aws(),
        )
        .code(0);

    // Another host pushed a backup of other data under a name this host
    // pushes later: it is neither skipped nor overwritten.
    let made = sandbox.backups("production").pop().unwrap();
    let shared = backup_at(&sandbox, &made, "20240105_020000");
    let other = Sandbox::new();
    with_offsite(&other, &s3_offsite(&s3));
    sql(&other.db("prod"), "DELETE FROM orders");
    other.upkeep(&["backup", "production"]).code(0);
    let theirs = other.backups("production").pop().unwrap();
    backup_at(&other, &theirs, "20240105_020000");
    push(&other, &["production", &shared]).code(0);
    let object = format!("upkeep/production/{shared}");
    let stored = s3.object(&object);
    push(&sandbox, &["production", &shared])
        .code(1)
        .stderr_has(&format!(
            "`production/{shared}.manifest.json` (another backup of that name"
        ))
        .stderr_has("nothing was sent");
    assert_eq!(
        s3.object(&object),
        stored,
        "the other host's backup is untouched"
    );
    // Its own backup, already there, is skipped.
    push(&sandbox, &["production", &name])
        .code(0)
        .stdout_has("nothing sent");
}

/// Waits until every thread of process `pid` is stopped (SIGSTOP is
/// delivered after `kill` returns).
fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stopped = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .all(|task| {
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                // The state follows the command's closing parenthesis.
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with(['T', 't']))
            });
        if stopped {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} did not stop");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Starts a push of `host`'s backup `name` and stops it (SIGSTOP) while
/// its staging file in `folder` is there; returns the stopped push and
/// that file. A push that ends before it is seen is undone and tried again.
fn stopped_mid_upload(host: &Sandbox, folder: &Path, name: &str) -> (Child, PathBuf) {
    let staging_of = || {
        std::fs::read_dir(folder)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{name}#"))
            })
    };
    for _ in 0..10 {
        let mut child = Command::new(UPKEEP)
            .args(["push", "production", name])
            .current_dir(host.path(""))
            .env_remove("UPKEEP_CONFIG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(staging) = staging_of() {
                unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) };
                wait_stopped(child.id());
                if staging.exists() {
                    return (child, staging);
                }
                unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
            }
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = child.wait();
        for key in [name.to_string(), format!("{name}.manifest.json")] {
            let _ = std::fs::remove_file(folder.join(key));
        }
    }
    panic!("the push of {name} was never seen mid-upload");
}

#[test]
fn a_staging_file_of_another_hosts_upload_survives_a_push_and_an_old_one_is_swept() {
    let store = tempfile::tempdir().unwrap();
    let folder = store.path().join("production");
    std::fs::create_dir_all(&folder).unwrap();
    let host_a = Sandbox::new();
    with_offsite(&host_a, &file_offsite(store.path()));
    big_db(&host_a);
    host_a.upkeep(&["backup", "production"]).code(0);
    let a_name = name_of(&host_a.backups("production")[0]);
    // Host B's backup under a name of its own.
    let host_b = Sandbox::new();
    with_offsite(&host_b, &file_offsite(store.path()));
    host_b.upkeep(&["backup", "production"]).code(0);
    let made = host_b.backups("production").pop().unwrap();
    let b_name = backup_at(&host_b, &made, "20240102_020000");
    std::fs::remove_file(manifest_of(&made)).unwrap();
    std::fs::remove_file(&made).unwrap();

    let (a_push, staging) = stopped_mid_upload(&host_a, &folder, &a_name);
    // What a crash left two hours ago (planted once A's own clean-up ran).
    let old = folder.join("production_data_20240101_020000.duckdb#1");
    std::fs::write(&old, b"cut short").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    let b_push = host_b.upkeep(&["push", "production", &b_name, "--format", "json"]);
    let (survived, swept) = (staging.exists(), !old.exists());
    unsafe { libc::kill(a_push.id() as i32, libc::SIGCONT) };
    let a_out = a_push.wait_with_output().unwrap();
    b_push.code(0);
    assert!(
        survived,
        "host A's upload in progress was deleted\n{b_push}"
    );
    assert!(swept, "the old staging file is left\n{b_push}");
    assert_eq!(
        b_push.json()[0]["cleaned"],
        json!([
            "production/production_data_20240101_020000.duckdb#1 (an interrupted upload's staging file)"
        ]),
        "{b_push}"
    );
    assert_eq!(
        a_out.status.code(),
        Some(0),
        "host A's push: {}",
        String::from_utf8_lossy(&a_out.stderr)
    );
    for host in [&host_a, &host_b] {
        host.upkeep(&["verify", "production", "--offsite", "--read-data"])
            .code(0)
            .stdout_has(&format!("{a_name}: verified, data read back"))
            .stdout_has(&format!("{b_name}: verified, data read back"));
    }
}

#[test]
fn a_download_that_fails_its_check_is_never_left_as_a_backup() {
    let store = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new();
    with_offsite(&sandbox, &file_offsite(store.path()));
    sandbox.upkeep(&["backup", "production"]).code(0);
    let name = name_of(&sandbox.backups("production")[0]);
    sandbox.upkeep(&["push", "production"]).code(0);
    forget_local_backups(&sandbox, "production");
    // The off-site manifest's row counts changed: the object still matches
    // its hashes, but not the rows the manifest promises.
    edit_manifest(
        &store
            .path()
            .join(format!("production/{name}.manifest.json")),
        |m| {
            let orders = m["local"]["tables"]["orders"].as_u64().unwrap();
            m["local"]["tables"]["orders"] = (orders + 1).into();
        },
    );
    sql(&sandbox.db("prod"), "DELETE FROM users WHERE id % 2 = 0");
    let before = bytes(&sandbox.db("prod"));
    sandbox
        .upkeep(&["restore", "production", "--offsite", "--latest"])
        .code(1)
        .stderr_has(&format!(
            "off-site backup `{name}` matches its manifest but does not verify"
        ))
        .stderr_has("row counts differ")
        .stderr_has("the download was removed");
    assert_eq!(bytes(&sandbox.db("prod")), before, "nothing was changed");
    assert!(sandbox.backups("production").is_empty());
    assert!(partials(&sandbox).is_empty(), "{:?}", partials(&sandbox));
    let listed = sandbox.upkeep(&["backups", "production", "--format", "json"]);
    listed.code(0);
    assert_eq!(listed.json()[0]["backups"], json!([]), "{listed}");
    // The next backup's rotation has no failed download to keep.
    sandbox
        .upkeep(&["backup", "production", "--keep", "1"])
        .code(0);
    assert_eq!(sandbox.backups("production").len(), 1);
}

#[test]
fn an_environment_variable_never_makes_another_command_invalid() {
    let store = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new();
    with_offsite(&sandbox, &file_offsite(store.path()));
    sandbox.write(
        "pipelines/nightly.yaml",
        "name: nightly\nenv: production\nsteps:\n  - uses: backup\n",
    );
    sandbox.upkeep(&["backup", "both"]).code(0);
    sandbox.upkeep(&["push", "production"]).code(0);
    let config = sandbox.path("upkeep.yaml").to_string_lossy().into_owned();
    let identity = sandbox
        .path("nowhere/backup-key.txt")
        .to_string_lossy()
        .into_owned();
    // Each variable upkeep reads as a flag, set to something and to empty.
    let variables = [
        ("UPKEEP_AGE_IDENTITY", identity.as_str()),
        ("UPKEEP_AGE_IDENTITY", ""),
        ("UPKEEP_CONFIG", config.as_str()),
        ("UPKEEP_CONFIG", ""),
        ("ENVIRONMENT", "production"),
        ("ENVIRONMENT", ""),
    ];
    let commands: [&[&str]; 9] = [
        &["restore", "production", "--latest"],
        &["restore", "staging", "--latest"],
        &["check", "staging"],
        &["backups", "production"],
        &["verify", "production", "--offsite"],
        &["validate"],
        &["run", "nightly", "--dry-run"],
        &["completions", "bash"],
        &["man"],
    ];
    for variable in variables {
        for args in commands {
            sandbox.upkeep_with(args, &[variable]).code(0);
        }
    }
    // The off-site restore of an unencrypted backup needs no identity: an
    // empty variable is none.
    sandbox
        .upkeep_with(
            &["restore", "production", "--offsite", "--latest"],
            &[("UPKEEP_AGE_IDENTITY", "")],
        )
        .code(0);
    // Given on the command line, the flag still belongs to --offsite.
    sandbox
        .upkeep(&["restore", "production", "--latest", "--identity", &identity])
        .code(2)
        .stderr_has("--offsite");
    // Empty is unset: `repair` asks for its argument.
    sandbox
        .upkeep_with(&["repair"], &[("ENVIRONMENT", "")])
        .code(2)
        .stderr_has("<ENV> (or set ENVIRONMENT)");
    // And each variable still does its own work.
    let elsewhere = Sandbox::empty();
    elsewhere
        .upkeep_with(&["backups", "production"], &[("UPKEEP_CONFIG", &config)])
        .code(0)
        .stdout_has("production_data_");
    sandbox
        .upkeep_with(
            &["restore", "production", "--offsite", "--latest"],
            &[("UPKEEP_AGE_IDENTITY", &identity)],
        )
        .code(0);
}
