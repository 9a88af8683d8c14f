//! `upkeep schedule`: the printed entries, checked by the real tools that
//! will read them (crontab, sh, systemd-analyze), and install / uninstall;
//! the daily backup's and, with `--replicate`, a replicator's, each on its
//! own.
//!
//! `crontab` acts on the crontab of the real uid, whatever HOME says, so the
//! tests that install never run as root: each creates a throwaway system
//! user (whose home is in its sandbox) and runs upkeep as that user with
//! `runuser`. Each test has its own user, so they run in parallel safely;
//! the user and its crontab are removed when the test ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::offsite::with_offsite;
use crate::support::*;

/// The managed line's marker for a sandbox's config.
fn marker(sandbox: &Sandbox) -> String {
    format!(
        "# upkeep schedule: {}",
        sandbox.path("upkeep.yaml").display()
    )
}

/// The marker of the line of `env`'s replicator.
fn replicate_marker(sandbox: &Sandbox, env: &str) -> String {
    format!(
        "# upkeep replicate {env}: {}",
        sandbox.path("upkeep.yaml").display()
    )
}

/// upkeep.yaml with `backups.offsite` in a `file://` store of the sandbox.
fn with_file_store(sandbox: &Sandbox) -> PathBuf {
    let store = sandbox.path("store");
    std::fs::create_dir_all(&store).unwrap();
    with_offsite(sandbox, &format!("    url: file://{}\n", store.display()));
    store
}

/// The sandbox's folder, as entries name it (no trailing `/`).
fn root(sandbox: &Sandbox) -> String {
    let root = sandbox.path("");
    root.to_str().unwrap().trim_end_matches('/').to_string()
}

#[test]
fn the_cron_line_follows_at_env_and_keep() {
    let sandbox = Sandbox::new();
    let run = sandbox.upkeep(&["schedule"]);
    run.code(0);
    let line = run.stdout.trim_end();
    assert_eq!(line.lines().count(), 1, "{run}");
    let root = sandbox.path("");
    let root = root.to_str().unwrap().trim_end_matches('/');
    let expected = format!(
        "0 2 * * * cd {root} && {UPKEEP} --config {root}/upkeep.yaml backup both --keep=30 >> {root}/backups/backup.log 2>&1 {}",
        marker(&sandbox)
    );
    assert_eq!(line, expected, "{run}");
    // The log's folder does not exist yet: the user is told.
    run.stderr_has("does not exist yet");

    sandbox
        .upkeep(&[
            "schedule", "--at", "23:45", "--env", "staging", "--keep", "9",
        ])
        .code(0)
        .stdout_has("45 23 * * * ")
        .stdout_has(" backup staging --keep=9 ");
    // Without --keep: backups.keep from upkeep.yaml.
    sandbox.write(
        "upkeep.yaml",
        &CONFIG.replace("  dir: backups\n", "  dir: backups\n  keep: 12\n"),
    );
    sandbox
        .upkeep(&["schedule", "--at=7:05", "--env=all"])
        .code(0)
        .stdout_has("5 7 * * * ")
        .stdout_has(" backup all --keep=12 ");
}

#[test]
fn bad_flags_exit_2_and_name_the_flag() {
    let sandbox = Sandbox::new();
    for bad in ["24:00", "12:60", "2pm", "02:00:00", ""] {
        sandbox
            .upkeep(&["schedule", "--at", bad])
            .code(2)
            .stderr_has("--at")
            .stderr_has("HH:MM");
    }
    sandbox
        .upkeep(&["schedule", "--env", "prod"])
        .code(2)
        .stderr_has("unknown environment `prod`");
    sandbox
        .upkeep(&["schedule", "--keep", "0"])
        .code(2)
        .stderr_has("--keep");
    sandbox
        .upkeep(&["schedule", "--install", "--uninstall"])
        .code(2);
    sandbox
        .upkeep(&["schedule", "--windows", "--install"])
        .code(2)
        .stderr_has("run the printed schtasks command on Windows");
    sandbox
        .upkeep(&["schedule", "--windows", "--env", "all"])
        .code(2)
        .stderr_has("backup_db.ps1");
    sandbox
        .upkeep(&["schedule", "--help"])
        .code(0)
        .stdout_has("Example")
        .stdout_has("--replicate");
}

#[test]
fn replicate_bad_flags_exit_2_and_name_the_flag() {
    let sandbox = Sandbox::new();
    // No `backups.offsite`: nowhere to ship to, refused now, not at boot.
    sandbox
        .upkeep(&["schedule", "--replicate", "--env", "production"])
        .code(2)
        .stderr_has("no `backups.offsite`");
    with_file_store(&sandbox);
    for (args, says) in [
        // One replicator per environment: the default `both` is refused.
        (&[][..], "--replicate needs --env NAME"),
        (&[], "`--env both` (the default) selects several"),
        (&[], "(known: `production`, `staging`)"),
        (
            &["--env", "all", "--install"],
            "`--env all` selects several",
        ),
        (&["--env", "prod"], "unknown environment `prod`"),
        // The backup's flags.
        (&["--env", "production", "--at", "03:00"], "'--at <HH:MM>'"),
        (&["--env", "production", "--keep", "5"], "'--keep <N>'"),
        (
            &["--env", "production", "--windows"],
            "--windows cannot schedule --replicate",
        ),
        (&["--env", "production", "--windows"], "or --systemd"),
    ] {
        let mut all = vec!["schedule", "--replicate"];
        all.extend(args);
        sandbox.upkeep(&all).code(2).stderr_has(says);
    }
    assert!(!sandbox.path("backups").exists(), "nothing was made");
}

#[test]
fn the_cron_line_runs_a_backup_the_way_cron_runs_it() {
    let sandbox = Sandbox::empty();
    // A folder name that needs quoting for sh and escaping for cron.
    let project = odd_project(&sandbox);
    let config = project.join("upkeep.yaml");
    let run = sandbox.upkeep(&[
        "--config",
        config.to_str().unwrap(),
        "schedule",
        "--keep",
        "5",
    ]);
    run.code(0).stdout_has("\\%");
    let command = cron_command(run.stdout.trim_end());
    std::fs::create_dir_all(project.join("backups")).unwrap();
    sandbox
        .capture(as_cron(&sandbox, &command), &["sh", "-c", &command])
        .code(0);
    let backups: Vec<String> = walk(&project.join("backups"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".duckdb"))
        .collect();
    assert!(
        backups.len() == 2
            && backups[0].starts_with("production_data_")
            && backups[1].starts_with("staging_data_"),
        "{backups:?}"
    );
    let log = String::from_utf8(bytes(&project.join("backups/backup.log"))).unwrap();
    assert!(
        log.contains("production backed up") && log.contains("staging backed up"),
        "{log}"
    );
}

/// What cron hands to `sh -c` for `line`: what follows its five time
/// fields or `@reboot`, with `\%` unescaped.
fn cron_command(line: &str) -> String {
    let command = match line.strip_prefix("@reboot ") {
        Some(command) => command,
        None => line.splitn(6, ' ').nth(5).unwrap(),
    };
    command.replace("\\%", "%")
}

/// `sh -c command` as cron starts it: from $HOME, with a minimal
/// environment.
fn as_cron(sandbox: &Sandbox, command: &str) -> Command {
    std::fs::create_dir_all(sandbox.path("home")).unwrap();
    let mut cron = Command::new("/bin/sh");
    cron.args(["-c", command])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", sandbox.path("home"))
        .env("SHELL", "/bin/sh")
        .current_dir(sandbox.path("home"))
        .stdin(Stdio::null());
    cron
}

/// A project in a folder whose name has a space, a quote and a `%`.
fn odd_project(sandbox: &Sandbox) -> std::path::PathBuf {
    let project = sandbox.path("it's 100% mine");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("upkeep.yaml"), CONFIG).unwrap();
    std::fs::write(project.join("schema.sql"), SCHEMA).unwrap();
    // make_db's SQL cannot name a path with a quote: made aside, then moved.
    std::fs::create_dir_all(project.join("data")).unwrap();
    for name in ["prod", "staging"] {
        let aside = sandbox.path(&format!("{name}.duckdb"));
        make_db(&aside, None, 100);
        std::fs::rename(&aside, project.join(format!("data/{name}.duckdb"))).unwrap();
    }
    project
}

#[test]
fn the_replicate_cron_line_starts_the_replicator_of_one_env_at_boot() {
    let sandbox = Sandbox::new();
    with_file_store(&sandbox);
    let root = root(&sandbox);
    let run = sandbox.upkeep(&["schedule", "--replicate", "--env", "staging"]);
    run.code(0);
    let expected = format!(
        "@reboot cd {root} && {UPKEEP} --config {root}/upkeep.yaml replicate staging >> {root}/backups/replicate-staging.log 2>&1 {}",
        replicate_marker(&sandbox, "staging")
    );
    assert_eq!(run.stdout.trim_end(), expected, "{run}");
    run.stderr_has("does not exist yet");
    // With --format json: the same object as the backup's entry.
    let json = sandbox
        .upkeep(&[
            "schedule",
            "--replicate",
            "--env",
            "staging",
            "--format",
            "json",
        ])
        .json();
    assert_eq!(json.len(), 1, "{json:?}");
    assert_eq!(json[0]["type"], "schedule");
    assert_eq!(json[0]["kind"], "cron");
    assert_eq!(json[0]["text"], expected.as_str());
}

#[test]
fn the_replicate_cron_line_runs_a_replicator_the_way_cron_runs_it() {
    let sandbox = Sandbox::empty();
    // Quoting and `%` escaping as in the backup's line.
    let project = odd_project(&sandbox);
    let store = with_file_store(&sandbox);
    let config = project.join("upkeep.yaml");
    std::fs::rename(sandbox.path("upkeep.yaml"), &config).unwrap();
    let db = project.join("data/prod.duckdb");
    let _app = sandbox.app(&["write", db.to_str().unwrap(), WAL_ROWS]);
    let run = sandbox.upkeep(&[
        "--config",
        config.to_str().unwrap(),
        "schedule",
        "--replicate",
        "--env",
        "production",
    ]);
    run.code(0).stdout_has("\\%");
    let line = run.stdout.trim_end();
    assert!(line.starts_with("@reboot "), "{run}");
    std::fs::create_dir_all(project.join("backups")).unwrap();
    // No credentials in cron's environment: a file:// store needs none.
    let sh = Started(as_cron(&sandbox, &cron_command(line)).spawn().unwrap());
    let log = project.join("backups/replicate-production.log");
    let started = Instant::now();
    while !walk(&store)
        .iter()
        .any(|path| path.to_string_lossy().contains("production/points/"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no point in the store after a minute; the log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGTERM to the replicator, as at shutdown: it ships what is pending
    // and exits 0, and so does the line's `sh`.
    let upkeep = upkeep_run_by(sh.0.id());
    // SAFETY: kill has no memory preconditions.
    assert_eq!(unsafe { libc::kill(upkeep as i32, libc::SIGTERM) }, 0);
    let status = sh.wait();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status:?}; the log:\n{log}");
    assert!(log.contains("production: new point"), "{log}");
}

/// A started `sh`, killed with its children if the test fails early.
struct Started(std::process::Child);

impl Started {
    fn wait(mut self) -> std::process::ExitStatus {
        self.0.wait().unwrap()
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let pid = self.0.id();
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
            for child in children.unwrap_or_default().split_whitespace() {
                if let Ok(child) = child.parse() {
                    // SAFETY: kill has no memory preconditions.
                    unsafe { libc::kill(child, libc::SIGKILL) };
                }
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The upkeep that `sh` (`pid`) runs: its child, or `sh` itself when it
/// replaced itself with it (some shells exec a list's last command).
fn upkeep_run_by(pid: u32) -> u32 {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    if exe.file_name().is_some_and(|name| name == "upkeep") {
        return pid;
    }
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let child: Vec<&str> = children.split_whitespace().collect();
    assert_eq!(child.len(), 1, "children of sh: {children:?}");
    child[0].parse().unwrap()
}

#[test]
fn install_is_idempotent_keeps_other_lines_and_uninstall_removes_only_ours() {
    let Some((sandbox, user)) = sandbox_with_user() else {
        return;
    };
    // The real crontab checks lines: a bad one is refused.
    assert!(!user.set_crontab(&sandbox, "61 2 * * * true\n"));
    let others = "MAILTO=\"\"\n# my own job\n*/5 * * * * /bin/true\n\
                  0 4 * * * /other/upkeep backup both # upkeep schedule: /other/upkeep.yaml\n";
    assert!(user.set_crontab(&sandbox, others));

    let printed = user.upkeep(&sandbox, &["schedule"]);
    printed.code(0);
    let line = printed.stdout.trim_end().to_string();
    user.upkeep(&sandbox, &["schedule", "--install"])
        .code(0)
        .stdout_has("installed");
    assert_eq!(user.crontab(), format!("{others}{line}\n"));
    assert!(sandbox.path("backups").is_dir(), "the log's folder is made");

    user.upkeep(&sandbox, &["schedule", "--install"])
        .code(0)
        .stdout_has("already");
    assert_eq!(user.crontab(), format!("{others}{line}\n"));

    // A changed entry replaces ours, in its place, and only ours.
    user.upkeep(
        &sandbox,
        &["schedule", "--install", "--at", "03:30", "--keep", "7"],
    )
    .code(0);
    let table = user.crontab();
    let ours: Vec<&str> = table
        .lines()
        .filter(|l| l.ends_with(&marker(&sandbox)))
        .collect();
    assert_eq!(ours.len(), 1, "{table}");
    assert!(ours[0].starts_with("30 3 * * * ") && ours[0].contains("--keep=7"));
    assert!(table.starts_with(others), "{table}");

    user.upkeep(&sandbox, &["schedule", "--uninstall"])
        .code(0)
        .stdout_has("removed");
    assert_eq!(user.crontab(), others);
    user.upkeep(&sandbox, &["schedule", "--uninstall"])
        .code(0)
        .stdout_has("nothing changed");
    assert_eq!(user.crontab(), others);
}

#[test]
fn install_into_an_empty_crontab_then_uninstall_leaves_it_empty() {
    let Some((sandbox, user)) = sandbox_with_user() else {
        return;
    };
    assert_eq!(user.crontab(), "");
    user.upkeep(&sandbox, &["schedule", "--install", "--env", "production"])
        .code(0);
    let table = user.crontab();
    assert_eq!(table.lines().count(), 1, "{table}");
    assert!(table.contains(" backup production --keep=30 "), "{table}");
    user.upkeep(&sandbox, &["schedule", "--uninstall"]).code(0);
    assert_eq!(user.crontab(), "");
}

#[test]
fn each_replicator_line_installs_and_uninstalls_on_its_own_beside_the_backup() {
    let Some((sandbox, user)) = sandbox_with_user() else {
        return;
    };
    with_file_store(&sandbox);
    let others = "MAILTO=\"\"\n*/5 * * * * /bin/true\n\
                  @reboot /other/upkeep replicate production # upkeep replicate production: /other/upkeep.yaml\n";
    assert!(user.set_crontab(&sandbox, others));
    let replicator = |env: &str, action: Option<&str>| {
        let mut args = vec!["schedule", "--replicate", "--env", env];
        args.extend(action);
        user.upkeep(&sandbox, &args)
    };
    let printed = |run: Run| {
        run.code(0);
        run.stdout.trim_end().to_string()
    };
    let backup = printed(user.upkeep(&sandbox, &["schedule"]));
    let production = printed(replicator("production", None));
    let staging = printed(replicator("staging", None));
    assert!(production.ends_with(&replicate_marker(&sandbox, "production")));
    let table = |lines: &[&str]| format!("{others}{}\n", lines.join("\n"));

    user.upkeep(&sandbox, &["schedule", "--install"]).code(0);
    // @reboot starts it at the next boot: how to start it now is printed,
    // nothing is started.
    replicator("production", Some("--install"))
        .code(0)
        .stdout_has("installed")
        .stdout_has("to start it now, run:\n  cd ")
        .stdout_has(" && nohup ")
        .stdout_has(" replicate production >> ");
    assert!(!sandbox.path(".upkeep/replicate-production.lock").exists());
    replicator("staging", Some("--install")).code(0);
    assert_eq!(user.crontab(), table(&[&backup, &production, &staging]));
    replicator("production", Some("--install"))
        .code(0)
        .stdout_has("already");
    assert_eq!(user.crontab(), table(&[&backup, &production, &staging]));

    // Each goes on its own; the other project's replicator stays.
    replicator("production", Some("--uninstall"))
        .code(0)
        .stdout_has("removed the replicator of `production`")
        .stderr_has("SIGTERM");
    assert_eq!(user.crontab(), table(&[&backup, &staging]));
    user.upkeep(&sandbox, &["schedule", "--uninstall"]).code(0);
    assert_eq!(user.crontab(), table(&[&staging]));
    replicator("production", Some("--uninstall"))
        .code(0)
        .stdout_has("nothing changed");
    replicator("staging", Some("--uninstall")).code(0);
    assert_eq!(user.crontab(), others);
}

#[test]
fn a_missing_crontab_command_is_a_clear_error() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path("empty")).unwrap();
    let path = sandbox.path("empty");
    sandbox
        .upkeep_with(
            &["schedule", "--install"],
            &[("PATH", path.to_str().unwrap())],
        )
        .code(1)
        .stderr_has("`crontab` not found: install cron");
}

#[test]
fn systemd_units_are_written_verified_and_removed() {
    let sandbox = Sandbox::new();
    let xdg = sandbox.path("xdg");
    let env = [("XDG_CONFIG_HOME", xdg.to_str().unwrap())];
    let units = xdg.join("systemd/user");
    let (service, timer) = (
        units.join("upkeep-backup.service"),
        units.join("upkeep-backup.timer"),
    );

    let printed = sandbox.upkeep_with(&["schedule", "--systemd", "--at", "04:15"], &env);
    printed
        .code(0)
        .stdout_has(&format!("# file: {}", service.display()))
        .stdout_has(&format!("# file: {}", timer.display()))
        .stdout_has("OnCalendar=*-*-* 04:15:00");
    assert!(!units.exists(), "printing writes nothing");

    sandbox
        .upkeep_with(
            &[
                "schedule",
                "--systemd",
                "--install",
                "--at",
                "04:15",
                "--env",
                "production",
            ],
            &env,
        )
        .code(0)
        .stdout_has(
            "systemctl --user daemon-reload && systemctl --user enable --now upkeep-backup.timer",
        );
    let root = sandbox.path("");
    let root = root.to_str().unwrap().trim_end_matches('/');
    let service_text = String::from_utf8(bytes(&service)).unwrap();
    for expected in [
        "Type=oneshot".to_string(),
        format!("WorkingDirectory={root}"),
        format!("ExecStart={UPKEEP} --config {root}/upkeep.yaml backup production --keep=30"),
        format!("StandardOutput=append:{root}/backups/backup.log"),
        format!("StandardError=append:{root}/backups/backup.log"),
    ] {
        assert!(
            service_text.lines().any(|l| l == expected),
            "{expected}\n{service_text}"
        );
    }
    let timer_text = String::from_utf8(bytes(&timer)).unwrap();
    for expected in [
        "OnCalendar=*-*-* 04:15:00",
        "Persistent=true",
        "WantedBy=timers.target",
    ] {
        assert!(
            timer_text.lines().any(|l| l == expected),
            "{expected}\n{timer_text}"
        );
    }
    assert!(sandbox.path("backups").is_dir(), "the log's folder is made");
    systemd_verify(&[&service, &timer]);

    // Paths that need quoting and escaping in a unit file.
    let odd = odd_project(&sandbox);
    let odd_xdg = sandbox.path("odd-xdg");
    let odd_config = odd.join("upkeep.yaml");
    sandbox
        .upkeep_with(
            &[
                "--config",
                odd_config.to_str().unwrap(),
                "schedule",
                "--systemd",
                "--install",
            ],
            &[("XDG_CONFIG_HOME", odd_xdg.to_str().unwrap())],
        )
        .code(0);
    let odd_units = odd_xdg.join("systemd/user");
    systemd_verify(&[
        &odd_units.join("upkeep-backup.service"),
        &odd_units.join("upkeep-backup.timer"),
    ]);
    let odd_service = String::from_utf8(bytes(&odd_units.join("upkeep-backup.service"))).unwrap();
    assert!(
        odd_service.contains(" --config \"") && odd_service.contains("100%% mine"),
        "{odd_service}"
    );

    // Uninstall removes both units and the link `systemctl enable` made.
    let wants = units.join("timers.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(&timer, wants.join("upkeep-backup.timer")).unwrap();
    sandbox
        .upkeep_with(&["schedule", "--systemd", "--uninstall"], &env)
        .code(0)
        .stdout_has("systemctl --user stop upkeep-backup.timer");
    assert!(!service.exists() && !timer.exists());
    assert!(std::fs::symlink_metadata(wants.join("upkeep-backup.timer")).is_err());

    // A unit of that name that upkeep did not write for this project stays.
    std::fs::write(&timer, "[Timer]\nOnCalendar=daily\n").unwrap();
    for action in ["--install", "--uninstall"] {
        sandbox
            .upkeep_with(&["schedule", "--systemd", action], &env)
            .code(2)
            .stderr_has("was not written by `upkeep schedule`");
        assert_eq!(bytes(&timer), b"[Timer]\nOnCalendar=daily\n");
    }
}

#[test]
fn systemd_replicate_units_are_written_verified_and_removed_beside_the_backup() {
    let sandbox = Sandbox::new();
    with_file_store(&sandbox);
    let xdg = sandbox.path("xdg");
    let env = [("XDG_CONFIG_HOME", xdg.to_str().unwrap())];
    let units = xdg.join("systemd/user");
    let service = units.join("upkeep-replicate-production.service");
    let enable = "systemctl --user daemon-reload && systemctl --user enable --now upkeep-replicate-production.service";
    let replicate = |action: Option<&str>| {
        let mut args = vec![
            "schedule",
            "--systemd",
            "--replicate",
            "--env",
            "production",
        ];
        args.extend(action);
        sandbox.upkeep_with(&args, &env)
    };

    replicate(None)
        .code(0)
        .stdout_has(&format!("# file: {}", service.display()))
        .stdout_has("Restart=always")
        .stdout_has(&format!("# then: {enable}"));
    assert!(!units.exists(), "printing writes nothing");

    sandbox
        .upkeep_with(&["schedule", "--systemd", "--install"], &env)
        .code(0);
    replicate(Some("--install"))
        .code(0)
        .stdout_has(&format!("now run: {enable}"))
        .stdout_has("journalctl --user -u upkeep-replicate-production.service");
    let root = root(&sandbox);
    let text = String::from_utf8(bytes(&service)).unwrap();
    for expected in [
        replicate_marker(&sandbox, "production"),
        format!("WorkingDirectory={root}"),
        format!("ExecStart={UPKEEP} --config {root}/upkeep.yaml replicate production"),
        "Restart=always".into(),
        "RestartSec=5".into(),
        "KillSignal=SIGTERM".into(),
        "TimeoutStopSec=30".into(),
        "WantedBy=default.target".into(),
    ] {
        assert!(text.lines().any(|l| l == expected), "{expected}\n{text}");
    }
    let backup = [
        units.join("upkeep-backup.service"),
        units.join("upkeep-backup.timer"),
    ];
    systemd_verify(&[&service, &backup[0], &backup[1]]);

    // Paths that need quoting and escaping in a unit file.
    let odd = odd_project(&sandbox);
    std::fs::copy(sandbox.path("upkeep.yaml"), odd.join("upkeep.yaml")).unwrap();
    let odd_xdg = sandbox.path("odd-xdg");
    sandbox
        .upkeep_with(
            &[
                "--config",
                odd.join("upkeep.yaml").to_str().unwrap(),
                "schedule",
                "--systemd",
                "--replicate",
                "--env",
                "staging",
                "--install",
            ],
            &[("XDG_CONFIG_HOME", odd_xdg.to_str().unwrap())],
        )
        .code(0);
    systemd_verify(&[&odd_xdg.join("systemd/user/upkeep-replicate-staging.service")]);

    // Uninstall removes the unit and the link `systemctl enable` made, and
    // leaves the backup's units.
    let wants = units.join("default.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    let link = wants.join("upkeep-replicate-production.service");
    std::os::unix::fs::symlink(&service, &link).unwrap();
    replicate(Some("--uninstall"))
        .code(0)
        .stdout_has("systemctl --user stop upkeep-replicate-production.service");
    assert!(!service.exists() && std::fs::symlink_metadata(&link).is_err());
    assert!(backup.iter().all(|unit| unit.exists()));

    // A unit of that name that upkeep did not write for this project stays.
    std::fs::write(&service, "[Service]\nExecStart=/bin/true\n").unwrap();
    for action in ["--install", "--uninstall"] {
        replicate(Some(action))
            .code(2)
            .stderr_has("was not written by `upkeep schedule`");
        assert_eq!(bytes(&service), b"[Service]\nExecStart=/bin/true\n");
    }
}

#[test]
fn windows_prints_the_schtasks_command_for_backup_db_ps1() {
    let sandbox = Sandbox::new();
    let script = sandbox.path("scripts/backup_db.ps1");
    sandbox
        .upkeep(&["schedule", "--windows", "--at", "01:30", "--keep", "50"])
        .code(0)
        .stdout_has("schtasks /Create /SC DAILY /ST 01:30 /TN \"upkeep backup\" /TR ")
        .stdout_has(&format!(
            "\"powershell -ExecutionPolicy Bypass -File \\\"{}\\\" both --keep=50\" /F",
            script.display()
        ))
        .stderr_has("Windows path");
}

/// `systemd-analyze verify` on unit files: it parses every setting, checks
/// the calendar spec and that ExecStart's binary exists. System mode works
/// in a container (user mode needs a user manager, which is absent here).
fn systemd_verify(units: &[&Path]) {
    let Ok(output) = Command::new("systemd-analyze")
        .arg("verify")
        .args(units)
        .output()
    else {
        eprintln!("skipped systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Warnings about unknown keys or bad values name the unit or its file.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("upkeep-")).collect();
    assert!(
        output.status.success() && ours.is_empty(),
        "systemd-analyze verify: {:?}\n{stderr}",
        output.status
    );
}

/// A sandbox owned by a new throwaway user, with a copy of upkeep it may
/// run; `None` (the test is skipped, with the reason printed) unless root.
fn sandbox_with_user() -> Option<(Sandbox, User)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "skipped: installing needs root, to create a throwaway user whose crontab it may change"
        );
        return None;
    }
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path("bin")).unwrap();
    std::fs::create_dir_all(sandbox.path("home")).unwrap();
    // upkeep's own binary may be in root's home, out of the user's reach.
    std::fs::copy(UPKEEP, sandbox.path("bin/upkeep")).unwrap();
    let user = User::new(&sandbox.path("home"));
    let chown = Command::new("chown")
        .args(["-R", &user.name])
        .arg(sandbox.dir.path())
        .status()
        .unwrap();
    assert!(chown.success());
    Some((sandbox, user))
}

/// A system user made for one test; it and its crontab go when dropped.
struct User {
    name: String,
}

/// useradd and userdel lock /etc/passwd, and give up if it is taken.
static ACCOUNTS: Mutex<()> = Mutex::new(());

impl User {
    fn new(home: &Path) -> User {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "upkeep-t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let _accounts = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let output = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/bin/sh",
                "--home-dir",
            ])
            .arg(home)
            .arg(&name)
            .output()
            .expect("useradd (package passwd)");
        assert!(
            output.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        User { name }
    }

    /// Runs the sandbox's copy of upkeep as this user, in the sandbox.
    fn upkeep(&self, sandbox: &Sandbox, args: &[&str]) -> Run {
        let mut command = Command::new("runuser");
        command
            .args(["-u", &self.name, "--"])
            .arg(sandbox.path("bin/upkeep"))
            .args(args)
            .current_dir(sandbox.dir.path())
            .env_remove("UPKEEP_CONFIG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        let label: Vec<&str> = ["runuser", "-u", &self.name, "--", "upkeep"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        sandbox.capture(command, &label)
    }

    /// This user's crontab, as `crontab -l` shows it ("" when none).
    fn crontab(&self) -> String {
        let output = Command::new("crontab")
            .args(["-u", &self.name, "-l"])
            .output()
            .expect("crontab (package cron)");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() || stderr.contains("no crontab"),
            "{stderr}"
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Installs `table` with the real `crontab`; false if it refuses it.
    fn set_crontab(&self, sandbox: &Sandbox, table: &str) -> bool {
        let file = sandbox.path("table.cron");
        std::fs::write(&file, table).unwrap();
        Command::new("crontab")
            .args(["-u", &self.name])
            .arg(&file)
            .output()
            .expect("crontab (package cron)")
            .status
            .success()
    }
}

impl Drop for User {
    fn drop(&mut self) {
        // userdel leaves the crontab file behind: remove it first.
        let _ = Command::new("crontab")
            .args(["-u", &self.name, "-r"])
            .stderr(Stdio::null())
            .status();
        let _accounts = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}
