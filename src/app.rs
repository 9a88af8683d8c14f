//! The app's lifecycle, said once in `upkeep.yaml` (`app:`): stop it,
//! start it and wait until it is healthy, have it write a snapshot of its
//! database. Used alike by the commands (a backup of a running app), the
//! step types `stop-app` and `start-app`, and restore and repair.
//!
//! The commands run through `/bin/sh -c` in the config's folder, each in
//! its own process group, with `UPKEEP_ENV` and `UPKEEP_DB` (and
//! `UPKEEP_SNAPSHOT` for the snapshot) in their environment: values are
//! never pasted into command text. Their output goes to
//! `state_dir/logs/app-ENV.log`, so a start script that leaves the app
//! running in the background never holds upkeep's output open. Each is
//! held to `app.hook_timeout`, and the health probe to `health.timeout`:
//! past it, the command's whole process group is stopped. Commands are
//! shown without the credentials a URL in them may hold.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::action::{Outcome, Undo};
use crate::config::{AppSpec, Config, HealthSpec, Way};
use crate::db::Env;
use crate::db::backup::{self, Made, Taking};
use crate::db::catalog::Schema;
use crate::db::check;
use crate::db::live;
use crate::db::open::{self, Access};
use crate::db::retention::Rotation;
use crate::error::Busy;
use crate::journal::{Entry, Journal, Undoing};
use crate::probe::Probe;
use crate::process;
use crate::progress::Progress;

/// How long the app may take to let go of its database after `stop`.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest pause between two health probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// The app of one environment.
pub struct App<'a> {
    spec: &'a AppSpec,
    env: &'a Env,
    root: &'a Path,
    log: PathBuf,
}

impl<'a> App<'a> {
    /// The app serving `env`, when `app:` configures one.
    pub fn of(config: &'a Config, env: &'a Env) -> Option<App<'a>> {
        let spec = config.apps.get(&env.name)?;
        Some(App {
            spec,
            env,
            root: &config.root,
            log: config
                .state_dir
                .join("logs")
                .join(format!("app-{}.log", env.name)),
        })
    }

    pub fn has_snapshot(&self) -> bool {
        self.spec.snapshot.is_some()
    }

    /// Why one of the app's commands cannot run now, when a look can
    /// tell (its program is missing): asked before the app is stopped, as
    /// what starts it again must not fail on what could be seen first.
    pub fn cannot_run(&self) -> Option<String> {
        let health = self
            .spec
            .health
            .as_ref()
            .and_then(|health| health.cmd.as_ref());
        [
            ("stop", Some(&self.spec.stop)),
            ("start", Some(&self.spec.start)),
            ("health", health),
        ]
        .into_iter()
        .find_map(|(what, command)| {
            let why = process::program_exists(command?, self.root).err()?;
            Some(format!(
                "the app's {what} command for `{}` cannot run: {why}; fix it under `app:` in upkeep.yaml",
                self.env.name
            ))
        })
    }

    /// Runs `stop`, then waits until no process holds the database.
    pub fn stop(&self) -> Result<()> {
        self.command("stop", &self.spec.stop, &[])?;
        let started = Instant::now();
        while let Some(pid) = open::lock_holder(&self.env.db, Access::Exclusive) {
            if started.elapsed() > RELEASE_TIMEOUT {
                bail!(
                    "the app of `{}` was stopped (`{}`), but PID {pid}{} still holds `{}` after {}s: \
                     fix the stop command so that it waits until the app has exited",
                    self.env.name,
                    crate::redact::urls(&self.spec.stop),
                    crate::process::describe(pid),
                    self.env.db.display(),
                    RELEASE_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Runs `start`, then waits until the app is healthy (when `health:`
    /// says how to tell).
    pub fn start(&self) -> Result<()> {
        self.command("start", &self.spec.start, &[])?;
        self.wait_healthy()
    }

    /// Waits until the health probe passes, up to its timeout.
    pub fn wait_healthy(&self) -> Result<()> {
        let Some(health) = &self.spec.health else {
            return Ok(());
        };
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            // Each look gets what is left of the wait, so a command that
            // hangs cannot stretch it.
            let left = health.timeout.saturating_sub(started.elapsed());
            let last = match self.probe(health, left) {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if started.elapsed() + pause > health.timeout {
                bail!(
                    "the app of `{}` is not healthy after {}: {} (last: {last}); its output is in {}",
                    self.env.name,
                    humantime::format_duration(health.timeout),
                    describe(health),
                    self.log.display()
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(PROBE_INTERVAL);
        }
    }

    /// Whether the app runs now: it holds its database, and answers its
    /// health probe (when it has one).
    pub fn running(&self) -> bool {
        open::lock_holder(&self.env.db, Access::Exclusive).is_some()
            && self.healthy_now().is_none_or(|health| health.is_ok())
    }

    /// Whether the app answers its health probe now (one look, within
    /// the probe's timeout).
    pub fn healthy_now(&self) -> Option<Result<(), String>> {
        self.spec
            .health
            .as_ref()
            .map(|health| self.probe(health, health.timeout))
    }

    /// Has the app write a consistent copy of its database to `target`.
    pub fn snapshot(&self, target: &Path) -> Result<()> {
        let Some(command) = &self.spec.snapshot else {
            bail!("`app:` has no `snapshot` command for `{}`", self.env.name);
        };
        self.command(
            "snapshot",
            command,
            &[("UPKEEP_SNAPSHOT", target.as_os_str())],
        )
    }

    fn probe(&self, health: &HealthSpec, limit: Duration) -> Result<(), String> {
        probe_of(health)?.check(
            self.root,
            [
                ("UPKEEP_ENV", self.env.name.as_ref()),
                ("UPKEEP_DB", self.env.db.as_os_str()),
            ],
            limit,
        )
    }

    fn shell(&self, command: &str, extra: &[(&str, &std::ffi::OsStr)]) -> Command {
        let mut shell = Command::new("/bin/sh");
        shell
            .arg("-c")
            .arg(command)
            .current_dir(self.root)
            .env("UPKEEP_ENV", &self.env.name)
            .env("UPKEEP_DB", &self.env.db)
            .stdin(Stdio::null());
        for (key, value) in extra {
            shell.env(key, value);
        }
        shell
    }

    /// Runs one of the app's commands to its end, its output in the log.
    fn command(&self, what: &str, command: &str, extra: &[(&str, &std::ffi::OsStr)]) -> Result<()> {
        // Shown in messages without the credentials a URL in it may hold.
        let shown = crate::redact::urls(command);
        if let Some(folder) = self.log.parent() {
            crate::fsx::create_private_dir(folder)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.log)
            .with_context(|| format!("cannot open `{}`", self.log.display()))?;
        let logged_before = log.metadata().map_or(0, |meta| meta.len());
        let mut shell = self.shell(command, extra);
        shell.stdout(log.try_clone()?).stderr(log);
        let limit = self.spec.hook_timeout;
        let ended = process::run(shell, limit, process::GRACE)
            .with_context(|| format!("cannot run the app's {what} command `{shown}`"))?;
        let output =
            || tail(&self.log, logged_before).map_or_else(String::new, |tail| format!(": {tail}"));
        match ended {
            process::Ended::Exited(status) if status.success() => Ok(()),
            process::Ended::Exited(status) => bail!(
                "the app's {what} command `{shown}` for `{}` failed ({status}){}; its output is in {}",
                self.env.name,
                output(),
                self.log.display()
            ),
            process::Ended::Overran => bail!(
                "the app's {what} command `{shown}` for `{}` did not end within {} (`hook_timeout` \
                 under `app:`), so its process group was stopped{}; make the command return sooner, \
                 or raise `hook_timeout` in upkeep.yaml; its output is in {}",
                self.env.name,
                humantime::format_duration(limit),
                output(),
                self.log.display()
            ),
        }
    }
}

/// The last lines a command wrote to `log` after byte `from`, on one line.
fn tail(log: &Path, from: u64) -> Option<String> {
    use std::io::{Read, Seek};
    let mut file = std::fs::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(std::io::SeekFrom::Start(from.max(len.saturating_sub(2000))))
        .ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    (!tail.is_empty()).then(|| crate::redact::urls(&tail))
}

/// The probe `health:` describes (config loading checked it: this
/// cannot fail on a loaded config).
fn probe_of(health: &HealthSpec) -> Result<Probe, String> {
    Probe::of(
        health.url.as_deref(),
        health.tcp.as_deref(),
        health.cmd.as_deref(),
    )
}

/// What a health probe waits for, in words.
pub fn describe(health: &HealthSpec) -> String {
    probe_of(health).map_or_else(
        |error| crate::redact::urls(&error),
        |probe| probe.describe(),
    )
}

/// A window backup's stop and start, journaled: a kill -9 between them
/// leaves a run whose undo starts the app again (`upkeep recover`), as
/// `stop-app`'s does; an app that does not come back leaves it open too.
struct Journaled<'a> {
    app: &'a App<'a>,
    state_dir: &'a Path,
    config_path: &'a Path,
    journal: std::cell::RefCell<Option<Journal>>,
}

impl crate::db::backup::Window for Journaled<'_> {
    fn stop(&self) -> Result<()> {
        let run_id = format!(
            "{}-window-{}",
            crate::journal::new_run_id(),
            self.app.env.name
        );
        let mut journal = Journal::create(self.state_dir, &run_id)?;
        journal.write(&Entry::RunStarted {
            run_id,
            pipeline: format!("backup {} (window)", self.app.env.name),
            path: self.config_path.to_path_buf(),
            env: self.app.env.name.clone(),
            vars: Default::default(),
            started_at: jiff::Timestamp::now().to_string(),
        })?;
        journal.write(&Entry::StepStarted {
            step: 0,
            name: "stop the app for the backup window".to_string(),
            undo: Some(Undoing::Builtin {
                uses: "stop-app".to_string(),
                undo: Undo(serde_json::json!({ "start": true, "env": self.app.env.name })),
            }),
        })?;
        *self.journal.borrow_mut() = Some(journal);
        self.app.stop()
    }

    fn start(&self) -> Result<()> {
        self.app.start()?;
        if let Some(mut journal) = self.journal.borrow_mut().take() {
            journal.write_step_done(&Entry::StepDone {
                step: 0,
                outcome: Outcome::Ok,
                undo: None,
            })?;
            journal.write(&Entry::RunFinished { exit_code: 0 })?;
        }
        Ok(())
    }

    fn released(&self) -> bool {
        open::lock_holder(&self.app.env.db, Access::Exclusive).is_none()
    }
}

/// Backs up `env` whether or not its app is running: directly when nobody
/// holds the database; else by the ways of `backups.ways`, in order (by
/// default a live copy, the app's snapshot hook, then a window: the app
/// stopped for the copy only, unless `no_window`); else busy, saying why
/// each way was passed over. Only a refused live copy moves on to the next
/// way: a hook or a window that fails is the error.
pub fn backup(
    config: &Config,
    env: &Env,
    rotation: &Rotation,
    schema: Option<&Schema>,
    progress: &Progress,
    no_window: bool,
) -> Result<Made> {
    let dir = &config.backups_dir;
    let take = |taking: &Taking| backup::backup(env, dir, rotation, schema, progress, taking);
    let Some(pid) = open::lock_holder(&env.db, Access::Exclusive) else {
        return take(&Taking::Direct);
    };
    let app = App::of(config, env);
    let mut passed = Vec::new();
    let mut not_live = None;
    for way in &config.ways {
        let made = match way {
            Way::Live => {
                let why = match live_refused(config, env) {
                    Some(why) => why,
                    None => match take(&Taking::Live) {
                        Err(error) if falls_back(&error) => crate::error::describe(&error),
                        made => return made,
                    },
                };
                passed.push(format!("no live copy ({why})"));
                not_live = Some(why);
                continue;
            }
            Way::Hook => match &app {
                Some(app) if app.has_snapshot() => {
                    let write = |target: &Path| app.snapshot(target);
                    take(&Taking::Snapshot(&write))
                }
                _ => {
                    passed.push("no snapshot hook (`app:` has no `snapshot` command)".to_string());
                    continue;
                }
            },
            Way::Window => match &app {
                Some(_) if no_window => {
                    passed.push("--no-window forbids stopping the app".to_string());
                    continue;
                }
                Some(app) => {
                    if let Some(why) = app.cannot_run() {
                        bail!("{why}; the app was not stopped, and nothing was backed up");
                    }
                    let window = Journaled {
                        app,
                        state_dir: &config.state_dir,
                        config_path: &config.path,
                        journal: Default::default(),
                    };
                    take(&Taking::Window(&window))
                }
                None => {
                    passed.push(
                        "no window (no `app:` says how to stop and start the app)".to_string(),
                    );
                    continue;
                }
            },
        };
        return made.map(|made| Made { not_live, ..made });
    }
    let also = if no_window {
        ", or leave out --no-window"
    } else {
        ""
    };
    Err(held(
        env,
        pid,
        &format!(
            "{} (the ways of `backups.ways`: {}); {HINT}{also}",
            passed.join(", "),
            ways(config)
        ),
    ))
}

/// `backups.ways`, as written.
fn ways(config: &Config) -> String {
    let names: Vec<&str> = config.ways.iter().map(|way| way.as_str()).collect();
    names.join(", ")
}

/// Why `env`'s database is not to be copied live (`backups.live`, and the
/// formats upkeep reads), when it is not.
pub(crate) fn live_refused(config: &Config, env: &Env) -> Option<String> {
    match crate::db::header::read(&env.db) {
        Ok(Ok(header)) => config.live.refuses(&header),
        Ok(Err(problem)) => Some(format!("its header is damaged: {problem}")),
        Err(error) => Some(format!("cannot read it: {error}")),
    }
}

/// Whether a live copy that failed leaves the other ways open: it was
/// refused (a format, or no consistent copy within the bound), not an
/// error that another way would meet too (a full disk).
fn falls_back(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<live::Refused>()
        .is_some_and(|refused| !matches!(refused, live::Refused::Io { .. }))
}

/// Which way a backup of `env` (of `size` bytes) would go now, and why,
/// for a dry-run: the ways of `backups.ways` in order. A backup refused now
/// may go through in a real run, once a step before it has stopped the app.
pub fn backup_way(config: &Config, env: &Env, size: u64) -> String {
    let Some(pid) = open::lock_holder(&env.db, Access::Exclusive) else {
        return "directly: nothing holds the database now".to_string();
    };
    let app = App::of(config, env);
    let mut said = vec![format!(
        "PID {pid}{} holds the database",
        crate::process::describe(pid)
    )];
    for way in &config.ways {
        match way {
            Way::Live => match live_refused(config, env) {
                None => said.push(
                    "live: copied while the app runs, no downtime and no hook; should no consistent \
                     copy be had within its bound"
                        .to_string(),
                ),
                Some(why) => said.push(format!("not live ({why})")),
            },
            Way::Hook => match &app {
                Some(app) if app.has_snapshot() => {
                    said.push("through the app's snapshot hook, no downtime".to_string());
                    return said.join("; ");
                }
                _ => said.push("no snapshot hook".to_string()),
            },
            Way::Window => match &app {
                Some(app) => {
                    let now = match app.healthy_now() {
                        Some(Err(why)) => format!(
                            "; the app is not healthy now ({why}): the window would wait for it to come back"
                        ),
                        _ => String::new(),
                    };
                    said.push(format!(
                        "in a window: the app stopped for the checkpoint and the copy, {}, then started and waited for{now}",
                        window_estimate(config, size)
                    ));
                    return said.join("; ");
                }
                None => said.push("no window (no `app:`)".to_string()),
            },
        }
    }
    said.push(format!(
        "refused now (the ways of `backups.ways`: {}), unless a step before it stops the app",
        ways(config)
    ));
    said.join("; ")
}

/// How long the copy of a window backup should take: a clone where the
/// backups' file system shares blocks, else a copy at disk speed.
fn window_estimate(config: &Config, size: u64) -> String {
    const XFS: i64 = 0x5846_5342;
    const BTRFS: i64 = 0x9123_683e;
    let folder = config
        .backups_dir
        .ancestors()
        .find(|path| path.exists())
        .unwrap_or(&config.root);
    let kind = std::ffi::CString::new(folder.as_os_str().as_encoded_bytes())
        .ok()
        .and_then(|path| {
            // SAFETY: a valid C string and a zeroed out-parameter.
            let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
            (unsafe { libc::statfs(path.as_ptr(), &mut stat) } == 0).then_some(stat.f_type as i64)
        });
    match kind {
        Some(XFS | BTRFS) => {
            "a clone (well under a second, whatever the size) where reflink is on".to_string()
        }
        // A conservative 200 MB/s, with its sync.
        _ => format!(
            "about {:.1}s to copy {} at disk speed",
            size as f64 / 200e6,
            crate::fsx::human_size(size)
        ),
    }
}

/// Checks `env`'s database; when the app holds it, checks a live copy or a
/// fresh snapshot from its hook, in the order of `backups.ways` (no
/// downtime). Check never stops the app: with neither, a held database is
/// busy, with how to get a verdict.
pub fn check(
    config: &Config,
    env: &Env,
    schema: Option<&Schema>,
    deep: bool,
) -> Result<check::Report> {
    let Some(pid) = open::lock_holder(&env.db, Access::ReadOnly) else {
        return check::check(&env.db, schema, deep);
    };
    let mut passed = Vec::new();
    for way in &config.ways {
        match way {
            Way::Live => {
                let why = match live_refused(config, env) {
                    Some(why) => why,
                    None => match check_live(config, env, schema, deep) {
                        Err(error) if falls_back(&error) => crate::error::describe(&error),
                        report => return report,
                    },
                };
                passed.push(format!("no live copy ({why})"));
            }
            Way::Hook => match App::of(config, env).filter(App::has_snapshot) {
                Some(app) => return check_snapshot(config, env, &app, schema, deep),
                None => passed.push("no snapshot hook".to_string()),
            },
            Way::Window => {}
        }
    }
    Err(held(
        env,
        pid,
        &format!(
            "{} (the ways of `backups.ways`: {}), and check never stops the app: add a `snapshot` hook to `app:` \
             in upkeep.yaml for a verdict without downtime, or check while the app is stopped \
             (`upkeep run update` does)",
            passed.join(", "),
            ways(config)
        ),
    ))
}

/// Checks a snapshot of `env`'s database written by the app's hook.
fn check_snapshot(
    config: &Config,
    env: &Env,
    app: &App,
    schema: Option<&Schema>,
    deep: bool,
) -> Result<check::Report> {
    // A folder of its own, which a concurrent backup's sweep leaves alone:
    // check takes no run lock.
    let (_folder, path) = backup::snapshot_target(&config.backups_dir)?;
    app.snapshot(&path)
        .with_context(|| format!("cannot check `{}`: the snapshot hook failed", env.name))?;
    // A snapshot that is not there says nothing of the database: never a
    // "missing file" that sends the user to repair it.
    if !path.is_file() {
        bail!(
            "cannot check `{}`: the snapshot hook exited 0 but wrote nothing to $UPKEEP_SNAPSHOT \
             (`{}`); fix the hook so that it writes its copy there",
            env.name,
            path.display()
        );
    }
    let mut report = check::check(&path, schema, deep)?;
    report.path = env.db.clone();
    report.from_snapshot = true;
    Ok(report)
}

/// Checks a live copy of `env`'s database, taken into a folder of its own
/// in the backups folder (which a concurrent backup's sweep leaves alone)
/// and removed after.
fn check_live(
    config: &Config,
    env: &Env,
    schema: Option<&Schema>,
    deep: bool,
) -> Result<check::Report> {
    crate::fsx::create_private_dir(&config.backups_dir)?;
    let folder = crate::fsx::partial_dir(&config.backups_dir)?;
    let copied = live::copy_whole(&env.db, folder.path())?;
    let mut report = check::check(&copied.db, schema, deep)?;
    report.path = env.db.clone();
    report.copied_live = true;
    Ok(report)
}

/// Tells `app.notify` (when configured) that the app of `env` did not come
/// back after a window backup (`reason` says so, and what became of the
/// backup): the same JSON as a pipeline's webhook.
pub fn notify_down(config: &Config, env: &Env, reason: &str) -> Result<(), String> {
    let Some(url) = &config.app_notify else {
        return Ok(());
    };
    crate::webhook::post(
        url,
        &serde_json::json!({
            "pipeline": "backup",
            "env": env.name,
            "outcome": "failed",
            "exit_code": crate::error::code::ROLLBACK_INCOMPLETE,
            "failed_step": "start the app after the backup window",
            "reason": crate::redact::urls(reason),
            "host": crate::webhook::host(),
        }),
    )
    .map_err(|why| crate::redact::urls(&why))
}

/// How to let upkeep work on a running app.
pub const HINT: &str = "configure `app:` in upkeep.yaml (`stop`, `start`, `health`, and `snapshot` for \
     no downtime; see docs/configuration.md) so that upkeep can work on a running app, or stop it first";

/// A [`Busy`] error: the database is held by `pid`, and what to do.
pub fn held(env: &Env, pid: u32, what_to_do: &str) -> anyhow::Error {
    anyhow::Error::new(Busy(format!(
        "database `{}` of `{}` is open in another process: PID {pid}{}; {what_to_do}",
        env.db.display(),
        env.name,
        crate::process::describe(pid)
    )))
}
