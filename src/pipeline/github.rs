//! GitHub Actions (`GITHUB_ACTIONS=true`): each step's output folded in a
//! `::group::`, a failure as an `::error::` annotation naming the step and
//! the reason, and a Markdown summary of the run appended to
//! `$GITHUB_STEP_SUMMARY`. Workflow commands go to standard output, in the
//! human format only (they would break `--format json` lines).

use std::fmt::Write as _;
use std::io::Write as _;

use crate::pipeline::record::{Record, State};

/// Whether the run is a GitHub Actions job.
pub fn active() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|value| value == "true")
}

pub fn group(title: &str) -> String {
    format!("::group::{}", data(title))
}

pub const END_GROUP: &str = "::endgroup::";

pub fn warning(message: &str) -> String {
    format!("::warning::{}", data(message))
}

pub fn error(title: &str, message: &str) -> String {
    format!("::error title={}::{}", property(title), data(message))
}

/// Appends the run's summary to `$GITHUB_STEP_SUMMARY`, when set.
pub fn append_summary(record: &Record, names: &[String]) -> Result<(), String> {
    let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(summary(record, names).as_bytes()))
        .map_err(|error| {
            format!(
                "cannot append to GITHUB_STEP_SUMMARY `{}`: {error}",
                path.to_string_lossy()
            )
        })
}

/// The run as Markdown: a heading with the outcome, a table of steps, the
/// rollbacks, the last line.
pub fn summary(record: &Record, names: &[String]) -> String {
    let (code, last) = record
        .finished
        .as_ref()
        .map_or((-1, ""), |f| (f.exit_code, f.summary.as_str()));
    let what = if record.dry_run {
        "dry-run of"
    } else {
        "run of"
    };
    let mut out = format!(
        "### upkeep {what} `{}` on `{}`: {} (exit {code})\n\n| # | step | result | time |\n| --- | --- | --- | --- |\n",
        record.pipeline,
        record.env,
        record.outcome().as_str().replace('_', " "),
    );
    for (index, name) in names.iter().enumerate() {
        let step = record.steps.iter().find(|s| s.number == index + 1);
        let result = match step.map(|s| s.state) {
            Some(State::Ok) => "ok",
            Some(State::Planned) => "would run",
            Some(State::Failed) => "**failed**",
            Some(State::Blocked) => "**blocked**",
            Some(State::FailedAllowed) => "failed (allowed)",
            Some(State::Skipped) => "skipped",
            Some(State::Running) => "interrupted",
            None => "not reached",
        };
        let time = step.map_or(String::new(), |s| format!("{:.1}s", s.took.as_secs_f64()));
        let _ = writeln!(
            out,
            "| {} | {} | {result} | {time} |",
            index + 1,
            cell(name)
        );
    }
    if !record.rollbacks.is_empty() {
        out.push_str("\n| rollback of | result | detail |\n| --- | --- | --- |\n");
        for rollback in &record.rollbacks {
            let result = if rollback.ok {
                "undone"
            } else {
                "**NOT UNDONE**"
            };
            let _ = writeln!(
                out,
                "| {}. {} | {result} | {} |",
                rollback.number,
                cell(&rollback.name),
                cell(&rollback.detail)
            );
        }
    }
    let _ = writeln!(out, "\n{}\n", cell(last));
    out
}

/// Text for a table cell: one line, no column break.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// Escapes a workflow command's message.
fn data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a workflow command's property value.
fn property(text: &str) -> String {
    data(text).replace(':', "%3A").replace(',', "%2C")
}
