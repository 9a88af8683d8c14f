//! `upkeep schedule`: the daily backup as a cron line, a pair of systemd
//! user units or a Windows scheduled task, printed or installed; with
//! `--replicate`, the replicator of one environment (`upkeep replicate
//! ENV`, which runs until stopped): a cron `@reboot` line, or a systemd
//! user service that systemd restarts whenever it stops.
//!
//! Every entry names absolute paths (the running binary, `upkeep.yaml`, the
//! log), because cron and systemd start jobs in `$HOME` with a minimal PATH.
//!
//! The cron entry is one line that ends with its own marker, a shell
//! comment (so cron's `sh` ignores it): `# upkeep schedule: /abs/upkeep.yaml`
//! for the backup, `# upkeep replicate ENV: /abs/upkeep.yaml` for the
//! replicator of ENV. One line, so an edit by hand can never leave half an
//! entry behind; keyed by the config path (and the environment), so several
//! projects can each have theirs, and a project its backup and one
//! replicator per environment, each installed and removed on its own.
//! `--install` replaces the line that carries the entry's marker (or appends
//! one), `--uninstall` removes it; other lines are never touched. The
//! systemd units carry the same marker in a comment, and upkeep only
//! rewrites or removes units that carry it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::config::{Config, parse_keep};
use crate::db::retention::Rotation;
use crate::error::bad_input;
use crate::fsx;
use crate::report::Printer;

const SERVICE: &str = "upkeep-backup.service";
const TIMER: &str = "upkeep-backup.timer";

/// A time of day, as `--at HH:MM` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub hour: u8,
    pub minute: u8,
}

/// Reads `HH:MM` (24-hour clock): the value parser of `--at`.
pub fn parse_at(text: &str) -> Result<At, String> {
    let number = |s: &str, len: std::ops::RangeInclusive<usize>, below: u8| {
        (len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u8>().ok())
            .flatten()
            .filter(|n| *n < below)
    };
    text.split_once(':')
        .and_then(|(hour, minute)| {
            Some(At {
                hour: number(hour, 1..=2, 24)?,
                minute: number(minute, 2..=2, 60)?,
            })
        })
        .ok_or_else(|| {
            "expected a time of day as HH:MM on a 24-hour clock, e.g. 02:00 or 23:30".into()
        })
}

/// Which scheduler the entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    Cron,
    /// A systemd user service and timer.
    Systemd,
    /// Task Scheduler (schtasks), running `scripts\backup_db.ps1`: printed only.
    Windows,
}

/// What to do with the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Print,
    Install,
    /// Remove this project's entry, and nothing else.
    Uninstall,
}

/// What the entry runs.
#[derive(Debug, Clone, Copy)]
pub enum Entry {
    /// `upkeep backup ENV`, daily at `at`.
    Backup {
        at: At,
        /// How many backups to keep (default: the config's).
        keep: Option<i64>,
    },
    /// `upkeep replicate ENV` (one environment), from boot on.
    Replicate,
}

/// What `upkeep schedule` is asked for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub entry: Entry,
    /// An environment of upkeep.yaml; `both` or `all` for a backup.
    pub env: &'a str,
    pub scheduler: Scheduler,
    pub action: Action,
}

/// The scheduled command, `upkeep --config CONFIG ...`, run in `root`, its
/// output appended to `log`.
struct Job {
    upkeep: String,
    config: String,
    root: String,
    log: String,
    env: String,
    task: Task,
}

/// What a job runs.
#[derive(Clone, Copy)]
enum Task {
    /// `backup ENV --keep=N` daily at `at`: `--keep=N` when asked for, or
    /// when upkeep.yaml rotates by count; none with `backups.retention`,
    /// which the backup then applies.
    Backup { keep: Option<u32>, at: At },
    /// `replicate ENV`: started at boot, runs until stopped.
    Replicate,
}

/// Prints, installs or removes the entry that `request` asks for; see the
/// module docs.
pub fn run(request: &Request, config: &Config, printer: &Printer) -> Result<()> {
    let task = match request.entry {
        Entry::Backup { at, keep } => {
            let keep = backup_keep(request, config, keep)?;
            if request.scheduler == Scheduler::Windows {
                printer.entry("windows", &schtasks(&config.root, request.env, at, keep));
                printer.hint("run this on Windows, with the project folder's Windows path in place of the one above (the script finds upkeep.yaml beside its own folder)");
                return Ok(());
            }
            Task::Backup { keep, at }
        }
        Entry::Replicate => {
            check_replicator(request, config)?;
            Task::Replicate
        }
    };
    let log = match task {
        Task::Backup { .. } => "backup.log".to_string(),
        Task::Replicate => format!("replicate-{}.log", request.env),
    };
    let exe = std::env::current_exe().context("cannot find the path of the upkeep binary")?;
    let job = Job {
        upkeep: utf8(&exe)?,
        // Canonical, so that the marker is the same whichever way the
        // config was named (`..`, a symlink): one entry per project.
        config: utf8(&std::fs::canonicalize(&config.path).unwrap_or_else(|_| config.path.clone()))?,
        root: utf8(&config.root)?,
        log: utf8(&config.backups_dir.join(log))?,
        env: request.env.to_string(),
        task,
    };
    match (request.scheduler, request.action) {
        (Scheduler::Systemd, Action::Print) => {
            let dir = units_dir().unwrap_or_else(|_| PathBuf::from("~/.config/systemd/user"));
            let mut text = String::new();
            for (name, unit) in job.units() {
                text.push_str(&format!("# file: {}\n{unit}\n", dir.join(name).display()));
            }
            text.push_str(&format!("# then: {}", job.enable()));
            printer.entry("systemd", &text);
        }
        (Scheduler::Systemd, action) => systemd_install(&job, action == Action::Install, printer)?,
        // Cron (the Windows entry was printed above).
        (_, Action::Print) => {
            printer.entry("cron", &job.cron_line());
            if !config.backups_dir.is_dir() {
                printer.hint(&format!(
                    "the log's folder `{}` does not exist yet: `upkeep schedule --install` creates it",
                    config.backups_dir.display()
                ));
            }
        }
        (_, action) => cron_install(&job, action == Action::Install, printer)?,
    }
    if request.action == Action::Install {
        // The entry appends to a log in the backups folder: the shell (or
        // systemd) cannot open it in a folder that does not exist.
        fsx::create_private_dir(&config.backups_dir)?;
    }
    Ok(())
}

/// Checks the backup's environments and flags; the `--keep=N` it runs with.
fn backup_keep(request: &Request, config: &Config, keep: Option<i64>) -> Result<Option<u32>> {
    config.select(request.env)?;
    let keep = match keep {
        Some(keep) => Some(parse_keep(keep).map_err(|e| bad_input(format!("--keep {e}")))?),
        None => match config.rotation {
            Rotation::Newest(keep) => Some(keep),
            Rotation::Calendar(_) => None,
        },
    };
    let windows = request.scheduler == Scheduler::Windows;
    if windows && request.action != Action::Print {
        return Err(bad_input(
            "--windows cannot install from here: run the printed schtasks command on Windows",
        ));
    }
    if windows && !["production", "staging", "both"].contains(&request.env) {
        return Err(bad_input(format!(
            "--windows runs scripts\\backup_db.ps1, which takes production, staging or both, not `{}`",
            request.env
        )));
    }
    Ok(keep)
}

/// Checks that a replicator can run for `request.env`: one environment of
/// upkeep.yaml, with somewhere to ship to (refused now rather than at every
/// boot; removing an entry needs neither).
fn check_replicator(request: &Request, config: &Config) -> Result<()> {
    if request.scheduler == Scheduler::Windows {
        return Err(bad_input(
            "--windows cannot schedule --replicate: the Windows entry runs scripts\\backup_db.ps1 (daily backups); \
             run the replicator on the machine of the app, under cron (the default) or --systemd",
        ));
    }
    if ["both", "all"].contains(&request.env) {
        let known: Vec<String> = config
            .databases
            .keys()
            .map(|env| format!("`{env}`"))
            .collect();
        return Err(bad_input(format!(
            "--replicate needs --env NAME, one environment of {}: one replicator runs per environment, \
             and `--env {}`{} selects several (known: {})",
            config.path.display(),
            request.env,
            if request.env == "both" {
                " (the default)"
            } else {
                ""
            },
            known.join(", ")
        )));
    }
    config.env(request.env)?;
    if request.action != Action::Uninstall {
        config.offsite()?;
    }
    Ok(())
}

impl Job {
    fn args(&self) -> Vec<String> {
        let mut args = vec![self.upkeep.clone(), "--config".into(), self.config.clone()];
        match self.task {
            Task::Backup { keep, .. } => {
                args.extend(["backup".into(), self.env.clone()]);
                args.extend(keep.map(|keep| format!("--keep={keep}")));
            }
            Task::Replicate => args.extend(["replicate".into(), self.env.clone()]),
        }
        args
    }

    /// The marker comment that identifies this entry: the project's
    /// backup, or its replicator of one environment.
    fn marker(&self) -> String {
        match self.task {
            Task::Backup { .. } => format!("# upkeep schedule: {}", self.config),
            Task::Replicate => format!("# upkeep replicate {}: {}", self.env, self.config),
        }
    }

    /// The entry, for messages.
    fn what(&self) -> String {
        match self.task {
            Task::Backup { .. } => "the daily backup".into(),
            Task::Replicate => format!("the replicator of `{}`", self.env),
        }
    }

    /// The marker as it appears in the crontab (escaped like the line).
    fn cron_line_marker(&self) -> String {
        self.marker().replace('%', "\\%")
    }

    /// The command as `sh` reads it: in the project's folder, its output
    /// appended to the log; `nohup` for one started from a terminal.
    fn shell_command(&self, nohup: bool) -> String {
        let command: Vec<String> = self.args().iter().map(|arg| sh_quote(arg)).collect();
        format!(
            "cd {} && {}{} >> {} 2>&1",
            sh_quote(&self.root),
            if nohup { "nohup " } else { "" },
            command.join(" "),
            sh_quote(&self.log),
        )
    }

    /// The crontab line. Cron turns an unescaped `%` into a newline, so each
    /// one is escaped, marker included.
    fn cron_line(&self) -> String {
        let when = match self.task {
            Task::Backup { at, .. } => format!("{} {} * * *", at.minute, at.hour),
            // A replicator runs until stopped: started once, at boot.
            Task::Replicate => "@reboot".into(),
        };
        let line = format!("{when} {} {}", self.shell_command(false), self.marker());
        line.replace('%', "\\%")
    }

    /// What `systemctl --user enable --now` starts: the backup's timer, or
    /// the replicator's service.
    fn enabled_unit(&self) -> String {
        match self.task {
            Task::Backup { .. } => TIMER.into(),
            Task::Replicate => format!("upkeep-replicate-{}.service", self.env),
        }
    }

    /// The target whose `.wants` folder `systemctl enable` links it from.
    fn wanted_by(&self) -> &'static str {
        match self.task {
            Task::Backup { .. } => "timers.target",
            Task::Replicate => "default.target",
        }
    }

    fn enable(&self) -> String {
        format!(
            "systemctl --user daemon-reload && systemctl --user enable --now {}",
            self.enabled_unit()
        )
    }

    /// The systemd user units, by file name. `%` starts a specifier in
    /// every setting and `$` a variable in ExecStart, hence the escapes.
    fn units(&self) -> Vec<(String, String)> {
        let esc = |text: &str| text.replace('%', "%%");
        let exec: Vec<String> = self.args().iter().map(|arg| unit_quote(arg)).collect();
        let head = format!(
            "{marker}\n[Unit]\nDescription=upkeep: {what} ({env})\n\n[Service]\nWorkingDirectory={root}\nExecStart={exec}\n",
            marker = esc(&self.marker()),
            what = match self.task {
                Task::Backup { .. } => "daily backup",
                Task::Replicate => "continuous off-site copies",
            },
            env = esc(&self.env),
            root = esc(&self.root),
            exec = esc(&exec.join(" ")).replace('$', "$$"),
        );
        let install = format!("\n[Install]\nWantedBy={}\n", self.wanted_by());
        match self.task {
            Task::Backup { at, .. } => {
                let log = esc(&self.log);
                let service = format!(
                    "{head}Type=oneshot\nStandardOutput=append:{log}\nStandardError=append:{log}\n"
                );
                let timer = format!(
                    "{marker}\n[Unit]\nDescription=upkeep: daily backup at {hour:02}:{minute:02}\n\n[Timer]\n\
                     OnCalendar=*-*-* {hour:02}:{minute:02}:00\nPersistent=true\n{install}",
                    marker = esc(&self.marker()),
                    hour = at.hour,
                    minute = at.minute,
                );
                vec![(SERVICE.into(), service), (TIMER.into(), timer)]
            }
            // Runs until stopped, so systemd starts it again whenever it
            // ends (a failed round, a store out of reach); SIGTERM makes it
            // ship what is pending before it exits. Its output goes to the
            // journal, which rotates it.
            Task::Replicate => {
                let service = format!(
                    "{head}Restart=always\nRestartSec=5\nKillSignal=SIGTERM\nTimeoutStopSec=30\n{install}"
                );
                vec![(self.enabled_unit(), service)]
            }
        }
    }
}

/// The `schtasks` command that runs `scripts\backup_db.ps1` daily.
fn schtasks(root: &Path, env: &str, at: At, keep: Option<u32>) -> String {
    let script = root.join("scripts").join("backup_db.ps1");
    format!(
        "schtasks /Create /SC DAILY /ST {:02}:{:02} /TN \"upkeep backup\" /TR \"powershell -ExecutionPolicy Bypass -File \\\"{}\\\" {env}{}\" /F",
        at.hour,
        at.minute,
        script.display(),
        keep.map(|keep| format!(" --keep={keep}"))
            .unwrap_or_default()
    )
}

fn cron_install(job: &Job, install: bool, printer: &Printer) -> Result<()> {
    let current = crontab_read()?;
    let line = job.cron_line();
    let marker = job.cron_line_marker();
    let updated = replace_entry(&current, &marker, install.then_some(line.as_str()));
    let what = job.what();
    if updated == current {
        printer.note(&if install {
            format!("ok: the crontab already has this entry ({what}); nothing changed")
        } else {
            format!("ok: the crontab has no entry for {what} of this project; nothing changed")
        });
        return Ok(());
    }
    crontab_write(&updated)?;
    match (install, job.task) {
        (true, Task::Backup { .. }) => {
            printer.note(&format!("ok: installed in your crontab:\n  {line}"));
            let old = current.lines().any(|l| {
                !l.trim_start().starts_with('#')
                    && (l.contains("backup_db.sh") || l.contains("backup_db.py"))
            });
            if old {
                printer.hint("your crontab still runs the old backup_db script too: remove that line with `crontab -e`");
            }
        }
        // upkeep starts nothing itself: the user does, or the next boot.
        (true, Task::Replicate) => printer.note(&format!(
            "ok: installed in your crontab:\n  {line}\ncron starts it at the next boot; to start it now, run:\n  {} < /dev/null &",
            job.shell_command(true)
        )),
        (false, task) => {
            printer.note(&format!(
                "ok: removed {what} of this project from your crontab; other lines were kept"
            ));
            if let Task::Replicate = task {
                printer.hint("a replicator that is running goes on until it is stopped: send it SIGTERM (it ships what is pending, then exits)");
            }
        }
    }
    Ok(())
}

/// `table` with the lines ending in `marker` replaced by `line` (at the
/// first one's place, or appended), or removed when `line` is `None`.
fn replace_entry(table: &str, marker: &str, line: Option<&str>) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut pending = line;
    for existing in table.lines() {
        if existing.trim_end().ends_with(marker) {
            out.extend(pending.take());
        } else {
            out.push(existing);
        }
    }
    out.extend(pending);
    let mut text = out.join("\n");
    if !text.is_empty() {
        // cron ignores a last line without its newline.
        text.push('\n');
    }
    text
}

fn crontab(args: &[&str]) -> Result<std::process::Child> {
    Command::new("crontab")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "`crontab` not found: install cron (Debian/Ubuntu: `apt-get install cron`, Fedora: `dnf install cronie`), or use `upkeep schedule --systemd --install`"
            ),
            _ => anyhow::Error::new(error).context("cannot run `crontab`"),
        })
}

/// The current user's crontab; none yet is an empty one.
fn crontab_read() -> Result<String> {
    let output = crontab(&["-l"])?
        .wait_with_output()
        .context("cannot run `crontab -l`")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else if stderr.contains("no crontab for") {
        Ok(String::new())
    } else {
        bail!("`crontab -l` failed: {}", stderr.trim())
    }
}

/// Replaces the current user's crontab; `crontab` checks every line first.
fn crontab_write(table: &str) -> Result<()> {
    let mut child = crontab(&["-"])?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(table.as_bytes())
            .context("cannot write to `crontab -`")?;
    }
    let output = child.wait_with_output().context("cannot run `crontab -`")?;
    if !output.status.success() {
        bail!(
            "`crontab` refused the new table, so your crontab was left as it was: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Where systemd looks for the user's own units.
fn units_dir() -> Result<PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    let config = absolute("XDG_CONFIG_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".config")))
        .ok_or_else(|| {
            bad_input(
                "neither XDG_CONFIG_HOME nor HOME is set: cannot find your systemd user folder",
            )
        })?;
    Ok(config.join("systemd").join("user"))
}

fn systemd_install(job: &Job, install: bool, printer: &Printer) -> Result<()> {
    let dir = units_dir()?;
    let marker = job.marker().replace('%', "%%");
    let units = job.units();
    // Check them all before writing any: never leave one unit of a pair.
    for (name, _) in &units {
        let path = dir.join(name);
        if let Ok(text) = std::fs::read_to_string(&path)
            && !text.lines().any(|line| line == marker)
        {
            return Err(bad_input(format!(
                "`{}` was not written by `upkeep schedule` for {}: left alone; remove it yourself if it should go",
                path.display(),
                job.config
            )));
        }
    }
    let names: Vec<&str> = units.iter().map(|(name, _)| name.as_str()).collect();
    let names = names.join(" and ");
    let enabled = job.enabled_unit();
    if install {
        fsx::create_private_dir(&dir)?;
        for (name, unit) in &units {
            fsx::write_atomic(&dir.join(name), unit.as_bytes())?;
        }
        let runs = match job.task {
            Task::Backup { .. } => "the timer runs while you are logged in; `loginctl enable-linger` lets it run at any time".to_string(),
            Task::Replicate => format!(
                "the service runs while you are logged in; `loginctl enable-linger` starts it at boot and keeps it running; \
                 its output: `journalctl --user -u {enabled}`"
            ),
        };
        printer.note(&format!(
            "ok: wrote {names} in {}\nnow run: {}\n({runs})",
            dir.display(),
            job.enable(),
        ));
    } else {
        let wants = dir
            .join(format!("{}.wants", job.wanted_by()))
            .join(&enabled);
        for path in units.iter().map(|(name, _)| dir.join(name)).chain([wants]) {
            match std::fs::remove_file(&path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(anyhow::Error::new(error)
                        .context(format!("cannot remove `{}`", path.display())));
                }
                _ => {}
            }
        }
        printer.note(&format!(
            "ok: removed {names} from {}\nnow run: systemctl --user stop {enabled}; systemctl --user daemon-reload",
            dir.display()
        ));
    }
    Ok(())
}

/// A path as text: entries are text, and a lossy path would name another file.
fn utf8(path: &Path) -> Result<String> {
    match path.to_str() {
        Some(text) if !text.contains(['\n', '\r']) => Ok(text.to_string()),
        _ => Err(bad_input(format!(
            "`{}` is not a plain UTF-8 path on one line: it cannot be written into a schedule entry",
            path.display()
        ))),
    }
}

/// One word for `sh`: as is when plain, else single-quoted with `'`
/// written as `'\''`.
fn sh_quote(word: &str) -> String {
    if is_plain(word) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Letters, digits and punctuation that no shell or unit file treats
/// specially.
fn is_plain(word: &str) -> bool {
    !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
}

/// One word for a systemd command line: double-quoted where needed.
fn unit_quote(word: &str) -> String {
    if is_plain(word) {
        word.to_string()
    } else {
        format!("\"{}\"", word.replace('\\', r"\\").replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_is_hh_mm() {
        assert_eq!(parse_at("02:00"), Ok(At { hour: 2, minute: 0 }));
        assert_eq!(parse_at("7:05"), Ok(At { hour: 7, minute: 5 }));
        for bad in [
            "24:00", "12:60", "2", "02:0", "+2:00", "02:00:00", "", "ab:cd",
        ] {
            assert!(parse_at(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("/opt/app/upkeep.yaml"), "/opt/app/upkeep.yaml");
        assert_eq!(sh_quote("/my app/it's"), r"'/my app/it'\''s'");
        assert_eq!(unit_quote("/my app/a\"b"), r#""/my app/a\"b""#);
    }

    #[test]
    fn replace_entry_keeps_other_lines() {
        let table = "MAILTO=me\n0 1 * * * a # m\n5 5 * * * mine\n0 3 * * * b # m\n";
        assert_eq!(
            replace_entry(table, "# m", Some("new # m")),
            "MAILTO=me\nnew # m\n5 5 * * * mine\n"
        );
        assert_eq!(
            replace_entry(table, "# m", None),
            "MAILTO=me\n5 5 * * * mine\n"
        );
        assert_eq!(replace_entry("", "# m", Some("x # m")), "x # m\n");
        assert_eq!(replace_entry("x # m\n", "# m", None), "");
    }
}
