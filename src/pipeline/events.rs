//! What a run tells the world: a line per step for people (a spinner while
//! it runs, on a terminal), one JSON object per event with `--format json`,
//! and plain lines in the run's log file.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use console::style;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::cli::Format;
use crate::report::{Printer, say};

pub struct Events {
    printer: Printer,
    /// The run log, when the run keeps one (not in a dry-run).
    log: Option<File>,
    spinner: Option<ProgressBar>,
    terminal: bool,
}

/// The status words of a finished step or rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Failed,
    /// Failed, but `allow_failure` lets the run go on.
    FailedAllowed,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::FailedAllowed => "failed (allowed)",
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
        }
    }

    fn emit(&mut self, event: Value, human: Option<String>) {
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
        let what = if dry_run { "dry-run of" } else { "running" };
        self.emit(
            json!({"type": "run_started", "pipeline": pipeline, "env": env, "run_id": run_id, "dry_run": dry_run}),
            Some(format!("{} {what} `{pipeline}` on `{env}` (run {run_id})", style("upkeep").bold())),
        );
    }

    pub fn step_started(&mut self, index: usize, name: &str, attempt: u32) {
        let retry = if attempt > 1 {
            format!(" (attempt {attempt})")
        } else {
            String::new()
        };
        self.emit(
            json!({"type": "step_started", "step": index + 1, "name": name, "attempt": attempt}),
            None,
        );
        if self.terminal {
            let spinner = ProgressBar::new_spinner();
            spinner.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            spinner.set_message(format!("{name}{retry}"));
            spinner.enable_steady_tick(Duration::from_millis(100));
            self.spinner = Some(spinner);
        } else if self.printer.verbose && self.printer.format == Format::Human {
            say!("  ... {name}{retry}");
        }
    }

    pub fn output(&mut self, index: usize, line: &str) {
        if self.printer.format == Format::Json {
            say!(
                "{}",
                json!({"type": "step_output", "step": index + 1, "line": line})
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
    ) {
        self.stop_spinner();
        let mark = match status {
            Status::Ok => style("ok").green().bold(),
            Status::Failed => style("FAILED").red().bold(),
            Status::FailedAllowed => style("failed").yellow().bold(),
        };
        let detail_text = if detail.is_empty() {
            String::new()
        } else {
            format!(": {detail}")
        };
        self.emit(
            json!({"type": "step_finished", "step": index + 1, "name": name, "status": status.word(),
                   "duration_ms": took.as_millis() as u64, "detail": detail}),
            Some(format!("{mark} {name} ({}){detail_text}", seconds(took))),
        );
    }

    pub fn step_skipped(&mut self, index: usize, name: &str, reason: &str) {
        self.emit(
            json!({"type": "step_skipped", "step": index + 1, "name": name, "reason": reason}),
            Some(format!("{} {name}: {reason}", style("skip").dim())),
        );
    }

    pub fn rollback_started(&mut self, index: usize, name: &str, what: &str) {
        self.emit(
            json!({"type": "rollback_started", "step": index + 1, "name": name, "rollback": what}),
            Some(format!("{} {name}: {what}", style("undo").yellow())),
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
        let mark = if ok {
            style("undone").green()
        } else {
            style("NOT UNDONE").red().bold()
        };
        let shown = if detail.is_empty() {
            String::new()
        } else {
            format!(": {detail}")
        };
        self.emit(
            json!({"type": "rollback_finished", "step": index + 1, "name": name, "ok": ok,
                   "duration_ms": took.as_millis() as u64, "detail": detail}),
            Some(format!("{mark} {name} ({}){shown}", seconds(took))),
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
        let human = match blocker {
            Some(blocker) => format!(
                "{:>2}. {name}\n      {action}\n      {verdict}\n      {} {blocker}",
                index + 1,
                style("BLOCKER:").red().bold()
            ),
            None => format!("{:>2}. {name}\n      {action}\n      {verdict}", index + 1),
        };
        self.emit(
            json!({"type": "plan_step", "step": index + 1, "name": name, "action": action,
                   "verdict": verdict, "blocker": blocker}),
            Some(human),
        );
    }

    pub fn run_finished(&mut self, exit_code: i32, summary: &str, took: Duration) {
        self.stop_spinner();
        let mark = match exit_code {
            0 => style("done").green().bold(),
            1 | 2 => style("failed").red().bold(),
            _ => style("ATTENTION").red().bold(),
        };
        self.emit(
            json!({"type": "run_finished", "exit_code": exit_code, "summary": summary,
                   "duration_ms": took.as_millis() as u64}),
            Some(format!("{mark} {summary} ({})", seconds(took))),
        );
    }
}

fn seconds(took: Duration) -> String {
    format!("{:.1}s", took.as_secs_f64())
}
