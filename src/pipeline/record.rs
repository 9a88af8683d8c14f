//! What happened in a run, kept as it happens, for the reports written at
//! its end: the JUnit XML of `--junit`, GitHub Actions' step summary, and
//! the `notify:` webhook.

use std::collections::VecDeque;
use std::time::Duration;

/// How many of a step's last output lines a report keeps.
const TAIL: usize = 30;

#[derive(Debug, Default)]
pub struct Record {
    pub pipeline: String,
    pub env: String,
    pub run_id: String,
    pub dry_run: bool,
    /// In order; a retried step keeps its last attempt.
    pub steps: Vec<StepRecord>,
    pub rollbacks: Vec<RollbackRecord>,
    /// Between a rollback's start and end: output is the rollback's.
    pub rolling_back: bool,
    pub finished: Option<Finished>,
}

#[derive(Debug)]
pub struct StepRecord {
    /// 1-based, as printed.
    pub number: usize,
    pub name: String,
    pub state: State,
    pub took: Duration,
    pub detail: String,
    pub tail: VecDeque<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Ok,
    Failed,
    /// Failed, and `allow_failure` let the run go on.
    FailedAllowed,
    Skipped,
    /// Dry-run: would run.
    Planned,
    /// Dry-run: something would stop it.
    Blocked,
}

#[derive(Debug)]
pub struct RollbackRecord {
    pub number: usize,
    pub name: String,
    pub ok: bool,
    pub took: Duration,
    pub detail: String,
    pub tail: VecDeque<String>,
}

#[derive(Debug)]
pub struct Finished {
    pub exit_code: i32,
    pub summary: String,
    pub took: Duration,
}

/// How a run ended, as `notify: on:` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Failed, and every rollback completed.
    RolledBack,
    /// Failed with nothing to undo, or a rollback did not complete.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::RolledBack => "rolled_back",
            Outcome::Failed => "failed",
        }
    }
}

impl Record {
    pub fn step(&mut self, number: usize, name: &str, state: State) -> &mut StepRecord {
        if let Some(at) = self.steps.iter().position(|s| s.number == number) {
            let step = &mut self.steps[at];
            step.state = state;
            return step;
        }
        self.steps.push(StepRecord {
            number,
            name: name.to_string(),
            state,
            took: Duration::ZERO,
            detail: String::new(),
            tail: VecDeque::new(),
        });
        let last = self.steps.len() - 1;
        &mut self.steps[last]
    }

    /// A line of output of step `number`, or of its rollback while one runs.
    pub fn output(&mut self, number: usize, line: &str) {
        let tail = if self.rolling_back {
            self.rollbacks.last_mut().map(|r| &mut r.tail)
        } else {
            self.steps
                .iter_mut()
                .rev()
                .find(|s| s.number == number)
                .map(|s| &mut s.tail)
        };
        if let Some(tail) = tail {
            if tail.len() == TAIL {
                tail.pop_front();
            }
            tail.push_back(line.to_string());
        }
    }

    /// The first step that failed (not allowed to), with why.
    pub fn failed_step(&self) -> Option<&StepRecord> {
        self.steps
            .iter()
            .find(|s| matches!(s.state, State::Failed | State::Blocked))
    }

    pub fn outcome(&self) -> Outcome {
        match self.finished.as_ref().map(|f| f.exit_code) {
            Some(0) => Outcome::Success,
            Some(1 | 2) if !self.rollbacks.is_empty() => Outcome::RolledBack,
            _ => Outcome::Failed,
        }
    }

    pub fn took(&self) -> Duration {
        self.finished.as_ref().map_or(Duration::ZERO, |f| f.took)
    }
}
