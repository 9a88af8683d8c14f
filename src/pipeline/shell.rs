//! Running shell commands for `run:` steps and rollbacks.
//!
//! Commands run through `sh -c` (with duct), in the config's folder, with
//! variables passed as environment variables and never pasted into the
//! command text. Each command gets its own process group, so a timeout or a
//! Ctrl-C stops the whole tree it started. A command waits at a gate (a
//! line on its shell's stdin) until its group is journaled: whatever moment
//! upkeep is killed at, `upkeep recover` knows every command that may
//! still run. Output goes straight into the
//! run log (a file, not a pipe: an app started in the background by
//! `start.sh` may write to it long after the step is over, and must not die
//! of a closed pipe) and is followed from there to the terminal.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::process::Group;

/// Shared with the app's hooks, which are checked the same way.
pub use crate::process::program_exists;

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
    /// Told the process group of the command as soon as it runs, so that
    /// the journal can name it (after a crash, `recover` stops it).
    pub spawned: &'a mut dyn FnMut(Group) -> Result<()>,
}

/// Grace between SIGTERM and SIGKILL when stopping a command.
const GRACE: Duration = crate::process::GRACE;
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
    // The command waits at a gate until its process group is journaled: a
    // kill of upkeep at any moment leaves no command running that `recover`
    // does not know of. The gate is the shell's stdin: it reads one line
    // (written once the journal is synced), then takes /dev/null as stdin
    // and runs the command. If upkeep dies first, the pipe ends unwritten
    // and the shell exits without running anything. (A gate between fork
    // and exec would cost a full fork per step: std spawns with vfork-like
    // `posix_spawn` only without `pre_exec` hooks.)
    let (gate, mut opener) = std::io::pipe().context("cannot create a pipe")?;
    // An absolute path: no PATH search on every step.
    let mut expression = duct::cmd("/bin/sh", ["-c", GATED, "sh", command])
        .dir(dir)
        .stdin_file(gate)
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
    drop(expression);
    let group = handle.pids().first().copied().unwrap_or(0) as i32;
    let journaled = (output.spawned)(Group::of(group)).and_then(|()| {
        opener
            .write_all(b"\n")
            .context("cannot let the command start")
    });
    // Unopened (journal error), the gate makes the shell exit.
    drop(opener);
    if let Err(error) = journaled {
        stop_group(group, &handle);
        return Err(error);
    }
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

/// What `sh -c` runs: the gate (one line on stdin), then the command (`$1`)
/// with /dev/null as stdin and no positional parameters, as `sh -c COMMAND`
/// would run it.
const GATED: &str = "IFS= read -r _ || exit 125; exec </dev/null; \
                     __upkeep_command=$1; shift; eval \"$__upkeep_command\"";

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
    crate::process::stop(group, GRACE, &mut || {
        matches!(handle.try_wait(), Ok(Some(_)))
    });
    let _ = handle.wait();
}
