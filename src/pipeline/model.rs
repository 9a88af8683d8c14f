//! What a pipeline is, once loaded and checked.

use std::path::PathBuf;
use std::time::Duration;

use crate::action::{Action, Outcome};
use crate::yaml::Pos;

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub path: PathBuf,
    pub name: String,
    pub description: Option<String>,
    /// The environment the run works on, unless `--env` says otherwise.
    pub env: Option<String>,
    pub vars: Vec<(String, String)>,
    /// Where to POST a summary of the run, and when.
    pub notify: Option<crate::pipeline::notify::Notify>,
    pub steps: Vec<Step>,
}

impl Pipeline {
    pub fn step_names(&self) -> Vec<String> {
        self.steps.iter().map(|step| step.name.clone()).collect()
    }
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: Option<String>,
    pub name: String,
    pub pos: Pos,
    pub action: Action,
    /// The rollback written in the file; built-in types bring their own too.
    pub rollback: Option<Action>,
    pub when: Option<When>,
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub allow_failure: bool,
    /// Whether a `run:` step may change the app's code or data: a command
    /// is taken to, unless the step says `changes: false` (it only probes,
    /// bounces the app or notifies). Built-in step types say it themselves.
    pub changes: bool,
}

/// `when: ID.ok | ID.failed | ID.skipped`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct When {
    pub step: String,
    pub outcome: Outcome,
}

impl When {
    /// Why a step is skipped: "`when: check.ok`, and `check` was failed".
    pub fn unmet(&self, verb: &str, actual: Outcome) -> String {
        format!(
            "`when: {}.{}`, and `{}` {verb} {}",
            self.step,
            self.outcome.as_str(),
            self.step,
            actual.as_str()
        )
    }
}
