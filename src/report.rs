//! Printing results: for people (aligned, coloured on a terminal, plain
//! otherwise) or as JSON, one object per line.
//!
//! Every JSON line, a command's result or a run's event, goes through
//! [`json_line`], which stamps it with the [`SCHEMA`] version, so that a
//! script (an Ansible task, a CI step) can tell what it reads.

use std::io::IsTerminal;

/// `println!` that never panics: a closed pipe (`upkeep ... | head`) must
/// not abort upkeep halfway through a run, whose rollback must still happen.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that never panics.
macro_rules! say_err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub(crate) use {say, say_err};

mod offsite;

use console::style;
use serde_json::json;

use crate::db::backup::{Made, Taken};
use crate::db::backups::{Backup, Status};
use crate::db::check::Report;
use crate::db::repair::{Outcome, Repaired};
use crate::db::restore::Restored;
use crate::fsx::human_size;
use crate::progress::Progress;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Lines for people: aligned, coloured on a terminal.
    Human,
    /// One JSON object per line, for scripts.
    Json,
}

/// When output is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    /// On a terminal, unless `NO_COLOR` is set or `TERM` is `dumb`.
    Auto,
    Always,
    Never,
}

/// The version of the JSON that upkeep prints, in the `schema` field of
/// every line. New fields leave it as it is; it goes up when a field is
/// renamed, removed or changes meaning.
pub const SCHEMA: u64 = 1;

/// A JSON object as the line upkeep prints: with its `schema` version.
pub fn json_line(mut value: serde_json::Value) -> String {
    if let Some(object) = value.as_object_mut() {
        object.insert("schema".into(), SCHEMA.into());
    }
    value.to_string()
}

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub format: Format,
    pub quiet: bool,
    pub verbose: bool,
}

impl Printer {
    pub fn new(format: Format, quiet: bool, verbose: bool, color: Color) -> Printer {
        let colors = match color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
                    && std::io::stdout().is_terminal()
                    && std::env::var("TERM").map_or(true, |term| term != "dumb")
            }
        };
        console::set_colors_enabled(colors);
        console::set_colors_enabled_stderr(colors);
        Printer {
            format,
            quiet,
            verbose,
        }
    }

    fn human(&self) -> bool {
        self.format == Format::Human && !self.quiet
    }

    /// Progress bars: only for people, on a terminal.
    pub fn progress(&self) -> Progress {
        Progress::new(
            self.human()
                && std::io::stderr().is_terminal()
                && std::env::var("TERM").map_or(true, |term| term != "dumb"),
        )
    }

    fn json(&self, value: serde_json::Value) {
        if self.format == Format::Json {
            say!("{}", json_line(value));
        }
    }

    /// A line of information for people.
    pub fn note(&self, text: &str) {
        if self.human() {
            say!("{text}");
        }
    }

    /// With `--verbose`: how long the command took, on stderr.
    pub fn timing(&self, took: std::time::Duration, code: i32) {
        if self.verbose && self.format == Format::Human {
            say_err!(
                "{}",
                style(format!(
                    "upkeep: exit {code} after {:.3}s",
                    took.as_secs_f64()
                ))
                .dim()
            );
        }
    }

    /// Advice for people, on stderr so that stdout stays pipeable.
    pub fn hint(&self, text: &str) {
        if self.human() {
            say_err!("{} {text}", style("hint:").cyan().bold());
        }
    }

    /// An entry for a scheduler (`upkeep schedule`): the output asked for,
    /// so it is printed even with --quiet.
    pub fn entry(&self, kind: &str, text: &str) {
        self.json(json!({"type": "schedule", "kind": kind, "text": text}));
        if self.format == Format::Human {
            say!("{text}");
        }
    }

    pub fn error(&self, error: &anyhow::Error, code: i32) {
        let message = crate::error::describe(error);
        self.json(json!({"type": "error", "message": message, "exit_code": code}));
        say_err!("{} {message}", style("error:").red().bold());
    }

    pub fn check(&self, env: &str, report: &Report) {
        self.json(json!({"type": "check", "env": env, "ok": report.ok(), "report": report}));
        if !self.human() {
            return;
        }
        let detail = match (report.size, &report.storage_version) {
            (Some(size), Some(version)) => format!(" ({}, storage {version})", human_size(size)),
            (Some(size), None) => format!(" ({})", human_size(size)),
            _ => String::new(),
        };
        say!(
            "{} {}{detail}{}",
            style(env).bold(),
            report.path.display(),
            if report.deep { ", deep" } else { "" }
        );
        if report.from_snapshot {
            say!("  checked a fresh snapshot from the app's hook: the app kept running");
        }
        if report.copied_live {
            say!("  checked a live copy: the app kept running, no hook");
        }
        self.table_rows(report);
        if report.ok() {
            say!("  {} sound", style("ok").green().bold());
        } else {
            say!(
                "  {} {} problem(s):",
                style("FAILED").red().bold(),
                report.problems.len()
            );
            for problem in &report.problems {
                say!(
                    "    - {}: {}",
                    serde_json::to_value(problem.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    problem.message
                );
            }
        }
    }

    fn table_rows(&self, report: &Report) {
        if report.tables.is_empty() {
            return;
        }
        let width = report
            .tables
            .iter()
            .map(|t| t.table.len())
            .max()
            .unwrap_or(5)
            .max(5);
        say!("  {:width$}  {:>12}", "table", "rows");
        for table in &report.tables {
            let rows = table
                .rows
                .map_or("unreadable".to_string(), |n| n.to_string());
            say!("  {:width$}  {rows:>12}", table.table);
        }
    }

    pub fn backup(&self, env: &str, made: &Made) {
        let (taken, downtime_ms, app_down) = match &made.taken {
            Taken::Direct => ("direct", None, None),
            Taken::Live(_) => ("live", Some(0), None),
            Taken::Snapshot => ("snapshot", None, None),
            Taken::TopUp { .. } => ("topped_up", None, None),
            Taken::Window {
                downtime,
                restart_error,
            } => (
                "window",
                Some(downtime.as_millis() as u64),
                restart_error.clone(),
            ),
        };
        self.json(json!({
            "type": "backup",
            "env": env,
            "backup": made.backup,
            "path": made.backup.path,
            "manifest": made.backup.manifest,
            "rotated": made.rotated,
            "rotation_error": made.rotation_error,
            "wal_kept": made.wal_kept.as_ref().map(|(path, reason)| json!({"path": path, "reason": reason})),
            "taken": taken,
            "live": match &made.taken {
                Taken::Live(live) => json!({
                    "copied": live.copied,
                    "wal_commits": live.wal_commits,
                    "attempts": live.attempts,
                    "cloned": live.cloned,
                    "copy_seconds": live.copy_time.as_secs_f64(),
                }),
                _ => serde_json::Value::Null,
            },
            "not_live": made.not_live,
            "downtime_ms": downtime_ms,
            "app_down": app_down,
            // A new backup file, always: see docs/output.md, "JSON output".
            "changed": true,
        }));
        if let Some(error) = &app_down {
            // First and loudest: a person has to act now.
            say_err!(
                "{} THE APP OF {env} IS DOWN: it was stopped for the backup and did not come back healthy: {error}; `upkeep recover` starts it again (or start it by hand)",
                style("error:").red().bold()
            );
        }
        if !self.human() {
            return;
        }
        let how = match &made.taken {
            Taken::Direct => String::new(),
            Taken::Live(live) => format!(
                "; copied live: no downtime, {} {} in {:.3}s, {} commit(s) from the .wal, {} attempt(s)",
                human_size(live.copied),
                if live.cloned { "cloned" } else { "copied" },
                live.copy_time.as_secs_f64(),
                live.wal_commits,
                live.attempts
            ),
            Taken::Snapshot => "; through the app's snapshot hook, no downtime".to_string(),
            Taken::TopUp { blocks, bytes, .. } => format!(
                "; a live copy topped up after the stop: {blocks} block(s), {}",
                human_size(*bytes)
            ),
            Taken::Window { downtime, .. } => format!(
                "; in a window: the app was down {:.2}s",
                downtime.as_secs_f64()
            ),
        };
        let how = match &made.not_live {
            Some(why) => format!("{how}; not live: {why}"),
            None => how,
        };
        say!(
            "{} {} backed up to {} ({}, {}{how})",
            style("ok").green().bold(),
            style(env).bold(),
            made.backup.path.display(),
            human_size(made.backup.size),
            made.backup.status.as_str()
        );
        for name in &made.rotated {
            say!("  rotated out: {name}");
        }
        if let Some(error) = &made.rotation_error {
            say_err!(
                "{} rotation failed, older backups were kept: {error}",
                style("warning:").yellow().bold()
            );
        }
        if let Some((path, reason)) = &made.wal_kept {
            say_err!(
                "{} the .wal of {env} could not be replayed ({reason}); the writes committed in it are not in the \
                 database nor in this backup. A copy of it is kept in {}",
                style("warning:").yellow().bold(),
                path.display()
            );
        }
    }

    pub fn backups(&self, env: &str, backups: &[Backup]) {
        self.json(json!({"type": "backups", "env": env, "backups": backups}));
        if !self.human() {
            return;
        }
        if backups.is_empty() {
            say!("{}: no backups", style(env).bold());
            return;
        }
        let width = backups.iter().map(|b| b.name.len()).max().unwrap_or(4);
        say!(
            "{:width$}  {:23}  {:>10}  {:10}  kept by",
            "name",
            "time",
            "size",
            "status"
        );
        for backup in backups.iter().rev() {
            let status = match backup.status {
                Status::Verified => style(backup.status.as_str()).green(),
                Status::Unverified => style(backup.status.as_str()).red(),
                Status::Legacy => style(backup.status.as_str()).yellow(),
            };
            say!(
                "{:width$}  {:23}  {:>10}  {status:10}  {}",
                backup.name,
                backup.time,
                human_size(backup.size),
                offsite::kept_by(&backup.kept_by)
            );
        }
    }

    pub fn restored(&self, env: &str, restored: &Restored) {
        self.json(json!({
            "type": "restore",
            "env": env,
            "backup": restored.backup,
            "skipped": restored.skipped,
            "aside": restored.aside,
            "ok": restored.after.ok(),
            "after": restored.after,
            "changed": true,
        }));
        if !self.human() {
            return;
        }
        for (name, reason) in &restored.skipped {
            say!("  skipped {name}: {reason}");
        }
        say!(
            "{} {} restored from {}",
            style("ok").green().bold(),
            style(env).bold(),
            restored.backup.name
        );
        if let Some(aside) = &restored.aside {
            say!("  previous database kept in {}", aside.display());
        }
        self.check(env, &restored.after);
    }

    /// One pipeline file checked by `upkeep validate`.
    pub fn validated(&self, path: &std::path::Path, result: Result<usize, &str>) {
        match result {
            Ok(steps) => {
                self.json(json!({"type": "validated", "path": path, "ok": true, "steps": steps}));
                if self.human() {
                    say!(
                        "{} {} ({steps} steps)",
                        style("ok").green().bold(),
                        path.display()
                    );
                }
            }
            Err(problems) => {
                self.json(json!({"type": "validated", "path": path, "ok": false, "problems": problems.lines().collect::<Vec<_>>()}));
                if self.format == Format::Human {
                    say_err!("{} {}", style("invalid").red().bold(), path.display());
                    for line in problems.lines() {
                        say_err!("  {line}");
                    }
                }
            }
        }
    }

    pub fn repaired(&self, env: &str, repaired: &Repaired) {
        let (how, detail) = repaired.outcome.describe();
        self.json(json!({
            "type": "repair",
            "env": env,
            "outcome": how,
            "detail": detail,
            "quarantine": repaired.quarantine,
            "wal_quarantine": repaired.wal_quarantine,
            "before": repaired.before,
            "after": repaired.after,
            "ok": repaired.after.ok(),
            "changed": repaired.outcome.changed(),
        }));
        if !self.human() {
            return;
        }
        if let Outcome::Sound = repaired.outcome {
            say!(
                "{} {} is sound: nothing to repair, nothing touched",
                style("ok").green().bold(),
                style(env).bold()
            );
            return;
        }
        say!("{} problems found:", style(env).bold());
        for problem in &repaired.before.problems {
            say!("    - {}", problem.message);
        }
        if let Some(folder) = &repaired.wal_quarantine {
            say!(
                "  the .wal that could not be replayed moved to {} (the writes committed in it are there, not in the database)",
                folder.display()
            );
        }
        if let Some(folder) = &repaired.quarantine {
            say!("  damaged file moved to {}", folder.display());
        }
        say!("  {}: {detail}", style(how).bold());
        self.check(env, &repaired.after);
    }
}
