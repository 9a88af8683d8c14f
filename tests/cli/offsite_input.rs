//! Off-site values a user (or a hostile store) hands upkeep: prefixes with
//! non-ASCII letters and URL-special characters, stored as written on
//! s3s-fs, SeaweedFS and a folder, and read back with the store's own
//! client (boto3, as `aws s3 cp` would); malformed endpoints and regions,
//! refused at load (exit 2, with the line or the variable), never a panic;
//! an age identity pasted where a recipient goes, refused and never
//! echoed; a folder store's modes under umask 022; and manifests planted
//! too big to read.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::offsite::{
    BUCKET, S3, Seaweed, age_keys, aws, backup_at, big_db, name_of, push, restore_on_a_new_machine,
    with_offsite,
};
use crate::support::*;

/// A prefix with every character that used to be percent-encoded into the
/// keys (`~ [ ] { } ^ | * %`, non-ASCII letters), a blank, the other
/// punctuation both servers keep as written, and two levels.
const PREFIX: &str = r#"sauvegardés/~[]{}^|*% ü€"<>`'=&$!,;:@()"#;

/// `text` as a single-quoted YAML scalar: taken as written.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// boto3, from the venv that brings `weed` (scripts/test_tools.sh): the
/// stores' own client, which takes a key as a user types it.
fn boto3(endpoint: &str, args: &[&str]) -> String {
    const SCRIPT: &str = r#"
import json, sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
if sys.argv[2] == "list":
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[3], Prefix=sys.argv[4])
    print(json.dumps(sorted(o["Key"] for page in pages for o in page.get("Contents", []))))
else:
    s3.download_file(sys.argv[3], sys.argv[4], sys.argv[5])
"#;
    let python = tool("weed").with_file_name("python");
    let out = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(endpoint)
        .args(args)
        .envs(aws())
        .output()
        .unwrap();
    assert!(out.status.success(), "boto3 {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// A store as its own tools see it: an S3 server through boto3 (its
/// endpoint), or a folder (its root).
enum Raw {
    S3(String),
    Folder(PathBuf),
}

impl Raw {
    /// The keys under `prefix`, sorted.
    fn keys(&self, prefix: &str) -> Vec<String> {
        match self {
            Raw::S3(endpoint) => {
                serde_json::from_str(&boto3(endpoint, &["list", BUCKET, prefix])).unwrap()
            }
            Raw::Folder(root) => {
                let mut keys: Vec<String> = walk(&root.join(prefix))
                    .iter()
                    .map(|path| {
                        path.strip_prefix(root)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned()
                    })
                    .collect();
                keys.sort();
                keys
            }
        }
    }

    /// An object, fetched by its key as written.
    fn fetch(&self, key: &str) -> Vec<u8> {
        match self {
            Raw::S3(endpoint) => {
                let dir = tempfile::tempdir().unwrap();
                let to = dir.path().join("object");
                boto3(endpoint, &["get", BUCKET, key, to.to_str().unwrap()]);
                bytes(&to)
            }
            Raw::Folder(root) => bytes(&root.join(key)),
        }
    }
}

/// Push, list, verify (data read back), retention and a restore on a new
/// machine, with `offsite` (its lines in upkeep.yaml) holding [`PREFIX`];
/// `raw` must see every key exactly as written.
fn round_trip(offsite: &str, raw: &Raw, ready: &dyn Fn(&Sandbox)) {
    let sandbox = Sandbox::new();
    with_offsite(
        &sandbox,
        &format!("{offsite}    retention: {{ last: 1 }}\n"),
    );
    ready(&sandbox);
    sandbox.upkeep(&["backup", "production"]).code(0);
    let made = sandbox.backups("production").pop().unwrap();
    let first = name_of(&made);
    let second = backup_at(&sandbox, &made, "20991231_235959");
    let under = format!("{PREFIX}/production/");
    let as_written = |name: &str| {
        vec![
            format!("{under}{name}"),
            format!("{under}{name}.manifest.json"),
        ]
    };

    push(&sandbox, &["production", &first]).code(0);
    assert_eq!(raw.keys(PREFIX), as_written(&first));
    assert_eq!(
        raw.fetch(&format!("{under}{first}")),
        bytes(&made),
        "the store's own client gets the backup by the key as written"
    );
    sandbox
        .upkeep_with(&["backups", "production", "--offsite"], &aws())
        .code(0)
        .stdout_has(&first)
        .stdout_has("verified");

    // The second backup is newer: retention (last: 1) deletes the first.
    let pushed = push(&sandbox, &["production", &second, "--format", "json"]);
    pushed.code(0);
    assert_eq!(
        pushed.json()[0]["deleted"],
        serde_json::json!([first]),
        "{pushed}"
    );
    assert_eq!(raw.keys(PREFIX), as_written(&second));
    sandbox
        .upkeep_with(
            &["verify", "production", "--offsite", "--read-data"],
            &aws(),
        )
        .code(0)
        .stdout_has("data read back and hashed");

    restore_on_a_new_machine(sandbox, &aws());
}

#[test]
fn a_prefix_of_any_character_is_kept_as_written_on_s3s_fs() {
    let s3 = S3::start();
    let offsite = format!(
        "    url: {}\n    endpoint: {}\n",
        quoted(&format!("s3://{BUCKET}/{PREFIX}")),
        s3.endpoint()
    );
    round_trip(&offsite, &Raw::S3(s3.endpoint()), &|_| {});
}

#[test]
fn a_prefix_of_any_character_is_kept_as_written_on_seaweedfs() {
    let weed = Seaweed::start();
    let endpoint = format!("http://127.0.0.1:{}", weed.s3_port);
    let offsite = format!(
        "    url: {}\n    endpoint: {endpoint}\n",
        quoted(&format!("s3://{BUCKET}/{PREFIX}")),
    );
    round_trip(&offsite, &Raw::S3(endpoint), &|sandbox| {
        weed.until_listed(sandbox)
    });
}

#[test]
fn a_folder_of_any_character_is_kept_as_written() {
    // In a folder, the prefix is part of the folder's path.
    let store = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(store.path().join(PREFIX)).unwrap();
    let offsite = format!(
        "    url: {}\n",
        quoted(&format!("file://{}/{PREFIX}", store.path().display()))
    );
    round_trip(&offsite, &Raw::Folder(store.path().to_path_buf()), &|_| {});
}

#[test]
fn malformed_endpoints_and_regions_are_refused_at_load_never_a_panic() {
    let sandbox = Sandbox::new();
    sandbox.upkeep(&["backup", "production"]).code(0);
    let url = format!("    url: s3://{BUCKET}/upkeep\n");
    let mut runs = Vec::new();
    for bad in [
        "http://127.0.0.1:99999",
        "http://[::1",
        "http://host:9000 x",
        "http://127.0.0.1:9000/\u{7f}",
        "http://:9000",
    ] {
        // Line 8: `endpoint:` after `offsite:` and `url:`.
        with_offsite(&sandbox, &format!("{url}    endpoint: {}\n", quoted(bad)));
        for args in [&["backups", "production"][..], &["push", "production"]] {
            let run = sandbox.upkeep_with(args, &aws());
            run.code(2).stderr_has("upkeep.yaml:8:");
            runs.push(run);
        }
        // The same from the environment, which the AWS tools read too.
        with_offsite(&sandbox, &url);
        for variable in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"] {
            let mut env = aws();
            env.push((variable, bad));
            let run = sandbox.upkeep_with(&["push", "production"], &env);
            run.code(2)
                .stderr_has("upkeep.yaml:7:")
                .stderr_has(&format!("{variable}: "));
            runs.push(run);
        }
    }
    // URLs the S3 client reads for credentials: the same panic, in some
    // setups only; refused in all.
    with_offsite(&sandbox, &url);
    for (variable, bad) in [
        ("AWS_METADATA_ENDPOINT", "http://127.0.0.1:99999"),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://[::1"),
        (
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            ":99999/v2/credentials",
        ),
        ("AWS_ENDPOINT_URL_STS", "http://host:9000 x"),
    ] {
        let mut env = aws();
        env.push((variable, bad));
        sandbox
            .upkeep_with(&["backups", "production"], &env)
            .code(2)
            .stderr_has(&format!("{variable}: "));
    }
    // What one of the servers does not keep as written: refused, saying why.
    for (prefix, why) in [
        ("a+b", "as a blank"),
        ("a\\b", "as `/`"),
        ("100%41", "read as an escape"),
    ] {
        with_offsite(
            &sandbox,
            &format!("    url: {}\n", quoted(&format!("s3://{BUCKET}/{prefix}"))),
        );
        sandbox
            .upkeep(&["backups", "production"])
            .code(2)
            .stderr_has("upkeep.yaml:7:")
            .stderr_has(why);
    }
    with_offsite(&sandbox, &format!("{url}    region: 'us east'\n"));
    sandbox
        .upkeep_with(&["push", "production"], &aws())
        .code(2)
        .stderr_has("upkeep.yaml:8:")
        .stderr_has("not a region name");
    with_offsite(&sandbox, &url);
    let mut env = aws();
    env.retain(|(name, _)| *name != "AWS_REGION");
    env.push(("AWS_REGION", "us-east-1/../x"));
    sandbox
        .upkeep_with(&["push", "production"], &env)
        .code(2)
        .stderr_has("AWS_REGION: ");
    for run in &runs {
        assert!(!run.stderr.contains("panicked"), "{run}");
    }

    // An endpoint in upkeep.yaml is the one used: the environment's never
    // reaches the client, checked or not.
    let s3 = S3::start();
    with_offsite(&sandbox, &format!("{url}    endpoint: {}\n", s3.endpoint()));
    let mut env = aws();
    env.push(("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:99999"));
    env.push(("AWS_ENDPOINT", "http://[::1"));
    sandbox
        .upkeep_with(&["push", "production"], &env)
        .code(0)
        .stdout_has("pushed");
}

#[test]
fn an_age_identity_where_a_recipient_goes_is_refused_and_never_echoed() {
    let sandbox = Sandbox::new();
    let keys = tempfile::tempdir().unwrap();
    let (identity_file, public) = age_keys(keys.path());
    let identity = std::fs::read_to_string(&identity_file)
        .unwrap()
        .lines()
        .find(|line| line.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_string();
    // What must never be shown: the key's body, in any case.
    let body = identity["AGE-SECRET-KEY-".len()..].to_ascii_lowercase();
    let store = tempfile::tempdir().unwrap();
    let url = format!("    url: file://{}\n", store.path().display());
    sandbox.upkeep(&["backup", "production"]).code(0);
    let mut runs = Vec::new();
    let hint = "that is an identity; give its recipient, `age-keygen -y`";

    // Line 8: `encrypt_to:` (or its list's item) after `offsite:` and `url:`.
    for encrypt_to in [
        identity.clone(),
        format!("[{identity}]"),
        format!("[{public}, {}]", identity.to_ascii_lowercase()),
        format!("[\"keys/{identity}.pub\"]"),
        format!("\"# {identity}\""),
    ] {
        with_offsite(&sandbox, &format!("{url}    encrypt_to: {encrypt_to}\n"));
        for args in [
            &["backups", "production"][..],
            &["push", "production", "--format", "json"],
            &["backups", "production", "--format", "json"],
        ] {
            let run = sandbox.upkeep(args);
            run.code(2);
            // In JSON, the error is an event on stdout.
            let shown = format!("{}{}", run.stdout, run.stderr);
            assert!(
                shown.contains("upkeep.yaml:8:") && shown.contains(hint),
                "{run}"
            );
            runs.push(run);
        }
    }

    // A recipients file that is the identity file itself (line 3, after
    // age-keygen's two comments).
    std::fs::copy(&identity_file, sandbox.path("backup.pub")).unwrap();
    with_offsite(&sandbox, &format!("{url}    encrypt_to: [backup.pub]\n"));
    let run = sandbox.upkeep(&["push", "production"]);
    run.code(2)
        .stderr_has("backup.pub:3")
        .stderr_has(hint)
        .stderr_has("nothing was uploaded");
    runs.push(run);
    assert!(walk(store.path()).is_empty(), "nothing was uploaded");

    // The identity itself given where its file goes.
    with_offsite(&sandbox, &format!("{url}    encrypt_to: [{public}]\n"));
    sandbox.upkeep(&["push", "production"]).code(0);
    for path in sandbox.backups("production") {
        std::fs::remove_file(manifest_of(&path)).unwrap();
        std::fs::remove_file(path).unwrap();
    }
    let restore = ["restore", "production", "--offsite", "--latest"];
    let run = sandbox.upkeep(&[&restore[..], &["--identity", &identity]].concat());
    run.code(2).stderr_has("not the identity itself");
    runs.push(run);
    let run = sandbox.upkeep_with(&restore, &[("UPKEEP_AGE_IDENTITY", &identity)]);
    run.code(2).stderr_has("not the identity itself");
    runs.push(run);

    let logs: String = walk(&sandbox.path(".upkeep"))
        .iter()
        .map(|path| String::from_utf8_lossy(&bytes(path)).to_ascii_lowercase())
        .collect();
    assert!(!logs.contains(&body), "the identity in .upkeep/");
    for run in &runs {
        let shown = format!("{}{}", run.stdout, run.stderr).to_ascii_lowercase();
        assert!(!shown.contains(&body), "the identity was shown:\n{run}");
        assert!(!shown.contains("invalid type"), "serde quoted it:\n{run}");
    }
}

/// Runs upkeep in `sandbox` under umask 022, the common default.
fn upkeep_umask_022(sandbox: &Sandbox, args: &[&str]) -> Run {
    let mut command = Command::new("sh");
    command
        .args(["-c", "umask 022 && exec \"$@\"", "sh", UPKEEP])
        .args(args)
        .current_dir(sandbox.path(""))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    sandbox.capture(command, args)
}

/// Every file under `root` and its mode, and every folder below it.
fn modes(root: &Path) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            let name = entry.path().to_string_lossy().into_owned();
            found.push((name, meta.permissions().mode() & 0o777));
            if meta.is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    found
}

#[test]
fn a_folder_store_is_private_whatever_the_umask() {
    let store = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new();
    with_offsite(
        &sandbox,
        &format!("    url: file://{}\n", store.path().display()),
    );
    big_db(&sandbox);
    upkeep_umask_022(&sandbox, &["backup", "production"]).code(0);
    // A folder an older upkeep made readable by all is made private too.
    std::fs::create_dir(store.path().join("staging")).unwrap();
    let staging = store.path().join("staging");
    std::fs::set_permissions(
        &staging,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    upkeep_umask_022(&sandbox, &["backup", "staging"]).code(0);

    // The staging file of an upload in progress, once it has bytes.
    let mut seen = None;
    for _ in 0..5 {
        for path in walk(store.path()) {
            std::fs::remove_file(path).unwrap();
        }
        let mut command = Command::new("sh");
        command
            .args([
                "-c",
                "umask 022 && exec \"$@\"",
                "sh",
                UPKEEP,
                "push",
                "production",
            ])
            .current_dir(sandbox.path(""))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.is_none() && child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            seen = modes(store.path()).into_iter().find(|(name, _)| {
                name.contains('#') && std::fs::metadata(name).is_ok_and(|meta| meta.len() > 0)
            });
        }
        assert!(child.wait().unwrap().success());
        if seen.is_some() {
            break;
        }
    }
    let (name, mode) = seen.expect("no upload in progress was seen in five pushes");
    assert_eq!(mode, 0o600, "staging file {name}");

    upkeep_umask_022(&sandbox, &["push", "staging"]).code(0);
    let found = modes(store.path());
    assert_eq!(
        found.len(),
        6,
        "two folders, two backups with their manifests: {found:?}"
    );
    for (name, mode) in found {
        let want = match std::fs::metadata(&name).unwrap().is_dir() {
            true => 0o700,
            false => 0o600,
        };
        assert_eq!(mode, want, "{name}: {mode:o}");
    }
}

/// Runs upkeep with at most 2 GiB of address space: a manifest read whole
/// (8 GiB) cannot fit, and fails the run instead of the machine.
fn upkeep_bounded(sandbox: &Sandbox, args: &[&str]) -> Run {
    let mut command = Command::new(tool("prlimit"));
    command
        .arg(format!("--as={}", 2u64 << 30))
        .arg(UPKEEP)
        .args(args)
        .current_dir(sandbox.path(""))
        .envs(aws())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    sandbox.capture(command, args)
}

/// Makes `path` a sparse file of 8 GiB (it holds nothing on disk).
fn plant_huge(path: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap()
        .set_len(8 << 30)
        .unwrap();
}

#[test]
fn a_huge_manifest_here_or_in_a_folder_store_is_damage_never_read_whole() {
    let store = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new();
    with_offsite(
        &sandbox,
        &format!("    url: file://{}\n", store.path().display()),
    );
    sandbox.upkeep(&["backup", "production"]).code(0);
    let made = sandbox.backups("production").pop().unwrap();
    let name = name_of(&made);
    sandbox.upkeep(&["push", "production"]).code(0);

    plant_huge(
        &store
            .path()
            .join(format!("production/{name}.manifest.json")),
    );
    upkeep_bounded(&sandbox, &["backups", "production", "--offsite"])
        .code(0)
        .stdout_has(&name)
        .stdout_has("unreadable manifest");
    upkeep_bounded(&sandbox, &["verify", "production", "--offsite"]).code(1);
    upkeep_bounded(&sandbox, &["restore", "production", "--offsite", &name])
        .code(1)
        .stderr_has("cannot be restored");

    // A local backup's manifest: the backup is unverified, not trusted.
    plant_huge(&manifest_of(&made));
    upkeep_bounded(&sandbox, &["backups", "production"])
        .code(0)
        .stdout_has(&name)
        .stdout_has("unverified");
}

#[test]
fn a_manifest_over_4_mib_on_s3_is_damage_even_when_it_parses() {
    let s3 = S3::start();
    let sandbox = Sandbox::new();
    with_offsite(
        &sandbox,
        &format!(
            "    url: s3://{BUCKET}/upkeep\n    endpoint: {}\n",
            s3.endpoint()
        ),
    );
    sandbox.upkeep(&["backup", "production"]).code(0);
    let name = name_of(&sandbox.backups("production")[0]);
    push(&sandbox, &["production"]).code(0);
    // The real manifest, with 8 MiB of blanks after it: valid JSON still.
    let manifest = s3.path(&format!("upkeep/production/{name}.manifest.json"));
    let mut padded = bytes(&manifest);
    padded.resize(padded.len() + (8 << 20), b' ');
    std::fs::write(&manifest, padded).unwrap();

    sandbox
        .upkeep_with(&["backups", "production", "--offsite"], &aws())
        .code(0)
        .stdout_has("unreadable manifest");
    sandbox
        .upkeep_with(&["verify", "production", "--offsite"], &aws())
        .code(1);
    std::fs::remove_file(sandbox.backups("production")[0].clone()).unwrap();
    sandbox
        .upkeep_with(&["restore", "production", "--offsite", "--latest"], &aws())
        .code(1)
        .stderr_has("no verified backup");
}
