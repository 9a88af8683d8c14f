//! Running shell commands for `run:` steps and rollbacks.
//!
//! Commands run through `sh -c` (with duct), in the config's folder, with
//! variables passed as environment variables and never pasted into the
//! command text. Each command gets its own process group, so a timeout or a
//! Ctrl-C stops the whole tree it started. Output goes straight into the
//! run log (a file, not a pipe: an app started in the background by
//! `start.sh` may write to it long after the step is over, and must not die
//! of a closed pipe) and is followed from there to the terminal.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signalled,
    TimedOut(Duration),
    Interrupted,
}

impl Ended {
    pub fn ok(&self) -> bool {
        *self == Ended::Exited(0)
    }

    pub fn describe(&self) -> String {
        match self {
            Ended::Exited(code) => format!("exited with status {code}"),
            Ended::Signalled => "was killed by a signal".to_string(),
            Ended::TimedOut(after) => format!(
                "timed out after {} (its process group was stopped)",
                humantime::format_duration(*after)
            ),
            Ended::Interrupted => "was interrupted (SIGINT/SIGTERM)".to_string(),
        }
    }
}

/// Where a command's output goes: appended to the run log through `log`
/// (opened for appending), read back through `follow` (kept at the end of
/// what was shown) and shown line by line through `show`.
pub struct Output<'a> {
    pub log: &'a File,
    pub follow: &'a mut File,
    pub show: &'a mut dyn FnMut(&str),
}

/// Grace between SIGTERM and SIGKILL when stopping a command.
const GRACE: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(20);

pub fn run(
    command: &str,
    dir: &Path,
    vars: &[(String, String)],
    timeout: Option<Duration>,
    stop: &AtomicBool,
    output: &mut Output,
) -> Result<Ended> {
    let log = output.log.try_clone().context("cannot share the run log")?;
    output.follow.seek(SeekFrom::End(0))?;
    // An absolute path: no PATH search on every step.
    let mut expression = duct::cmd("/bin/sh", ["-c", command])
        .dir(dir)
        .stdin_null()
        .stdout_file(log)
        .stderr_to_stdout()
        .unchecked()
        .before_spawn(|command| {
            command.process_group(0);
            Ok(())
        });
    for (name, value) in vars {
        expression = expression.env(name, value);
    }
    let handle = expression
        .start()
        .with_context(|| format!("cannot start `sh -c {command}` in `{}`", dir.display()))?;
    let group = handle.pids().first().copied().unwrap_or(0) as i32;
    let started = Instant::now();
    let mut pending = String::new();
    let ended = loop {
        follow_output(output.follow, &mut pending, output.show);
        // Returns the moment the command exits (SIGCHLD), or after POLL to
        // show new output and look at the stop flag and the clock.
        if let Some(status) = handle.wait_timeout(POLL)? {
            break match status.status.code() {
                Some(code) => Ended::Exited(code),
                None => Ended::Signalled,
            };
        }
        if stop.load(Ordering::SeqCst) {
            stop_group(group, &handle);
            break Ended::Interrupted;
        }
        if let Some(limit) = timeout
            && started.elapsed() >= limit
        {
            stop_group(group, &handle);
            break Ended::TimedOut(limit);
        }
    };
    follow_output(output.follow, &mut pending, output.show);
    if !pending.is_empty() {
        (output.show)(&pending);
    }
    Ok(ended)
}

/// Shows the complete lines added to the log since the last call.
fn follow_output(follow: &mut File, pending: &mut String, show: &mut dyn FnMut(&str)) {
    let mut fresh = Vec::new();
    if follow.read_to_end(&mut fresh).is_err() || fresh.is_empty() {
        return;
    }
    pending.push_str(&String::from_utf8_lossy(&fresh));
    while let Some(end) = pending.find('\n') {
        let line: String = pending.drain(..=end).collect();
        show(line.trim_end_matches('\n'));
    }
}

/// SIGTERM to the whole process group, then SIGKILL after a grace period.
fn stop_group(group: i32, handle: &duct::Handle) {
    if group <= 0 {
        let _ = handle.kill();
        return;
    }
    // SAFETY: kill(2) with a negative pid signals the process group.
    unsafe { libc::kill(-group, libc::SIGTERM) };
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if matches!(handle.try_wait(), Ok(Some(_))) && !group_alive(group) {
            return;
        }
        std::thread::sleep(POLL);
    }
    // SAFETY: as above.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let _ = handle.wait();
}

fn group_alive(group: i32) -> bool {
    // SAFETY: signal 0 only checks that the group exists.
    unsafe { libc::kill(-group, 0) == 0 }
}

/// Whether the program a command starts with can be found: for dry-runs.
pub fn program_exists(command: &str, dir: &Path) -> Result<(), String> {
    let Some(program) = command.split_whitespace().next() else {
        return Err("the command is empty".to_string());
    };
    const BUILTINS: &[&str] = &[
        ":", ".", "[", "cd", "echo", "exit", "export", "false", "printf", "set", "test", "true",
        "exec", "if", "for", "while", "case", "{", "(",
    ];
    if BUILTINS.contains(&program) || program.contains('=') {
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
            Err(format!(
                "`{}` does not exist or is not executable",
                path.display()
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|folder| executable(&folder.join(program))) {
        Ok(())
    } else {
        Err(format!("`{program}` is not found in PATH"))
    }
}
