//! The Ansible rollout, `deploy/ansible/update.yml`, run by ansible-core on a
//! fleet of "hosts" on this machine: each host is an app of its own (project,
//! git origin, DuckDB database, running process), reached with
//! `ansible_connection: local` and per-host variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::*;
use crate::update::App;

const PHONE: &str = "ALTER TABLE users ADD COLUMN phone VARCHAR;";

/// Hosts `host1` (the canary), `host2`... and a folder for the inventory,
/// Ansible's home and its temporary files.
struct Fleet {
    hosts: Vec<App>,
    dir: tempfile::TempDir,
}

impl Fleet {
    fn new(count: usize) -> Fleet {
        let fleet = Fleet {
            hosts: (0..count).map(|_| App::new()).collect(),
            dir: tempfile::Builder::new()
                .prefix("upkeep-ansible-")
                .tempdir()
                .unwrap(),
        };
        fleet.inventory(&[]);
        fleet
    }

    fn host(&self, n: usize) -> &App {
        &self.hosts[n - 1]
    }

    /// Writes inventory.yml: every host local, with its project and the
    /// upkeep binary as per-host variables, plus `extra` (host, YAML
    /// mapping lines) per host.
    fn inventory(&self, extra: &[(usize, &str)]) {
        let python = tool("ansible-playbook").with_file_name("python");
        let mut text = String::from("app_servers:\n  hosts:\n");
        for (i, app) in self.hosts.iter().enumerate() {
            text.push_str(&format!(
                "    host{}:\n      upkeep_project: {}\n      upkeep_bin: {UPKEEP}\n",
                i + 1,
                app.sandbox.dir.path().display()
            ));
            for (_, line) in extra.iter().filter(|(n, _)| *n == i + 1) {
                text.push_str(&format!("      {line}\n"));
            }
        }
        text.push_str(&format!(
            "  vars:\n    ansible_connection: local\n    ansible_python_interpreter: {}\n    \
             upkeep_busy_delay: 1\n",
            python.display()
        ));
        std::fs::write(self.dir.path().join("inventory.yml"), text).unwrap();
    }

    /// `ansible-playbook -i inventory.yml deploy/ansible/update.yml ARGS`.
    fn rollout(&self, args: &[&str]) -> Run {
        let dir = self.dir.path();
        let mut command = ansible_playbook(dir);
        command
            .arg("-i")
            .arg(dir.join("inventory.yml"))
            .arg(playbook())
            .args(args);
        let mut label = vec!["ansible-playbook", "update.yml"];
        label.extend(args);
        let mut run = self.host(1).sandbox.capture(command, &label);
        run.tree = std::fs::read_to_string(dir.join("inventory.yml")).unwrap();
        run
    }
}

fn playbook() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ansible/update.yml")
}

/// ansible-playbook run from `dir`, with no configuration but this
/// environment's: `dir` is its home and holds its temporary files.
fn ansible_playbook(dir: &Path) -> Command {
    let temp = dir.join("tmp");
    std::fs::create_dir_all(&temp).unwrap();
    std::fs::write(dir.join("ansible.cfg"), "").unwrap();
    let mut command = Command::new(tool("ansible-playbook"));
    command
        .current_dir(dir)
        .env("HOME", dir)
        .env("ANSIBLE_CONFIG", dir.join("ansible.cfg"))
        .env("ANSIBLE_LOCAL_TEMP", &temp)
        .env("ANSIBLE_REMOTE_TEMP", &temp)
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_HOST_KEY_CHECKING", "False")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "False")
        // What ansible shows, also written as it goes: a test can wait
        // for a line without timing guesses.
        .env("ANSIBLE_LOG_PATH", dir.join("ansible.log"))
        // Ansible refuses a locale that is not UTF-8.
        .env("LC_ALL", "C.UTF-8")
        .env("NO_COLOR", "1")
        .env_remove("UPKEEP_CONFIG")
        .env_remove("ENVIRONMENT")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_STEP_SUMMARY")
        .stdin(Stdio::null());
    command
}

/// PLAY RECAP: host -> counter -> value.
#[track_caller]
fn recap(run: &Run) -> BTreeMap<String, BTreeMap<String, u32>> {
    let tail = run
        .stdout
        .split("PLAY RECAP")
        .nth(1)
        .unwrap_or_else(|| panic!("no PLAY RECAP\n{run}"));
    tail.lines()
        .skip(1)
        .filter_map(|line| line.split_once(" : "))
        .map(|(host, counters)| {
            let counters = counters
                .split_whitespace()
                .filter_map(|c| c.split_once('='))
                .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
                .collect();
            (host.trim().to_string(), counters)
        })
        .collect()
}

#[track_caller]
fn counter(run: &Run, host: &str, name: &str) -> u32 {
    let recap = recap(run);
    let counters = recap
        .get(host)
        .unwrap_or_else(|| panic!("{host} is not in the PLAY RECAP\n{run}"));
    counters[name]
}

/// What must not change on a host that the rollout never reached.
struct Untouched {
    head: String,
    db: Vec<u8>,
    state: PathBuf,
}

impl Untouched {
    fn of(app: &App) -> Untouched {
        Untouched {
            head: app.head(),
            db: bytes(&app.sandbox.path("backend/prod.duckdb")),
            state: app.sandbox.path(".upkeep"),
        }
    }

    #[track_caller]
    fn check(&self, app: &App, run: &Run) {
        assert_eq!(app.head(), self.head, "HEAD moved\n{run}");
        assert!(
            bytes(&app.sandbox.path("backend/prod.duckdb")) == self.db,
            "the database changed\n{run}"
        );
        assert!(!self.state.exists(), "upkeep ran there\n{run}");
        let health = app.healthy();
        assert!(
            health.as_deref().is_some_and(|h| h.starts_with("v1 ")),
            "{health:?}"
        );
    }
}

#[test]
fn a_failed_host_stops_the_rollout_after_its_batch_and_a_rerun_changes_nothing() {
    let fleet = Fleet::new(3);
    fleet
        .host(1)
        .release("v2", &[("backend/migrations/0001_phone.sql", PHONE)]);
    fleet.host(2).release(
        "v2",
        &[
            ("backend/migrations/0001_phone.sql", PHONE),
            (
                "backend/migrations/0002_broken.sql",
                "UPDATE users SET phone = 'x'; SELECT nope FROM nowhere;",
            ),
        ],
    );
    fleet
        .host(3)
        .release("v2", &[("backend/migrations/0001_phone.sql", PHONE)]);
    let head2 = fleet.host(2).head();
    let data2 = fleet.host(2).data();
    let host3 = Untouched::of(fleet.host(3));

    // serial [1, "25%"] of three hosts: host1 (the canary), then host2, then
    // host3. host2 fails: the rollout stops after its batch.
    let run = fleet.rollout(&[]);
    assert_eq!(run.code, Some(2), "failed hosts: exit 2\n{run}");
    assert!(run.stdout.contains("failed and rolled back"), "{run}");
    assert!(run.stdout.contains("host1: exit 0"), "{run}");
    assert!(run.stdout.contains("host2: exit 1"), "{run}");
    assert_eq!(counter(&run, "host1", "changed"), 1, "{run}");
    assert_eq!(counter(&run, "host1", "failed"), 0, "{run}");
    assert_eq!(counter(&run, "host2", "failed"), 1, "{run}");
    assert!(!recap(&run).contains_key("host3"), "{run}");
    let health = fleet.host(1).healthy();
    assert!(
        health.as_deref().is_some_and(|h| h.starts_with("v2 ")),
        "{health:?}"
    );
    // host2: rolled back by upkeep, the old app on its old data.
    assert_eq!(fleet.host(2).head(), head2);
    assert_eq!(fleet.host(2).data(), data2);
    let health = fleet.host(2).healthy();
    assert!(
        health.as_deref().is_some_and(|h| h.starts_with("v1 ")),
        "{health:?}"
    );
    host3.check(fleet.host(3), &run);

    // A fixed release for host2: the rollout goes through; host1 had
    // nothing new.
    fleet.host(2).release(
        "v3",
        &[(
            "backend/migrations/0002_broken.sql",
            "UPDATE users SET phone = 'x';",
        )],
    );
    let run = fleet.rollout(&[]);
    run.code(0);
    assert_eq!(counter(&run, "host1", "changed"), 0, "{run}");
    assert_eq!(counter(&run, "host2", "changed"), 1, "{run}");
    assert_eq!(counter(&run, "host3", "changed"), 1, "{run}");
    for (n, version) in [(1, "v2 "), (2, "v3 "), (3, "v2 ")] {
        let health = fleet.host(n).healthy();
        assert!(
            health.as_deref().is_some_and(|h| h.starts_with(version)),
            "host{n}: {health:?}"
        );
    }

    // Again, on a healthy fleet with nothing new: nothing changed anywhere.
    let run = fleet.rollout(&[]);
    run.code(0);
    for host in ["host1", "host2", "host3"] {
        assert_eq!(counter(&run, host, "changed"), 0, "{host}\n{run}");
        assert_eq!(counter(&run, host, "failed"), 0, "{host}\n{run}");
        assert!(run.stdout.contains(&format!("{host}: exit 0")), "{run}");
    }
}

#[test]
fn one_failed_host_in_a_batch_of_two_stops_the_rollout_after_that_batch() {
    // Eight hosts: batches of 1 (the canary), then 25%: 2, 2, 2, 1. Ansible
    // stops by itself only when every host of a batch failed; with
    // max_fail_percentage 0, one is enough.
    let fleet = Fleet::new(8);
    for n in 1..=8 {
        let mut files = vec![("backend/migrations/0001_phone.sql", PHONE)];
        if n == 2 {
            files.push((
                "backend/migrations/0002_broken.sql",
                "SELECT nope FROM nowhere;",
            ));
        }
        fleet.host(n).release("v2", &files);
    }
    let later: Vec<Untouched> = (4..=8).map(|n| Untouched::of(fleet.host(n))).collect();
    let run = fleet.rollout(&[]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stdout.contains("host2: exit 1"), "{run}");
    // host3 was in host2's batch: updated beside it.
    for n in [1, 3] {
        assert_eq!(counter(&run, &format!("host{n}"), "changed"), 1, "{run}");
        let health = fleet.host(n).healthy();
        assert!(
            health.as_deref().is_some_and(|h| h.starts_with("v2 ")),
            "host{n}: {health:?}"
        );
    }
    for (untouched, n) in later.iter().zip(4..=8) {
        assert!(!recap(&run).contains_key(&format!("host{n}")), "{run}");
        untouched.check(fleet.host(n), &run);
    }
}

#[test]
fn check_mode_is_the_dry_run_and_changes_nothing() {
    let fleet = Fleet::new(2);
    for n in [1, 2] {
        fleet
            .host(n)
            .release("v2", &[("backend/migrations/0001_phone.sql", PHONE)]);
    }
    let snapshot = |app: &App| -> Vec<(PathBuf, Vec<u8>)> {
        walk(app.sandbox.dir.path())
            .into_iter()
            .filter(|p| !p.ends_with("app.log"))
            .map(|p| (p.clone(), bytes(&p)))
            .collect()
    };
    let before: Vec<_> = fleet.hosts.iter().map(snapshot).collect();
    let run = fleet.rollout(&["--check"]);
    run.code(0);
    // Each host's plan says what the update would bring.
    assert_eq!(
        run.stdout.matches("pull: would fast-forward").count(),
        2,
        "{run}"
    );
    for (n, app) in fleet.hosts.iter().enumerate() {
        let host = format!("host{}", n + 1);
        assert!(
            run.stdout.contains(&format!("{host}: exit 0: dry-run")),
            "{run}"
        );
        assert_eq!(counter(&run, &host, "changed"), 0, "{run}");
        assert!(
            snapshot(app) == before[n],
            "the dry-run changed {host} (its files, .git included)\n{run}"
        );
    }
}

#[test]
fn a_busy_host_is_tried_again_until_upkeep_is_free() {
    let fleet = Fleet::new(1);
    let app = fleet.host(1);
    app.release("v2", &[("backend/migrations/0001_phone.sql", PHONE)]);
    // Another upkeep holds the lock (as a cron backup would): a pipeline of
    // one shell step, which needs no environment, holding it until the
    // rollout has been refused once, however slowly ansible starts.
    let release = app.sandbox.path("release");
    app.sandbox.write(
        "pipelines/hold.yaml",
        "name: hold\nsteps:\n  - run: \"i=0; while [ ! -e release ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done\"\n",
    );
    let mut holder = Command::new(UPKEEP)
        .args(["run", "hold"])
        .current_dir(app.sandbox.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = app.sandbox.path(".upkeep/lock");
    let started = std::time::Instant::now();
    while std::fs::metadata(&lock).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(started.elapsed().as_secs() < 30, "the holder never locked");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let log = fleet.dir.path().join("ansible.log");
    let releaser = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        while !std::fs::read_to_string(&log).is_ok_and(|log| log.contains("FAILED - RETRYING"))
            && started.elapsed().as_secs() < 120
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::fs::write(release, "").unwrap();
    });
    let run = fleet.rollout(&[]);
    releaser.join().unwrap();
    holder.wait().unwrap();
    run.code(0);
    assert!(run.stdout.contains("FAILED - RETRYING"), "{run}");
    assert_eq!(counter(&run, "host1", "changed"), 1, "{run}");
    let health = app.healthy();
    assert!(
        health.as_deref().is_some_and(|h| h.starts_with("v2 ")),
        "{health:?}"
    );
}

#[test]
fn a_rollback_that_does_not_complete_stops_the_whole_rollout() {
    let fleet = Fleet::new(2);
    // The canary runs a pipeline whose step fails and whose undo of the
    // step before fails too: exit 3.
    fleet.host(1).sandbox.write(
        "pipelines/doomed.yaml",
        "name: doomed\nsteps:\n  - run: \"true\"\n    rollback: exit 1\n  - run: exit 1\n",
    );
    fleet.inventory(&[(1, "upkeep_pipeline: doomed")]);
    fleet
        .host(2)
        .release("v2", &[("backend/migrations/0001_phone.sql", PHONE)]);
    let host2 = Untouched::of(fleet.host(2));
    let run = fleet.rollout(&[]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stdout.contains("host1: exit 3"), "{run}");
    assert!(run.stdout.contains("upkeep recover"), "{run}");
    assert_eq!(counter(&run, "host1", "failed"), 1, "{run}");
    assert!(!recap(&run).contains_key("host2"), "{run}");
    host2.check(fleet.host(2), &run);
    // upkeep there refuses to run until a person has looked.
    fleet
        .host(1)
        .sandbox
        .upkeep(&["run", "update"])
        .code(3)
        .stderr_has("upkeep recover");
}

#[test]
fn the_example_inventory_fits_the_playbook() {
    let sandbox = Sandbox::empty();
    let inventory =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ansible/inventory.example.yml");
    let mut command = ansible_playbook(sandbox.dir.path());
    command
        .arg("-i")
        .arg(&inventory)
        .arg(playbook())
        .arg("--list-hosts");
    let run = sandbox.capture(command, &["ansible-playbook", "--list-hosts"]);
    run.code(0);
    let mut hosts: Vec<&str> = run
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with(".example.com"))
        .collect();
    hosts.sort();
    assert_eq!(
        hosts,
        [
            "app1.example.com",
            "app2.example.com",
            "app3.example.com",
            "app4.example.com"
        ],
        "{run}"
    );
}
