//! What a run tells the world: a line per step for people (a spinner while
//! it runs, on a terminal), one JSON object per event with `--format json`,
//! and plain lines in the run's log file. In a GitHub Actions job, steps are
//! folded and failures annotated. Everything is also kept in a [`Record`],
//! from which the reports asked for are written at the end: `--junit`,
//! GitHub's step summary, the `notify:` webhook.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use console::style;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::pipeline::notify::Notify;
use crate::pipeline::record::{Finished, Record, RollbackRecord, State};
use crate::pipeline::{github, junit};
use crate::report::{Format, Printer, json_line, say};

pub struct Events {
    printer: Printer,
    /// The run log, when the run keeps one (not in a dry-run).
    log: Option<File>,
    spinner: Option<ProgressBar>,
    terminal: bool,
    /// A GitHub Actions job, printing for people.
    github: bool,
    record: Record,
    /// The pipeline's step names, in order.
    names: Vec<String>,
    reports: Reports,
}

/// The reports written when the run finishes.
#[derive(Debug, Clone, Default)]
pub struct Reports {
    pub junit: Option<PathBuf>,
    /// Real runs only: a dry-run notifies nobody.
    pub notify: Option<Notify>,
}

/// The status words of a finished step or rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Failed,
    /// Failed, but `allow_failure` lets the run go on.
    FailedAllowed,
    /// Failed, and is tried again (`retries:`).
    Retrying,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::FailedAllowed => "failed (allowed)",
            Status::Retrying => "failed (retrying)",
        }
    }
}

impl Events {
    pub fn new(printer: Printer, log: Option<File>) -> Events {
        let terminal = printer.format == Format::Human
            && !printer.quiet
            && std::io::stderr().is_terminal()
            && std::env::var("TERM").map_or(true, |term| term != "dumb");
        Events {
            printer,
            log,
            spinner: None,
            terminal,
            github: printer.format == Format::Human && github::active(),
            record: Record::default(),
            names: Vec::new(),
            reports: Reports::default(),
        }
    }

    /// What the run is made of, and the reports to write at its end.
    pub fn expect(&mut self, names: Vec<String>, reports: Reports) {
        self.names = names;
        self.reports = reports;
    }

    /// Something went wrong that does not change the run's outcome.
    pub fn warning(&mut self, message: &str) {
        if self.github {
            say!("{}", github::warning(message));
        }
        self.emit(json!({"type": "warning", "message": message}), None);
        if self.printer.format == Format::Human {
            crate::report::say_err!("{} {message}", style("warning:").yellow().bold());
        }
    }

    /// In a GitHub Actions job, an error annotation: `what` went wrong in
    /// this pipeline, and why.
    fn annotate_error(&self, what: &str, message: &str) {
        if self.github {
            let title = format!("upkeep {}: {what}", self.record.pipeline);
            say!("{}", github::error(&title, message));
        }
    }

    fn emit(&mut self, event: Value, human: Option<String>) {
        let event = json_line(event);
        if let Some(log) = &mut self.log {
            // One write per line: unbuffered `writeln!` would make many.
            let _ = log.write_all(format!("[upkeep] {event}\n").as_bytes());
        }
        match self.printer.format {
            Format::Json => say!("{event}"),
            Format::Human if !self.printer.quiet => {
                if let Some(line) = human {
                    match &self.spinner {
                        Some(spinner) => spinner.println(line),
                        None => say!("{line}"),
                    }
                }
            }
            Format::Human => {}
        }
    }

    pub fn run_started(&mut self, pipeline: &str, env: &str, run_id: &str, dry_run: bool) {
        self.record.pipeline = pipeline.to_string();
        self.record.env = env.to_string();
        self.record.run_id = run_id.to_string();
        self.record.dry_run = dry_run;
        let what = if dry_run { "dry-run of" } else { "running" };
        self.emit(
            json!({"type": "run_started", "pipeline": pipeline, "env": env, "run_id": run_id, "dry_run": dry_run}),
            Some(format!("{} {what} `{pipeline}`{} (run {run_id})", style("upkeep").bold(), on(env))),
        );
    }

    /// `upkeep recover` takes over an interrupted run: its events follow,
    /// as the run's (rollbacks, then how the recovery ended).
    pub fn recovery_started(&mut self, pipeline: &str, env: &str, run_id: &str) {
        self.record.pipeline = pipeline.to_string();
        self.record.env = env.to_string();
        self.record.run_id = run_id.to_string();
        self.emit(
            json!({"type": "run_started", "pipeline": pipeline, "env": env, "run_id": run_id,
                   "dry_run": false, "recover": true}),
            Some(format!(
                "{} recovering run {run_id} of `{pipeline}`{}",
                style("upkeep").bold(),
                on(env)
            )),
        );
    }

    /// A step (or a retry of it) starts; `what` is what it does, shown
    /// with `--verbose`.
    pub fn step_started(&mut self, index: usize, name: &str, what: &str, attempt: u32) {
        let retry = if attempt > 1 {
            format!(" (attempt {attempt})")
        } else {
            String::new()
        };
        self.record.step(index + 1, name, State::Running);
        self.emit(
            json!({"type": "step_started", "step": index + 1, "name": name, "attempt": attempt}),
            None,
        );
        if self.github {
            say!(
                "{}",
                github::group(&format!("{}. {name}{retry}", index + 1))
            );
        }
        if self.printer.verbose && self.printer.format == Format::Human {
            say!(
                "  {} {}. {name}{retry}: {what}",
                style("->").dim(),
                index + 1
            );
        }
        if self.terminal {
            let spinner = ProgressBar::new_spinner();
            spinner.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            spinner.set_message(format!("{name}{retry}"));
            spinner.enable_steady_tick(Duration::from_millis(100));
            self.spinner = Some(spinner);
        }
    }

    pub fn output(&mut self, index: usize, line: &str) {
        self.record.output(index + 1, line);
        if self.printer.format == Format::Json {
            say!(
                "{}",
                json_line(json!({"type": "step_output", "step": index + 1, "line": line}))
            );
        } else if !self.printer.quiet {
            let line = format!("    {}", style(line).dim());
            match &self.spinner {
                Some(spinner) => spinner.println(line),
                None => say!("{line}"),
            }
        }
    }

    fn stop_spinner(&mut self) {
        if let Some(spinner) = self.spinner.take() {
            spinner.finish_and_clear();
        }
    }

    pub fn step_finished(
        &mut self,
        index: usize,
        name: &str,
        status: Status,
        took: Duration,
        detail: &str,
        changed: bool,
    ) {
        self.stop_spinner();
        let step = self.record.step(
            index + 1,
            name,
            match status {
                Status::Ok => State::Ok,
                Status::Failed => State::Failed,
                Status::FailedAllowed => State::FailedAllowed,
                Status::Retrying => State::Running,
            },
        );
        step.took = took;
        step.detail = detail.to_string();
        if self.github {
            say!("{}", github::END_GROUP);
            let what = format!("{name}: {detail}");
            match status {
                Status::Failed => self.annotate_error(&format!("step {} failed", index + 1), &what),
                Status::Retrying => say!("{}", github::warning(&what)),
                Status::Ok | Status::FailedAllowed => {}
            }
        }
        let mark = match status {
            Status::Ok => style("ok").green().bold(),
            Status::Failed => style("FAILED").red().bold(),
            Status::FailedAllowed | Status::Retrying => style("failed").yellow().bold(),
        };
        self.emit(
            json!({"type": "step_finished", "step": index + 1, "name": name, "status": status.word(),
                   "duration_ms": took.as_millis() as u64, "detail": detail, "changed": changed}),
            Some(format!("{mark} {name} ({}){}", seconds(took), after(detail))),
        );
    }

    pub fn step_skipped(&mut self, index: usize, name: &str, reason: &str) {
        self.record.step(index + 1, name, State::Skipped).detail = reason.to_string();
        self.emit(
            json!({"type": "step_skipped", "step": index + 1, "name": name, "reason": reason}),
            Some(format!("{} {name}: {reason}", style("skip").dim())),
        );
    }

    pub fn rollback_started(&mut self, index: usize, name: &str, what: &str) {
        self.record.rollbacks.push(RollbackRecord {
            number: index + 1,
            name: name.to_string(),
            ok: false,
            took: Duration::ZERO,
            detail: String::new(),
            tail: Default::default(),
        });
        self.record.rolling_back = true;
        self.emit(
            json!({"type": "rollback_started", "step": index + 1, "name": name, "rollback": what}),
            Some(if what.ends_with("'s own rollback") {
                // A step type's own rollback: the step's name says enough.
                format!("{} {name}", style("undo").yellow())
            } else {
                format!("{} {name}: {what}", style("undo").yellow())
            }),
        );
    }

    pub fn rollback_finished(
        &mut self,
        index: usize,
        name: &str,
        ok: bool,
        took: Duration,
        detail: &str,
    ) {
        self.stop_spinner();
        self.record.rolling_back = false;
        if let Some(rollback) = self.record.rollbacks.last_mut() {
            rollback.ok = ok;
            rollback.took = took;
            rollback.detail = detail.to_string();
        }
        if !ok {
            let what = format!("rollback of step {} failed", index + 1);
            self.annotate_error(&what, &format!("{name}: {detail}"));
        }
        let mark = if ok {
            style("undone").green()
        } else {
            style("NOT UNDONE").red().bold()
        };
        self.emit(
            json!({"type": "rollback_finished", "step": index + 1, "name": name, "ok": ok,
                   "duration_ms": took.as_millis() as u64, "detail": detail}),
            Some(format!(
                "{mark} {name} ({}){}",
                seconds(took),
                after(detail)
            )),
        );
    }

    pub fn plan_step(
        &mut self,
        index: usize,
        name: &str,
        action: &str,
        verdict: &str,
        blocker: Option<&str>,
    ) {
        let (state, detail) = match blocker {
            Some(blocker) => (State::Blocked, blocker),
            None if verdict.starts_with("would be skipped") => (State::Skipped, verdict),
            None => (State::Planned, verdict),
        };
        self.record.step(index + 1, name, state).detail = detail.to_string();
        if let Some(blocker) = blocker {
            let what = format!("dry-run: step {} is blocked", index + 1);
            self.annotate_error(&what, &format!("{name}: {blocker}"));
        }
        // Each thing once: a step named by its action (`uses integrity`),
        // or whose verdict says the action (`would run `./x``), shows it once.
        let mut human = format!("{:>2}. {name}", index + 1);
        let would = format!("would {action}");
        if action != name && !verdict.contains(&would) {
            human.push_str(&format!("\n      {action}"));
        }
        if action != name || verdict != would {
            human.push_str(&format!("\n      {verdict}"));
        }
        if let Some(blocker) = blocker {
            human.push_str(&format!(
                "\n      {} {blocker}",
                style("BLOCKER:").red().bold()
            ));
        }
        self.emit(
            json!({"type": "plan_step", "step": index + 1, "name": name, "action": action,
                   "verdict": verdict, "blocker": blocker}),
            Some(human),
        );
    }

    /// The run's last event; `changed`: whether the app's code or data is
    /// left changed (see `steps::Ran::changed`).
    pub fn run_finished(&mut self, exit_code: i32, summary: &str, took: Duration, changed: bool) {
        self.stop_spinner();
        // A failure's summary says so itself ("failed at step 3 ...").
        let line = match exit_code {
            0 => format!("{} {summary}", style("done").green().bold()),
            1 | 2 => style(summary).red().bold().to_string(),
            _ => format!("{} {summary}", style("ATTENTION").red().bold()),
        };
        self.emit(
            json!({"type": "run_finished", "exit_code": exit_code, "summary": summary,
                   "duration_ms": took.as_millis() as u64, "changed": changed}),
            Some(format!("{line} ({})", seconds(took))),
        );
        self.record.finished = Some(Finished {
            exit_code,
            summary: summary.to_string(),
            took,
        });
        self.write_reports();
    }

    /// A run refused before its first step (busy, an unfinished run to
    /// recover): nothing more is printed (the error is, by the caller), but
    /// the reports say so.
    pub fn refused(&mut self, pipeline: &str, env: &str, exit_code: i32, reason: &str) {
        self.record.pipeline = pipeline.to_string();
        self.record.env = env.to_string();
        self.annotate_error("not run", reason);
        self.record.finished = Some(Finished {
            exit_code,
            summary: format!("not run: {reason}"),
            took: Duration::ZERO,
        });
        self.write_reports();
    }

    /// Writes the reports asked for; a report that cannot be written is a
    /// warning, never a change of the run's outcome.
    fn write_reports(&mut self) {
        let mut warnings = Vec::new();
        if let Some(path) = &self.reports.junit
            && let Err(error) = junit::write(&self.record, &self.names, path)
        {
            warnings.push(format!(
                "cannot write the JUnit report: {}",
                crate::error::describe(&error)
            ));
        }
        if self.github
            && let Err(error) = github::append_summary(&self.record, &self.names)
        {
            warnings.push(error);
        }
        if let Some(notify) = &self.reports.notify
            && !self.record.dry_run
            && notify.wants(&self.record)
            && let Err(error) = notify.send(&self.record)
        {
            warnings.push(format!(
                "the notify webhook {} did not take the run's summary ({error}); the run's outcome stands",
                crate::redact::urls(&notify.url)
            ));
        }
        for warning in warnings {
            self.warning(&warning);
        }
    }
}

/// `: DETAIL` after a step's or a rollback's line, or nothing. A detail of
/// several lines (DuckDB's "Candidate bindings: ...") is indented under it.
fn after(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        let lines: Vec<&str> = detail
            .lines()
            .filter(|line| !line.trim().is_empty())
            .collect();
        format!(": {}", lines.join("\n      "))
    }
}

fn seconds(took: Duration) -> String {
    format!("{:.1}s", took.as_secs_f64())
}

/// ` on `ENV``, or nothing for a run without an environment.
fn on(env: &str) -> String {
    if env.is_empty() {
        String::new()
    } else {
        format!(" on `{env}`")
    }
}
