//! Other processes: a command in a process group of its own, held to a
//! time limit; a [`Group`] as the journal keeps it, to be stopped after a
//! crash; another process [described](describe) in one line (the app that
//! holds a database, the run that holds the lock). Below every layer that
//! runs or names a process: `db`, `lock`, `journal`, `app`, `pipeline`.
//!
//! The app's hooks (`stop`, `start`, `snapshot`) and a health probe's
//! `cmd:` run through here; `pipeline::shell` runs `run:` steps the same
//! way (with a journal gate of its own) and stops them with [`stop`]. A
//! command that overruns its limit is stopped with everything it started:
//! SIGTERM to the whole group, then SIGKILL once the grace is over, so
//! that no `sleep` or server a script forked lives on after it.
//!
//! Also what decides that a text is a command upkeep can run at all
//! ([`check_command`]: config and pipeline loading refuse the others
//! before anything runs), and whether the program it starts with is there
//! ([`program_exists`]: dry-runs, and stop-app before it stops the app).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// Grace between SIGTERM and SIGKILL when a hook or step is stopped.
pub const GRACE: Duration = Duration::from_secs(3);
/// How often a running command is looked at.
const POLL: Duration = Duration::from_millis(20);

/// How a command held to a limit ended.
#[derive(Debug)]
pub enum Ended {
    Exited(ExitStatus),
    /// It was still running at the limit: its group was stopped.
    Overran,
}

/// Runs `command` in a new process group until it exits, or until `limit`;
/// then stops the whole group (SIGTERM, SIGKILL after `grace`).
pub fn run(mut command: Command, limit: Duration, grace: Duration) -> std::io::Result<Ended> {
    command.process_group(0);
    let mut child = command.spawn()?;
    let started = Instant::now();
    // Most commands end within milliseconds: look soon, then less often.
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Ended::Exited(status));
        }
        let elapsed = started.elapsed();
        if elapsed >= limit {
            break;
        }
        std::thread::sleep(pause.min(limit - elapsed));
        pause = (pause * 2).min(POLL);
    }
    let group = i32::try_from(child.id()).unwrap_or(0);
    stop(group, grace, &mut || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    let _ = child.wait();
    Ok(Ended::Overran)
}

/// Stops process group `group`: SIGTERM, then SIGKILL once `grace` is
/// over or sooner when the group is gone. `leader_done` reaps the group's
/// leader when it has exited (and says so): until then the group's number
/// cannot name anyone else's processes.
pub fn stop(group: i32, grace: Duration, leader_done: &mut dyn FnMut() -> bool) {
    if group <= 0 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals the process group.
    unsafe { libc::kill(-group, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if leader_done() && !alive(group) {
            return;
        }
        std::thread::sleep(POLL);
    }
    // SAFETY: as above.
    unsafe { libc::kill(-group, libc::SIGKILL) };
}

/// Whether any process of group `group` is left.
pub fn alive(group: i32) -> bool {
    // SAFETY: signal 0 only checks that the group exists.
    group > 0 && unsafe { libc::kill(-group, 0) == 0 }
}

/// Whether `text` is a command upkeep can hand to `/bin/sh -c`: not
/// blank (it would do nothing, and say it succeeded), no NUL character
/// (no program can be given one).
pub fn check_command(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err(
            "no command given (null, empty or blank): write the shell command, or leave the key out"
                .to_string(),
        );
    }
    if text.contains('\0') {
        return Err("a command cannot hold a NUL character".to_string());
    }
    Ok(())
}

/// Whether the program a command starts with can be found: for dry-runs,
/// and before the app is stopped (its start must be able to run).
pub fn program_exists(command: &str, dir: &Path) -> Result<(), String> {
    let Some(program) = command.split_whitespace().next() else {
        return Err("the command is empty".to_string());
    };
    const BUILTINS: &[&str] = &[
        ":", ".", "[", "!", "cd", "command", "echo", "eval", "exec", "exit", "export", "false",
        "printf", "read", "set", "shift", "test", "trap", "true", "umask", "unset", "wait", "if",
        "for", "while", "until", "case", "{", "(",
    ];
    let program = program.trim_matches(|c| c == '"' || c == '\'');
    // Quoting, expansions and assignments are for the shell to resolve.
    if BUILTINS.contains(&program) || program.contains(['=', '$', '`', '(', '\\']) {
        return Ok(());
    }
    let executable = |path: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = dir.join(program);
        return if executable(&path) {
            Ok(())
        } else {
            Err(crate::redact::urls(&format!(
                "`{}` does not exist or is not executable",
                path.display()
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|folder| executable(&folder.join(program))) {
        Ok(())
    } else {
        Err(crate::redact::urls(&format!(
            "`{program}` is not found in PATH"
        )))
    }
}

/// A command's process group, with the start time of its leader so that a
/// reused PID is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Group {
    pub pgid: i32,
    pub started: u64,
}

impl Group {
    pub fn of(pgid: i32) -> Group {
        Group {
            pgid,
            started: start_time(pgid).unwrap_or(0),
        }
    }

    /// Stops the group if it is still the one that was started: SIGTERM,
    /// then SIGKILL. For `recover`, after upkeep itself was killed.
    pub fn stop_if_alive(self) -> bool {
        if self.pgid <= 0 {
            return false;
        }
        let ours = match start_time(self.pgid) {
            Some(started) => started == self.started,
            // The leader is gone, but members of its group may live on (a
            // server a script started): while they do, the kernel gives
            // the group's number to no new process, so they are ours.
            None => alive(self.pgid),
        };
        if !ours {
            return false;
        }
        // SAFETY: kill(2) with a negative pid signals the process group.
        unsafe { libc::kill(-self.pgid, libc::SIGTERM) };
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline && alive(self.pgid) {
            std::thread::sleep(POLL);
        }
        // SAFETY: as above.
        unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        true
    }
}

/// A process's start time (clock ticks since boot), from /proc.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces; the start time is field 22 of the whole line.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The longest command line shown for another process, in characters.
const SHOWN_COMMAND: usize = 80;

/// ` (`program args…`)` of another process, when /proc tells it: one line
/// at most [`SHOWN_COMMAND`] long, so that an app started with a program
/// in its arguments (`python3 -c "..."`) does not fill the screen. It ends
/// at the first line break and says `…` where it was cut; credentials in
/// URLs are masked.
pub fn describe(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|raw| {
            let words: Vec<String> = raw
                .split(|&byte| byte == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect();
            one_line(&words.join(" "))
        })
        .filter(|command| !command.is_empty())
        .map_or_else(String::new, |command| format!(" (`{command}`)"))
}

/// `command` cut to one short line (see [`describe`]).
fn one_line(command: &str) -> String {
    let command = command.trim_end();
    let first = command.lines().next().unwrap_or("").trim_end();
    let mut shown: String = first
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(SHOWN_COMMAND)
        .collect();
    if first.len() < command.len() || first.chars().count() > SHOWN_COMMAND {
        shown.push('…');
    }
    // A backtick would end the quotes the command is shown in.
    crate::redact::urls(&shown.replace('`', "'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overrun_stops_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg("sleep 30 & echo $! > \"$0\"; sleep 31")
            .arg(&pids);
        let started = Instant::now();
        let ended = run(command, Duration::from_millis(300), Duration::ZERO).unwrap();
        assert!(matches!(ended, Ended::Overran), "{ended:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let background: i32 = std::fs::read_to_string(&pids)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed (a signal arrives a moment later): gone, or a zombie until
        // its new parent reaps it.
        let dead = || {
            let state =
                std::fs::read_to_string(format!("/proc/{background}/stat")).unwrap_or_default();
            state.is_empty() || state.contains(") Z ")
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while !dead() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(dead(), "PID {background} outlived its group");
    }

    #[test]
    fn commands_that_cannot_run_are_refused() {
        for bad in ["", " ", "\t\n", "echo a\0b"] {
            assert!(check_command(bad).is_err(), "{bad:?}");
        }
        assert!(check_command("./stop.sh").is_ok());
    }

    #[test]
    fn another_process_is_shown_on_one_short_line() {
        assert_eq!(one_line("/usr/bin/app serve"), "/usr/bin/app serve");
        assert_eq!(
            one_line("python3 -c import duckdb\nconn = duckdb.connect('x')\n"),
            "python3 -c import duckdb…"
        );
        let long = format!("app {}", "x".repeat(200));
        let shown = one_line(&long);
        assert_eq!(shown.chars().count(), SHOWN_COMMAND + 1);
        assert!(shown.ends_with('…'));
        assert_eq!(
            one_line("curl http://admin:hunter2@host/"),
            "curl http://***@host/"
        );
    }
}
