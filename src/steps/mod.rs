//! Built-in step types (`uses:`). One file per type, each implementing
//! [`StepType`]; adding a type touches its file and the [`REGISTRY`] line.
//!
//! Shell steps (`run:`) are not a step type: they are commands, run by
//! `pipeline::shell`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;

pub use crate::action::Undo;
use crate::config::Config;
use crate::db::Env;
use crate::db::catalog::Schema;
use crate::progress::Progress;

mod app;
mod backup;
mod git_pull;
mod health;
mod integrity;
mod migrate;
mod pending;
mod push;
mod repair;
mod restore;

/// A step's `with:` parameters, after `${NAME}` substitution.
pub type With = BTreeMap<String, String>;

/// What a step type needs from the run.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub config: &'a Config,
    pub env: &'a Env,
    pub schema: Option<&'a Schema>,
    pub progress: Progress,
    /// The restore point of `migrate`, and a live copy taken for it.
    pub restore_point: &'a RefCell<RestorePoint>,
    /// Journals how to undo what the step is about to do, before it does
    /// it: a step that fails halfway, or a crash, is then still undone.
    pub record: &'a dyn Fn(&Undo) -> Result<()>,
    /// The run's variables: the environment of the commands a step runs
    /// (see [`StepType::commands`]), as for `run:` steps.
    pub vars: &'a [(String, String)],
}

/// The run's restore point.
#[derive(Default)]
pub struct RestorePoint {
    /// The backup this run made of its environment, or put in place by its
    /// repair.
    pub path: Option<PathBuf>,
    /// A live copy of the database taken by `stop-app` before it stopped
    /// the app (`with: { restore_point: live }`): the next `backup` of its
    /// environment tops it up instead of copying the whole file.
    pub prepared: Option<crate::db::topup::Prepared>,
    /// Why the live copy was given up before the backup, and for which
    /// environment: the integrity check could not top it up.
    pub given_up: Option<(String, String)>,
}

/// A `record` for when nothing is journaled (dry-runs, undos).
pub fn no_record(_: &Undo) -> Result<()> {
    Ok(())
}

/// What a dry-run found out about a step, without changing anything.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// What the step would do.
    pub summary: String,
    /// Why the real run would fail here, if the probe can tell.
    pub blocker: Option<String>,
    /// The step's outcome, when a read-only probe can tell it in advance.
    pub outcome: Option<bool>,
    /// Whether the step would change the app's code or data (see
    /// [`Ran::changed`]), when a read-only probe can tell it in advance.
    pub changes: Option<bool>,
    /// The run would end at this step, and why (see [`Ran::ends_run`]),
    /// when a read-only probe can tell it in advance.
    pub ends_run: Option<String>,
}

impl Plan {
    /// A step that cannot run at all.
    pub fn blocked(summary: &str, error: &anyhow::Error) -> Plan {
        Plan {
            summary: summary.to_string(),
            blocker: Some(crate::error::describe(error)),
            outcome: None,
            changes: None,
            ends_run: None,
        }
    }
}

/// What a step did: a line for people, how to undo it, and whether it
/// changed the app.
#[derive(Debug, Clone)]
pub struct Ran {
    pub detail: String,
    pub undo: Undo,
    /// Whether the step changed the app's code or its data: a run reports
    /// `changed` when one of its steps did, so that a rerun with nothing new
    /// is `changed: false`. Checks, backups (a copy beside the data), and
    /// stopping or starting the app change neither.
    pub changed: bool,
    /// The run has nothing left to do, and why: it ends after this step,
    /// successfully, the later steps skipped (`pending`, when nothing is
    /// new), unless it was asked to run everything (`run --force`).
    pub ends_run: Option<String>,
}

impl Ran {
    /// A step that changed the app's code or data.
    pub fn changed(detail: String, undo: Undo) -> Ran {
        Ran {
            detail,
            undo,
            changed: true,
            ends_run: None,
        }
    }

    /// A step that left the app's code and data as they were (it may still
    /// have something to undo: a stopped app is started again).
    pub fn unchanged(detail: String, undo: Undo) -> Ran {
        Ran {
            detail,
            undo,
            changed: false,
            ends_run: None,
        }
    }
}

pub trait StepType: Sync {
    fn name(&self) -> &'static str;
    /// The keys `with:` accepts.
    fn keys(&self) -> &'static [&'static str];
    /// The keys of `with:` whose value is run as a shell command. It gets
    /// the variables as environment, and `${NAME}` is refused in it when
    /// the pipeline is loaded: a value pasted into shell text could run as
    /// code (`$(...)`, `;`, backticks).
    fn commands(&self) -> &'static [&'static str] {
        &[]
    }
    /// Checks `with:` before the run. A value holding `${NAME}` is only known
    /// at run time: checks let it pass (see [`later`]).
    fn check(&self, _with: &With) -> Result<(), String> {
        Ok(())
    }
    /// Whether the step works on the run's environment (its database or
    /// its app) when `with:` names none: a pipeline of steps that do not
    /// runs without one.
    fn needs_env(&self) -> bool {
        true
    }
    /// Whether a step of this type can change the app's code or data at
    /// all (see [`Ran::changed`]): a dry-run counts those that cannot as
    /// no change, without asking their plan.
    fn may_change(&self) -> bool {
        true
    }
    /// A dry-run: read-only probes and what the step would do.
    fn plan(&self, ctx: &Ctx, with: &With) -> Plan;
    /// Does the step; the result says how to undo it, and whether it
    /// changed the app (see [`Ran::changed`]).
    fn run(&self, ctx: &Ctx, with: &With) -> Result<Ran>;
    /// Undoes what `run` did.
    fn undo(&self, _ctx: &Ctx, _undo: &Undo) -> Result<String> {
        Ok("nothing to undo".to_string())
    }
}

/// Every built-in step type.
static REGISTRY: &[&dyn StepType] = &[
    &integrity::Integrity,
    &backup::Backup,
    &restore::Restore,
    &repair::Repair,
    &health::Health,
    &git_pull::GitPull,
    &migrate::Migrate,
    &pending::Pending,
    &app::StopApp,
    &app::StartApp,
    &push::Push,
];

pub fn find(name: &str) -> Option<&'static dyn StepType> {
    REGISTRY.iter().copied().find(|step| step.name() == name)
}

pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|step| step.name()).collect()
}

/// The environment a step works on: `with: { env: NAME }`, else the run's.
fn target_env(ctx: &Ctx, with: &With) -> Result<Env> {
    match with.get("env") {
        Some(name) => ctx.config.env(name),
        None => Ok(ctx.env.clone()),
    }
}

/// Whether a `with:` value holds a variable, known only at run time.
pub fn later(value: &str) -> bool {
    value.contains("${")
}

/// Parses a non-negative count from `with:`.
fn count(with: &With, key: &str) -> Result<Option<u32>, String> {
    with.get(key)
        .filter(|text| !later(text))
        .map(|text| {
            text.parse::<u32>()
                .map_err(|_| format!("`{key}` must be a whole number, not `{text}`"))
        })
        .transpose()
}

/// Parses a boolean from `with:`.
fn flag(with: &With, key: &str) -> Result<bool, String> {
    match with.get(key).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some(text) if later(text) => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(format!("`{key}` must be true or false, not `{other}`")),
    }
}
