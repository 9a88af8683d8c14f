//! Off-site copies: `push`, `backups --offsite`, `verify --offsite`,
//! `restore --offsite`, against a real S3 server (s3s-fs on 127.0.0.1) and a
//! `file://` folder; encryption checked with Debian's `age`; crashes with
//! kill -9 and a server stopped mid-upload.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const KEY_ID: &str = "AKIAUPKEEPTEST0001";
const SECRET: &str = "upkeep-test-secret-9f8e7d6c5b4a";
pub(crate) const BUCKET: &str = "upkeep-backups";

/// A server process of a test's, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real S3 server serving a folder; a bucket is a subfolder.
pub(crate) struct S3 {
    _server: Server,
    pub(crate) root: tempfile::TempDir,
    pub(crate) port: u16,
}

impl S3 {
    pub(crate) fn start() -> S3 {
        let root = tempfile::Builder::new()
            .prefix("upkeep-s3-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        S3::serve(root)
    }

    fn serve(root: tempfile::TempDir) -> S3 {
        let port = free_port();
        let child = Command::new(tool("s3s-fs"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", KEY_ID, "--secret-key", SECRET])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        S3 {
            _server: Server(child),
            root,
            port,
        }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server; the stored folder stays.
    fn stop(self) -> tempfile::TempDir {
        self.root
    }

    /// Where the server keeps an object (`key` under the bucket).
    pub(crate) fn path(&self, key: &str) -> std::path::PathBuf {
        self.root.path().join(BUCKET).join(key)
    }

    /// An object's bytes, read from the server's folder.
    pub(crate) fn object(&self, key: &str) -> Vec<u8> {
        std::fs::read(self.path(key)).unwrap()
    }

    /// Every file under the bucket, relative to it.
    pub(crate) fn keys(&self) -> Vec<String> {
        walk(&self.root.path().join(BUCKET))
            .iter()
            .map(|path| {
                path.strip_prefix(self.root.path().join(BUCKET))
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }
}

/// The credentials of the test server, and no other way to find any.
pub(crate) fn aws() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ("AWS_REGION", "us-east-1"),
    ]
}

/// upkeep.yaml with `backups.offsite` (its lines after `offsite:`).
pub(crate) fn with_offsite(sandbox: &Sandbox, offsite: &str) {
    sandbox.write(
        "upkeep.yaml",
        &CONFIG.replace(
            "  dir: backups\n",
            &format!("  dir: backups\n  offsite:\n{offsite}"),
        ),
    );
}

pub(crate) fn s3_offsite(s3: &S3) -> String {
    format!(
        "    url: s3://{BUCKET}/upkeep\n    endpoint: {}\n",
        s3.endpoint()
    )
}

/// A backup's file name.
pub(crate) fn name_of(backup: &Path) -> String {
    backup.file_name().unwrap().to_string_lossy().into_owned()
}

/// A new machine: `sandbox`'s upkeep.yaml alone, no database, no backups,
/// restores production's newest off-site backup, which must hold the rows
/// of `sandbox`'s database.
pub(crate) fn restore_on_a_new_machine(sandbox: Sandbox, env: &[(&str, &str)]) -> (Sandbox, Run) {
    let rows = counts(&sandbox.db("prod"));
    let fresh = new_machine(sandbox);
    let restored = fresh.upkeep_with(&["restore", "production", "--offsite", "--latest"], env);
    restored.code(0).stdout_has("downloaded");
    assert_eq!(counts(&fresh.db("prod")), rows, "{restored}");
    (fresh, restored)
}

/// A new machine for `sandbox`'s off-site store: its upkeep.yaml (without
/// the schema file it names), nothing else.
pub(crate) fn new_machine(sandbox: Sandbox) -> Sandbox {
    let config = std::fs::read_to_string(sandbox.path("upkeep.yaml"))
        .unwrap()
        .replace("schema: schema.sql\n", "");
    drop(sandbox);
    let fresh = Sandbox::empty();
    fresh.write("upkeep.yaml", &config);
    fresh
}

pub(crate) fn push(sandbox: &Sandbox, args: &[&str]) -> Run {
    let mut all = vec!["push"];
    all.extend(args);
    sandbox.upkeep_with(&all, &aws())
}

#[test]
fn a_push_is_checked_sent_once_and_restores_on_a_new_machine() {
    let s3 = S3::start();
    let sandbox = Sandbox::new();
    with_offsite(&sandbox, &s3_offsite(&s3));
    sandbox.upkeep(&["backup", "production"]).code(0);
    let local = sandbox.backups("production").pop().unwrap();
    let name = name_of(&local);

    push(&sandbox, &["production"])
        .code(0)
        .stdout_has(&format!("pushed {name}"));
    assert_eq!(
        s3.object(&format!("upkeep/production/{name}")),
        bytes(&local),
        "the object is the backup, byte for byte"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&s3.object(&format!("upkeep/production/{name}.manifest.json")))
            .unwrap();
    assert_eq!(manifest["plaintext"]["size"], bytes(&local).len() as u64);
    assert_eq!(
        manifest["plaintext"]["blake3"].as_str().unwrap(),
        blake3::hash(&bytes(&local)).to_hex().as_str()
    );
    assert_eq!(manifest["encrypted"], false);

    // Idempotent: nothing is sent again.
    let before = s3.keys();
    let again = push(&sandbox, &["production", "--format", "json"]);
    again.code(0).stdout_has("\"changed\":false");
    assert_eq!(s3.keys(), before);

    sandbox
        .upkeep_with(&["backups", "production", "--offsite"], &aws())
        .code(0)
        .stdout_has(&name)
        .stdout_has("verified");
    sandbox
        .upkeep_with(
            &["verify", "production", "--offsite", "--read-data"],
            &aws(),
        )
        .code(0)
        .stdout_has("data read back and hashed");

    let (fresh, restored) = restore_on_a_new_machine(sandbox, &aws());
    restored.stdout_has("data/prod.duckdb");
    assert!(!restored.stdout.contains(".upkeep-partial"), "{restored}");
    // The download stays as a verified local backup.
    fresh
        .upkeep(&["backups", "production"])
        .code(0)
        .stdout_has(&name)
        .stdout_has("verified");
}

/// A key pair from Debian's `age-keygen`: (identity file, public key).
pub(crate) fn age_keys(dir: &Path) -> (PathBuf, String) {
    let identity = dir.join("backup-key.txt");
    let out = Command::new(tool("age-keygen"))
        .arg("-o")
        .arg(&identity)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let public = Command::new(tool("age-keygen"))
        .arg("-y")
        .arg(&identity)
        .output()
        .unwrap();
    (
        identity,
        String::from_utf8(public.stdout).unwrap().trim().to_string(),
    )
}

#[test]
fn an_encrypted_push_decrypts_with_the_age_tool_and_restores_only_with_the_identity() {
    let s3 = S3::start();
    let sandbox = Sandbox::new();
    let keys = tempfile::tempdir().unwrap();
    let (identity, public) = age_keys(keys.path());
    // The host holds the public key only, in a file beside upkeep.yaml.
    sandbox.write(
        "keys/backup.pub",
        &format!("# the restore key is offline\n{public}\n"),
    );
    with_offsite(
        &sandbox,
        &format!("{}    encrypt_to: [keys/backup.pub]\n", s3_offsite(&s3)),
    );
    sandbox.upkeep(&["backup", "production"]).code(0);
    let local = sandbox.backups("production").pop().unwrap();
    let name = name_of(&local);
    push(&sandbox, &["production"])
        .code(0)
        .stdout_has("(encrypted)");

    let sealed = s3.object(&format!("upkeep/production/{name}.age"));
    assert!(sealed.starts_with(b"age-encryption.org/v1"));
    assert!(
        !s3.keys()
            .iter()
            .any(|key| key == &format!("upkeep/production/{name}")),
        "no plaintext object: {:?}",
        s3.keys()
    );
    let sealed_file = keys.path().join("sealed.age");
    std::fs::write(&sealed_file, &sealed).unwrap();
    let opened = Command::new(tool("age"))
        .arg("-d")
        .arg("-i")
        .arg(&identity)
        .arg(&sealed_file)
        .output()
        .unwrap();
    assert!(opened.status.success(), "{opened:?}");
    assert_eq!(opened.stdout, bytes(&local), "age -d gives the backup back");

    // A restore without the identity, or with another one, changes nothing.
    let rows = counts(&sandbox.db("prod"));
    std::fs::remove_file(&local).unwrap();
    std::fs::remove_file(manifest_of(&local)).unwrap();
    sql(&sandbox.db("prod"), "DELETE FROM orders");
    let damaged = bytes(&sandbox.db("prod"));
    sandbox
        .upkeep_with(&["restore", "production", "--offsite", "--latest"], &aws())
        .code(2)
        .stderr_has("is encrypted: give its age identity with --identity FILE");
    let (other, _) = age_keys(tempfile::tempdir().unwrap().keep().as_path());
    sandbox
        .upkeep_with(
            &[
                "restore",
                "production",
                "--offsite",
                "--latest",
                "--identity",
                other.to_str().unwrap(),
            ],
            &aws(),
        )
        .code(2)
        .stderr_has("none of the keys in the identity file can decrypt");
    assert_eq!(bytes(&sandbox.db("prod")), damaged);
    assert!(
        sandbox.backups("production").is_empty(),
        "no partial download is left"
    );

    let mut env = aws();
    let identity_text = identity.to_string_lossy().into_owned();
    env.push(("UPKEEP_AGE_IDENTITY", &identity_text));
    sandbox
        .upkeep_with(&["restore", "production", "--offsite", &name], &env)
        .code(0);
    assert_eq!(counts(&sandbox.db("prod")), rows);
    assert_eq!(bytes(&sandbox.backups("production")[0]), opened.stdout);
}

#[test]
fn encryption_that_cannot_be_applied_sends_nothing() {
    let s3 = S3::start();
    let sandbox = Sandbox::new();
    sandbox.write("keys/backup.pub", "not-a-key\n");
    with_offsite(
        &sandbox,
        &format!("{}    encrypt_to: [keys/backup.pub]\n", s3_offsite(&s3)),
    );
    sandbox.upkeep(&["backup", "production"]).code(0);
    push(&sandbox, &["production"])
        .code(2)
        .stderr_has("keys/backup.pub:1")
        .stderr_has("nothing was uploaded");
    assert!(s3.keys().is_empty(), "{:?}", s3.keys());
}

#[test]
fn wrong_credentials_a_missing_bucket_and_secrets_in_the_config_are_clear_and_never_shown() {
    let s3 = S3::start();
    let sandbox = Sandbox::new();
    with_offsite(&sandbox, &s3_offsite(&s3));
    sandbox.upkeep(&["backup", "production"]).code(0);
    let wrong_secret = "wrong-secret-5e4d3c2b1a";
    let mut env = aws();
    env.retain(|(key, _)| *key != "AWS_SECRET_ACCESS_KEY");
    env.push(("AWS_SECRET_ACCESS_KEY", wrong_secret));
    let mut outputs = Vec::new();
    let refused = sandbox.upkeep_with(
        &["push", "production", "--format", "json", "--verbose"],
        &env,
    );
    refused
        .code(1)
        .stderr_has(&format!("s3://{BUCKET}/upkeep"))
        .stderr_has("refused the credentials");
    outputs.push(refused);
    let human = sandbox.upkeep_with(&["push", "production", "--verbose"], &env);
    human.code(1);
    outputs.push(human);

    with_offsite(
        &sandbox,
        &format!(
            "    url: s3://no-such-bucket/upkeep\n    endpoint: {}\n",
            s3.endpoint()
        ),
    );
    let missing = push(&sandbox, &["production"]);
    missing
        .code(1)
        .stderr_has("the bucket does not exist: create it");
    outputs.push(missing);

    // No credentials at all: said at once (the instance metadata service
    // is never asked unless AWS_EC2_METADATA_DISABLED=false).
    let none = sandbox.upkeep_with(
        &["push", "production"],
        &[
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("AWS_EC2_METADATA_DISABLED", ""),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
            ("AWS_PROFILE", ""),
        ],
    );
    none.code(1)
        .stderr_has("no credentials for the off-site store");
    // A profile in a shared credentials file works like the variables.
    sandbox.write(
        "aws-credentials",
        &format!("[other]\naws_access_key_id = x\naws_secret_access_key = y\n\n[backups]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n"),
    );
    let profile_file = sandbox
        .path("aws-credentials")
        .to_string_lossy()
        .into_owned();
    with_offsite(&sandbox, &s3_offsite(&s3));
    let by_profile = sandbox.upkeep_with(
        &["push", "production"],
        &[
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("AWS_SHARED_CREDENTIALS_FILE", &profile_file),
            ("AWS_PROFILE", "backups"),
        ],
    );
    by_profile.code(0).stdout_has("pushed");
    outputs.push(by_profile);

    // A store that is down.
    with_offsite(
        &sandbox,
        &format!(
            "    url: s3://{BUCKET}/upkeep\n    endpoint: http://127.0.0.1:{}\n",
            free_port()
        ),
    );
    let down = push(&sandbox, &["production"]);
    down.code(1).stderr_has("cannot be reached");
    outputs.push(down);
    // The local backup is kept through all of it.
    assert_eq!(sandbox.backups("production").len(), 1);

    // AWS_ENDPOINT_URL is held to the same rules: it is shown in messages.
    with_offsite(&sandbox, &format!("    url: s3://{BUCKET}/upkeep\n"));
    let mut env = aws();
    let endpoint = format!("http://{KEY_ID}:{SECRET}@127.0.0.1:{}", s3.port);
    env.push(("AWS_ENDPOINT_URL", &endpoint));
    let in_env = sandbox.upkeep_with(&["push", "production"], &env);
    in_env
        .code(2)
        .stderr_has("AWS_ENDPOINT_URL")
        .stderr_has("credentials are never read from a URL");
    outputs.push(in_env);

    // Secrets written in upkeep.yaml are refused before anything runs.
    with_offsite(
        &sandbox,
        &format!("    url: s3://{KEY_ID}:{SECRET}@{BUCKET}/upkeep\n"),
    );
    let in_url = push(&sandbox, &["production"]);
    in_url
        .code(2)
        .stderr_has("upkeep.yaml:7:10:")
        .stderr_has("credentials are never read from a URL");
    outputs.push(in_url);
    with_offsite(
        &sandbox,
        &format!("{}    secret_access_key: {SECRET}\n", s3_offsite(&s3)),
    );
    let in_key = push(&sandbox, &["production"]);
    in_key
        .code(2)
        .stderr_has("upkeep.yaml:9:")
        .stderr_has("credentials are not read from upkeep.yaml");
    outputs.push(in_key);

    let logs: String = walk(&sandbox.path(".upkeep"))
        .iter()
        .map(|path| String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned())
        .collect();
    for secret in [SECRET, wrong_secret] {
        for run in &outputs {
            assert!(
                !run.stdout.contains(secret) && !run.stderr.contains(secret),
                "{run}"
            );
        }
        assert!(!logs.contains(secret), "a secret in .upkeep/");
    }
}

/// A database big enough that an upload takes a while (about 60 MB).
pub(crate) fn big_db(sandbox: &Sandbox) {
    sql(
        &sandbox.db("prod"),
        "INSERT INTO orders SELECT 100000 + i, i % 97, repeat(md5(i::VARCHAR), 12) FROM range(160000) r(i)",
    );
}

#[test]
fn kill_9_during_push_leaves_no_manifest_without_its_object_and_the_next_push_converges() {
    let s3 = S3::start();
    let sandbox = Sandbox::new();
    with_offsite(&sandbox, &s3_offsite(&s3));
    big_db(&sandbox);
    sandbox.upkeep(&["backup", "production"]).code(0);
    let name = name_of(&sandbox.backups("production")[0]);
    let mut killed_before_the_end = 0;
    // Uploads the store may have started while the push died before it
    // could write their id down: its journal then says so (`"id":null`).
    let mut started_unnamed = 0;
    for delay_ms in [30, 120, 300, 700] {
        let mut child = Command::new(UPKEEP)
            .args(["push", "production"])
            .current_dir(sandbox.path(""))
            .envs(aws())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().unwrap();
        if status.code().is_none() {
            killed_before_the_end += 1;
        }
        let journal = sandbox.path(&format!(".upkeep/offsite/{name}.upload.json"));
        if std::fs::read_to_string(&journal).is_ok_and(|entry| entry.contains(r#""id":null"#)) {
            started_unnamed += 1;
        }
        // A part the dead push was sending may still be landing on the
        // server: S3 says an abort can race parts in progress ("it might be
        // necessary to abort a given multipart upload multiple times"). A
        // real next push comes later than the next millisecond.
        std::thread::sleep(Duration::from_millis(500));
        // Whatever the moment: a listed backup verifies, data read back.
        sandbox
            .upkeep_with(
                &["verify", "production", "--offsite", "--read-data"],
                &aws(),
            )
            .code(0);
        // Start over for the next trial.
        if s3.keys().iter().any(|key| key.ends_with(".manifest.json")) {
            for key in s3.keys() {
                std::fs::remove_file(s3.path(&key)).unwrap();
            }
        }
    }
    assert!(
        killed_before_the_end > 0,
        "no trial killed the push before its end"
    );
    // A kill after an upload completed, before its journal entry went: the
    // store no longer knows the id (s3s-fs then answers AccessDenied). It
    // must not stop the next push.
    sandbox.write(
        ".upkeep/offsite/gone.upload.json",
        &format!(r#"{{"key":"production/{name}","id":"0b5e7c1e-0000-4000-8000-000000000000"}}"#),
    );
    // A kill after the journal entry, before the store answered with the
    // upload's id: the push says what may be left.
    sandbox.write(
        ".upkeep/offsite/unnamed.upload.json",
        &format!(r#"{{"key":"production/{name}","id":null}}"#),
    );
    push(&sandbox, &["production"])
        .code(0)
        .stdout_has(&format!("pushed {name}"))
        .stdout_has("before the store's id for it was written down");
    sandbox
        .upkeep_with(
            &["verify", "production", "--offsite", "--read-data"],
            &aws(),
        )
        .code(0)
        .stdout_has("data read back and hashed");
    assert!(
        !sandbox.path(".upkeep/offsite").exists()
            || std::fs::read_dir(sandbox.path(".upkeep/offsite"))
                .unwrap()
                .count()
                == 0,
        "the upload journal is empty"
    );
    // The interrupted multipart uploads were aborted: the server tracks
    // none of them any more (`.upload-ID.json`). s3s-fs forgets an upload
    // when its completion starts, so a push killed during the completion
    // leaves parts the server no longer knows and refuses to abort: the
    // push says so and goes on (a bucket's lifecycle rule removes them).
    // Only an upload whose id the dead push never learned may stay.
    let tracked: Vec<String> = std::fs::read_dir(s3.root.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".upload-") && name.ends_with(".json"))
        .collect();
    assert!(tracked.len() <= started_unnamed, "{tracked:?}");
}

#[test]
fn a_server_stopped_mid_upload_fails_the_push_and_lists_nothing_unverified() {
    let s3 = S3::start();
    let sandbox = Sandbox::new();
    with_offsite(&sandbox, &s3_offsite(&s3));
    big_db(&sandbox);
    sandbox.upkeep(&["backup", "production"]).code(0);
    let pushing = Command::new(UPKEEP)
        .args(["push", "production"])
        .current_dir(sandbox.path(""))
        .envs(aws())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let root = s3.stop();
    let out = pushing.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("s3://{BUCKET}/upkeep")),
        "{stderr}"
    );
    assert_eq!(
        sandbox.backups("production").len(),
        1,
        "the local backup is kept"
    );

    // Back up again: nothing is listed as a backup off-site.
    let s3 = S3::serve(root);
    with_offsite(&sandbox, &s3_offsite(&s3));
    let listed = sandbox.upkeep_with(
        &["backups", "production", "--offsite", "--format", "json"],
        &aws(),
    );
    listed.code(0);
    assert_eq!(
        listed.json()[0]["backups"],
        serde_json::json!([]),
        "{listed}"
    );
}

/// Copies the backup `from` (and its manifest) under the name of `stamp`.
pub(crate) fn backup_at(sandbox: &Sandbox, from: &Path, stamp: &str) -> String {
    let name = format!("production_data_{stamp}.duckdb");
    let to = sandbox.path("backups").join(&name);
    std::fs::copy(from, &to).unwrap();
    std::fs::copy(manifest_of(from), manifest_of(&to)).unwrap();
    name
}

#[test]
fn off_site_retention_deletes_what_its_policy_does_not_keep_manifest_first() {
    let store = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new();
    sandbox.upkeep(&["backup", "production"]).code(0);
    let made = sandbox.backups("production").pop().unwrap();
    // Five days of backups, one a day.
    let names: Vec<String> = (1..=5)
        .map(|day| backup_at(&sandbox, &made, &format!("2024010{day}_020000")))
        .collect();
    std::fs::remove_file(manifest_of(&made)).unwrap();
    std::fs::remove_file(&made).unwrap();
    with_offsite(
        &sandbox,
        &format!(
            "    url: file://{}\n    retention: {{ last: 2 }}\n",
            store.path().display()
        ),
    );
    let off_site = |name: &str| store.path().join("production").join(name).exists();
    for name in &names[..3] {
        sandbox.upkeep(&["push", "production", name]).code(0);
    }
    // After the third push, the first is deleted, manifest and data.
    assert!(!off_site(&names[0]) && !off_site(&format!("{}.manifest.json", names[0])));
    assert!(off_site(&names[1]) && off_site(&names[2]));
    // --all sends only what retention keeps: the two newest.
    let all = sandbox.upkeep(&["push", "production", "--all", "--format", "json"]);
    all.code(0);
    let event = &all.json()[0];
    assert_eq!(
        event["uploaded"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [names[3].as_str(), names[4].as_str()]
    );
    assert_eq!(event["deleted"], serde_json::json!([names[1], names[2]]));
    let listed = sandbox.upkeep(&["backups", "production", "--offsite"]);
    listed.code(0).stdout_has("last");
    assert_eq!(
        walk(&store.path().join("production")).len(),
        4,
        "two backups, each data and manifest"
    );
}

/// The stamps of production's backups, oldest first.
fn stamps_kept(sandbox: &Sandbox) -> Vec<String> {
    sandbox
        .backups("production")
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy()[16..31].to_string())
        .collect()
}

#[test]
fn local_rotation_by_calendar_keeps_what_its_rules_say_and_backups_shows_why() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "upkeep.yaml",
        &CONFIG.replace(
            "  dir: backups\n",
            "  dir: backups\n  retention: { daily: 2, monthly: 2 }\n",
        ),
    );
    sandbox.upkeep(&["backup", "production"]).code(0);
    let made = sandbox.backups("production").pop().unwrap();
    for stamp in [
        "20240110_020000",
        "20240131_020000",
        "20240201_020000",
        "20240215_020000",
        "20240215_030000",
    ] {
        backup_at(&sandbox, &made, stamp);
    }
    sandbox.upkeep(&["backup", "production"]).code(0);
    let kept = stamps_kept(&sandbox);
    // Two days and two months: today (two backups, the newest counts), then
    // 2024-02-15 (its newest), which is also February's newest.
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[0], "20240215_030000", "{kept:?}");
    sandbox
        .upkeep(&["backups", "production"])
        .code(0)
        .stdout_has("daily, monthly")
        .stdout_has("newest verified");
}

#[test]
fn local_rotation_keeps_all_within_a_duration_and_the_newest_of_each_hour() {
    let sandbox = Sandbox::new();
    let retention = |rules: &str| {
        sandbox.write(
            "upkeep.yaml",
            &CONFIG.replace(
                "  dir: backups\n",
                &format!("  dir: backups\n  retention: {rules}\n"),
            ),
        );
    };
    retention("{ within: 10y }");
    sandbox.upkeep(&["backup", "production"]).code(0);
    let made = sandbox.backups("production").pop().unwrap();
    for stamp in ["20240215_020000", "20240215_021500", "20240215_030000"] {
        backup_at(&sandbox, &made, stamp);
    }
    // Everything newer than ten years before the newest (today's).
    sandbox.upkeep(&["backup", "production"]).code(0);
    assert_eq!(sandbox.backups("production").len(), 5);
    sandbox
        .upkeep(&["backups", "production"])
        .code(0)
        .stdout_has("within");
    // Two hours: this one's, and 2024-02-15 03:00's newest.
    retention("{ hourly: 2 }");
    sandbox.upkeep(&["backup", "production"]).code(0);
    let kept = stamps_kept(&sandbox);
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[0], "20240215_030000", "{kept:?}");
    // A duration restic would not read: exit 2, with the line.
    retention("{ within: 7x }");
    sandbox
        .upkeep(&["backup", "production"])
        .code(2)
        .stderr_has("upkeep.yaml:")
        .stderr_has("unknown unit `x`");
    assert_eq!(sandbox.backups("production").len(), 2);
}

#[test]
fn a_pipeline_pushes_with_the_push_step_and_backup_yaml_skips_it_without_offsite() {
    let store = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new();
    sandbox.write(
        "pipelines/nightly.yaml",
        "name: nightly\nenv: production\nsteps:\n  - uses: backup\n  - uses: push\n",
    );
    sandbox
        .upkeep(&["run", "nightly"])
        .code(2)
        .stdout_has("no `backups.offsite` in `");
    with_offsite(
        &sandbox,
        &format!("    url: file://{}\n", store.path().display()),
    );
    sandbox
        .upkeep(&["run", "nightly"])
        .code(0)
        .stdout_has("pushed 1 backup");
    assert_eq!(walk(&store.path().join("production")).len(), 2);

    // The shipped backup.yaml: without offsite its push steps skip.
    let plain = Sandbox::new();
    plain.write(
        "pipelines/backup.yaml",
        include_str!("../../pipelines/backup.yaml"),
    );
    plain
        .upkeep(&["run", "backup"])
        .code(0)
        .stdout_has("skipped: no `backups.offsite`");
}

#[test]
fn damaged_or_cut_objects_are_found_by_verify_and_never_restored() {
    let s3 = S3::start();
    let sandbox = Sandbox::new();
    with_offsite(&sandbox, &s3_offsite(&s3));
    sandbox.upkeep(&["backup", "production"]).code(0);
    let name = name_of(&sandbox.backups("production")[0]);
    push(&sandbox, &["production"]).code(0);
    let object = s3.path(&format!("upkeep/production/{name}"));

    // Same size, one byte changed: only reading the data finds it.
    let mut data = std::fs::read(&object).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0x5a;
    std::fs::write(&object, &data).unwrap();
    sandbox
        .upkeep_with(&["verify", "production", "--offsite"], &aws())
        .code(0);
    sandbox
        .upkeep_with(
            &["verify", "production", "--offsite", "--read-data"],
            &aws(),
        )
        .code(1)
        .stdout_has("its data differs from its manifest");
    let before = bytes(&sandbox.db("prod"));
    std::fs::remove_file(sandbox.backups("production")[0].clone()).unwrap();
    sandbox
        .upkeep_with(&["restore", "production", "--offsite", "--latest"], &aws())
        .code(1)
        .stderr_has("does not match its manifest");
    assert_eq!(bytes(&sandbox.db("prod")), before, "nothing was changed");
    assert!(
        sandbox.backups("production").is_empty(),
        "no damaged download kept"
    );

    // Cut short: its size says so, and it is not listed as verified.
    std::fs::write(&object, &data[..middle]).unwrap();
    sandbox
        .upkeep_with(&["verify", "production", "--offsite"], &aws())
        .code(1)
        .stdout_has(&format!("data object is {middle} bytes"));
    sandbox
        .upkeep_with(&["restore", "production", "--offsite", "--latest"], &aws())
        .code(1)
        .stderr_has("no verified backup of `production` at off-site store");
}

/// SeaweedFS's all-in-one server (`weed mini`) on 127.0.0.1, telemetry off,
/// each of its ports a free one.
pub(crate) struct Seaweed {
    server: Server,
    _dir: tempfile::TempDir,
    pub(crate) s3_port: u16,
}

impl Seaweed {
    pub(crate) fn start() -> Seaweed {
        let dir = tempfile::Builder::new()
            .prefix("upkeep-weed-")
            .tempdir()
            .unwrap();
        let s3_port = free_port();
        let port = |flag: &str| format!("-{flag}={}", free_port());
        let child = Command::new(tool("weed"))
            .arg("mini")
            .arg(format!("-dir={}", dir.path().display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
            ])
            .args([
                "-webdav=false",
                "-admin.ui=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ])
            .arg(format!("-s3.port={s3_port}"))
            .args([
                port("s3.port.grpc"),
                port("master.port"),
                port("master.port.grpc"),
                port("volume.port"),
                port("volume.port.grpc"),
                port("filer.port"),
                port("filer.port.grpc"),
                port("admin.port"),
                port("admin.port.grpc"),
                port("debug.port"),
            ])
            .arg(format!("-bucket={BUCKET}"))
            .env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start weed mini");
        let mut weed = Seaweed {
            server: Server(child),
            _dir: dir,
            s3_port,
        };
        // Up when its S3 API answers (the bucket comes a little later).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answered = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://127.0.0.1:{s3_port}/{BUCKET}"))
                .output()
                .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
                .unwrap_or_default();
            if !["000", ""].contains(&answered.as_str()) {
                break;
            }
            if let Ok(Some(status)) = weed.server.0.try_wait() {
                panic!("weed mini exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "weed mini did not serve S3 on {s3_port}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        weed
    }

    /// Waits until `sandbox`'s off-site listing (upkeep.yaml pointing at
    /// this server) succeeds: the bucket is made a little after start.
    pub(crate) fn until_listed(&self, sandbox: &Sandbox) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while sandbox
            .upkeep_with(&["backups", "production", "--offsite"], &aws())
            .code
            != Some(0)
        {
            assert!(
                Instant::now() < deadline,
                "weed mini made no bucket `{BUCKET}`"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

#[test]
fn an_encrypted_round_trip_through_seaweedfs() {
    let weed = Seaweed::start();
    let sandbox = Sandbox::new();
    let keys = tempfile::tempdir().unwrap();
    let (identity, public) = age_keys(keys.path());
    with_offsite(
        &sandbox,
        &format!(
            "    url: s3://{BUCKET}/upkeep\n    endpoint: http://127.0.0.1:{}\n    encrypt_to: [{public}]\n",
            weed.s3_port
        ),
    );
    weed.until_listed(&sandbox);
    sandbox.upkeep(&["backup", "production"]).code(0);
    let name = name_of(&sandbox.backups("production")[0]);
    push(&sandbox, &["production"])
        .code(0)
        .stdout_has("(encrypted)");
    push(&sandbox, &["production"])
        .code(0)
        .stdout_has("nothing sent");
    sandbox
        .upkeep_with(
            &["verify", "production", "--offsite", "--read-data"],
            &aws(),
        )
        .code(0)
        .stdout_has("data read back and hashed");
    let rows = counts(&sandbox.db("prod"));
    sql(&sandbox.db("prod"), "DELETE FROM orders");
    for path in sandbox.backups("production") {
        std::fs::remove_file(manifest_of(&path)).unwrap();
        std::fs::remove_file(path).unwrap();
    }
    let mut env = aws();
    let identity = identity.to_string_lossy().into_owned();
    env.push(("UPKEEP_AGE_IDENTITY", &identity));
    sandbox
        .upkeep_with(&["restore", "production", "--offsite", &name], &env)
        .code(0);
    assert_eq!(counts(&sandbox.db("prod")), rows);
}

#[test]
fn a_block_cut_out_of_a_pack_decrypts_with_the_age_tool() {
    use upkeep::offsite::pack::{self, Pack};
    let sandbox = Sandbox::empty();
    let (identity, public) = age_keys(sandbox.path("").as_path());
    let recipients =
        upkeep::offsite::crypt::Recipients::load(&[public], sandbox.path("").as_path()).unwrap();
    let key = [3u8; 32];
    let blocks: Vec<Vec<u8>> = (0..3u8)
        .map(|seed| (0..256 << 10).map(|i: u32| (i as u8) ^ seed).collect())
        .collect();
    let mut packed = Pack::default();
    for block in &blocks {
        assert!(
            packed
                .add(pack::name(&key, block), block, Some(&recipients))
                .unwrap()
        );
    }
    let (bytes, stored) = packed.finish();
    // The middle block, as one ranged GET would return it.
    let middle = &stored[1];
    let cut = sandbox.path("block.age");
    std::fs::write(
        &cut,
        &bytes[middle.offset as usize..(middle.offset + middle.len) as usize],
    )
    .unwrap();
    let out = Command::new(tool("age"))
        .arg("-d")
        .arg("-i")
        .arg(&identity)
        .arg(&cut)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout == blocks[1], "age decrypted other bytes");
}
