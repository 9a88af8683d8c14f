//! `--junit FILE`: a run as a JUnit XML report, for CI test views. One test
//! case per step: passed, failed (with the step's last output lines),
//! skipped (a `when:` not met, or not reached after a failure); then one
//! test case per rollback. A step that failed with `allow_failure` passes,
//! its failure noted in its output.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::fsx;
use crate::pipeline::record::{Record, State};

/// Writes the report of `record` to `path`, atomically.
pub fn write(record: &Record, names: &[String], path: &Path) -> Result<()> {
    fsx::write_atomic(path, render(record, names).as_bytes())
}

/// The XML of a run whose steps are named `names` (in order).
pub fn render(record: &Record, names: &[String]) -> String {
    let suite = format!(
        "upkeep {} {} ({})",
        if record.dry_run { "dry-run" } else { "run" },
        record.pipeline,
        record.env
    );
    let mut cases = String::new();
    let (mut failures, mut skipped) = (0, 0);
    for (index, name) in names.iter().enumerate() {
        let number = index + 1;
        let step = record.steps.iter().find(|s| s.number == number);
        let time = step.map_or(0.0, |s| s.took.as_secs_f64());
        let _ = write!(
            cases,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{time:.3}\"",
            escape(&record.pipeline),
            escape(&format!("{number:02}. {name}"))
        );
        let output = step.map_or(String::new(), |s| lines(&s.tail));
        match step.map(|s| (s.state, s.detail.as_str())) {
            Some((State::Ok | State::Planned, detail)) => {
                let _ = writeln!(cases, ">{}</testcase>", system_out(&join(detail, &output)));
            }
            Some((State::FailedAllowed, detail)) => {
                let note = format!("failed (allowed to: the run went on): {detail}");
                let _ = writeln!(cases, ">{}</testcase>", system_out(&join(&note, &output)));
            }
            Some((State::Failed | State::Blocked | State::Running, detail)) => {
                failures += 1;
                let _ = writeln!(
                    cases,
                    ">\n      <failure message=\"{}\">{}</failure>{}\n    </testcase>",
                    escape(detail),
                    escape(&output),
                    system_out(&output)
                );
            }
            Some((State::Skipped, reason)) => {
                skipped += 1;
                let _ = writeln!(
                    cases,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    escape(reason)
                );
            }
            None => {
                skipped += 1;
                let _ = writeln!(
                    cases,
                    ">\n      <skipped message=\"not reached: the run stopped before this step\"/>\n    </testcase>"
                );
            }
        }
    }
    for rollback in &record.rollbacks {
        let _ = write!(
            cases,
            "    <testcase classname=\"{}.rollback\" name=\"{}\" time=\"{:.3}\"",
            escape(&record.pipeline),
            escape(&format!(
                "rollback of {:02}. {}",
                rollback.number, rollback.name
            )),
            rollback.took.as_secs_f64()
        );
        let output = lines(&rollback.tail);
        if rollback.ok {
            let _ = writeln!(
                cases,
                ">{}</testcase>",
                system_out(&join(&rollback.detail, &output))
            );
        } else {
            failures += 1;
            let _ = writeln!(
                cases,
                ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                escape(&format!("NOT UNDONE: {}", rollback.detail)),
                escape(&output)
            );
        }
    }
    let mut tests = names.len() + record.rollbacks.len();
    // A run that failed is never all green: when no step or rollback shows
    // why (it was refused before its first step), the run itself does.
    if let Some(finished) = record.finished.as_ref().filter(|f| f.exit_code != 0)
        && failures == 0
    {
        tests += 1;
        failures += 1;
        let _ = writeln!(
            cases,
            "    <testcase classname=\"{}\" name=\"upkeep run\" time=\"0\">\n      <failure message=\"{}\"/>\n    </testcase>",
            escape(&record.pipeline),
            escape(&format!(
                "exit {}: {}",
                finished.exit_code, finished.summary
            ))
        );
    }
    let time = record.took().as_secs_f64();
    let summary = record.finished.as_ref().map_or(String::new(), |f| {
        format!("exit {}: {}", f.exit_code, f.summary)
    });
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <testsuites name=\"upkeep\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time:.3}\">\n  \
         <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time:.3}\" timestamp=\"{}\">\n\
         {cases}    {}\n  </testsuite>\n</testsuites>\n",
        escape(&suite),
        jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S"),
        system_out(&summary)
    )
}

/// A step's (or rollback's) last output lines, as text.
fn lines(tail: &std::collections::VecDeque<String>) -> String {
    tail.iter().map(|line| format!("{line}\n")).collect()
}

fn join(detail: &str, output: &str) -> String {
    match (detail.is_empty(), output.is_empty()) {
        (true, _) => output.to_string(),
        (false, true) => detail.to_string(),
        (false, false) => format!("{detail}\n{output}"),
    }
}

fn system_out(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("<system-out>{}</system-out>", escape(text))
    }
}

/// Text for an XML attribute or element: markup escaped, and the control
/// characters XML 1.0 forbids (terminal escapes) dropped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_markup_and_drops_terminal_escapes() {
        assert_eq!(
            escape("a<b & \"c\" \u{1b}[31mred"),
            "a&lt;b &amp; &quot;c&quot; [31mred"
        );
    }
}
