//! `notify: { url: ..., on: [failure, rollback, success] }`: at the end of a
//! real run, a small JSON summary is POSTed to the URL (pipeline, env,
//! outcome, failed step, duration, host), through `crate::webhook`. A
//! webhook that is down or answers an error never changes the run's
//! outcome: it only adds a warning.

use serde_json::{Value, json};

use crate::pipeline::record::{Outcome, Record};
use crate::webhook;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub url: String,
    pub on: Vec<When>,
}

/// The `on:` words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Any run that did not succeed (rolled back or not).
    Failure,
    /// A run in which a rollback ran.
    Rollback,
    Success,
}

/// Without `on:`, the runs a person must hear about.
pub const DEFAULT_ON: &[When] = &[When::Failure, When::Rollback];

impl When {
    pub fn parse(word: &str) -> Option<When> {
        match word {
            "failure" => Some(When::Failure),
            "rollback" => Some(When::Rollback),
            "success" => Some(When::Success),
            _ => None,
        }
    }
}

impl Notify {
    /// Whether this run is one to notify.
    pub fn wants(&self, record: &Record) -> bool {
        let outcome = record.outcome();
        self.on.iter().any(|when| match when {
            When::Success => outcome == Outcome::Success,
            When::Failure => outcome != Outcome::Success,
            When::Rollback => !record.rollbacks.is_empty(),
        })
    }

    /// POSTs the summary of `record`; the error says why it was not taken.
    pub fn send(&self, record: &Record) -> Result<(), String> {
        webhook::post(&self.url, &body(record))
    }
}

/// What the webhook receives.
pub fn body(record: &Record) -> Value {
    let failed = record.failed_step();
    json!({
        "pipeline": record.pipeline,
        "env": record.env,
        "run_id": record.run_id,
        "outcome": record.outcome().as_str(),
        "exit_code": record.finished.as_ref().map(|f| f.exit_code),
        "failed_step": failed.map(|s| s.name.as_str()),
        "reason": failed.map(|s| s.detail.as_str()),
        "summary": record.finished.as_ref().map(|f| f.summary.as_str()),
        // The summary names them; why each failed is on its own.
        "not_undone": record.rollbacks.iter().filter(|r| !r.ok)
            .map(|r| json!({"step": r.name, "reason": r.detail}))
            .collect::<Vec<_>>(),
        "duration_ms": u64::try_from(record.took().as_millis()).unwrap_or(u64::MAX),
        "host": webhook::host(),
    })
}
