//! Dry-run: what a run would do, found out without changing anything.
//!
//! Everything is loaded and checked; built-in steps run their read-only
//! probes (integrity checks open the database read-only, a backup looks at
//! free space, a restore at the backups); shell steps are checked for a
//! command that exists. Conditions are evaluated where a probe tells the
//! outcome in advance. No lock, no journal, no log, no file is written.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Result;

use crate::action::{Action, Outcome};
use crate::error::code;
use crate::pipeline::events::{Events, Reports};
use crate::pipeline::model::Pipeline;
use crate::pipeline::run::{Setup, substitute};
use crate::pipeline::shell;
use crate::steps::{self, With};

/// What is known in advance of a step's outcome.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    Known(Outcome),
    Unknown,
}

pub fn dry_run(pipeline: &Pipeline, setup: &Setup, reports: Reports) -> Result<i32> {
    let started = Instant::now();
    let mut events = Events::new(setup.printer, None);
    events.expect(pipeline.step_names(), reports);
    events.run_started(&pipeline.name, &setup.env.name, "dry-run", true);
    let ctx = Ctx::new(setup);
    let mut expected: HashMap<String, Expect> = HashMap::new();
    let mut blockers = Vec::new();
    let mut changed = false;
    // What a real run would change: the steps that would, and whether one
    // could not tell.
    let mut would_change: Vec<&str> = Vec::new();
    let mut unknown = false;
    for (index, step) in pipeline.steps.iter().enumerate() {
        let condition = step.when.as_ref().map(|when| {
            let known = expected
                .get(&when.step)
                .copied()
                .unwrap_or(Expect::Known(Outcome::Skipped));
            (when, known)
        });
        let verdict_prefix = match condition {
            None => String::new(),
            Some((when, Expect::Known(outcome))) if outcome == when.outcome => {
                format!("runs: `{}` will be {}; ", when.step, outcome.as_str())
            }
            Some((when, Expect::Known(outcome))) => {
                let reason = format!("would be skipped: {}", when.unmet("will be", outcome));
                events.plan_step(index, &step.name, &step.action.describe(), &reason, None);
                if let Some(id) = &step.id {
                    expected.insert(id.clone(), Expect::Known(Outcome::Skipped));
                }
                continue;
            }
            Some((when, Expect::Unknown)) => format!(
                "runs only if `{}` is {} (known only in a real run); ",
                when.step,
                when.outcome.as_str()
            ),
        };
        let Probed {
            mut summary,
            blocker,
            outcome,
            changes,
            ends_run,
        } = ctx.probe(&step.action);
        // A command changes the app unless its step says otherwise.
        match changes.map(|changes| changes && step.changes) {
            Some(true) => would_change.push(&step.name),
            Some(false) => {}
            None => unknown = true,
        }
        // A probe sees the state of now: it tells the outcome only while no
        // earlier step could have changed that state.
        let outcome = match outcome {
            _ if changed => {
                if outcome.is_some() {
                    summary.push_str(" (earlier steps may change this)");
                }
                Expect::Unknown
            }
            Some(true) => Expect::Known(Outcome::Ok),
            Some(false) => Expect::Known(Outcome::Failed),
            None => Expect::Unknown,
        };
        let read_only = matches!(&step.action, Action::Builtin { uses, .. } if uses == "integrity" || uses == "pending");
        changed |= !read_only;
        let conditional = step
            .when
            .as_ref()
            .is_some_and(|_| condition.is_some_and(|(_, known)| known == Expect::Unknown));
        let expect = if conditional {
            Expect::Unknown
        } else {
            outcome
        };
        if let Some(id) = &step.id {
            expected.insert(id.clone(), expect);
        }
        let mut verdict = format!("{verdict_prefix}{summary}");
        let mut blocker = blocker;
        if let Some(rollback) = &step.rollback {
            verdict.push_str(&format!("; rollback: {}", rollback.describe()));
            // A rollback that cannot run is found out too late in a real run.
            if let Action::Shell { run } = rollback
                && let Err(missing) = shell::program_exists(run, &setup.config.root)
            {
                blocker.get_or_insert(format!("its rollback cannot run: {missing}"));
            }
        }
        // A step allowed to fail does not stop the run.
        if step.allow_failure
            && let Some(reason) = blocker.take()
        {
            verdict.push_str(&format!("; would fail ({reason}), which is allowed"));
        }
        if outcome == Expect::Known(Outcome::Failed) && !step.allow_failure && !conditional {
            let reason = format!("step {} `{}` would fail", index + 1, step.name);
            events.plan_step(
                index,
                &step.name,
                &step.action.describe(),
                &verdict,
                Some(&reason),
            );
            blockers.push(format!("step {} `{}`", index + 1, step.name));
            continue;
        }
        if blocker.is_some() {
            blockers.push(format!("step {} `{}`", index + 1, step.name));
        }
        // A step that would end the run: the later ones would not run.
        let ends_run = ends_run.filter(|_| !conditional && blocker.is_none());
        if ends_run.is_some() {
            if setup.force {
                verdict.push_str("; but --force: the run would go on");
            } else {
                verdict.push_str(" (`--force` runs the rest)");
            }
        }
        events.plan_step(
            index,
            &step.name,
            &step.action.describe(),
            &verdict,
            blocker.as_deref(),
        );
        if ends_run.is_some() && !setup.force {
            for (at, later) in pipeline.steps.iter().enumerate().skip(index + 1) {
                events.plan_step(
                    at,
                    &later.name,
                    &later.action.describe(),
                    "would be skipped: the run would end before it (`--force` runs it)",
                    None,
                );
            }
            break;
        }
    }
    let code = if ctx.bad_input.get() {
        code::BAD_INPUT
    } else if blockers.is_empty() {
        code::OK
    } else {
        code::FAILED
    };
    let would = if !would_change.is_empty() {
        format!("; a real run would change: {}", would_change.join(", "))
    } else if unknown {
        String::new()
    } else {
        "; a real run would change nothing".to_string()
    };
    let summary = if blockers.is_empty() {
        format!(
            "dry-run: {} step(s) planned, nothing changed{would}",
            pipeline.steps.len()
        )
    } else {
        // Each blocker's reason is on its step's BLOCKER line.
        format!(
            "dry-run found {} blocker(s), at {}; nothing changed",
            blockers.len(),
            blockers.join(", ")
        )
    };
    // A dry-run changes nothing; Ansible's check mode asks what a real
    // run would.
    let would_change = if !would_change.is_empty() {
        Some(true)
    } else if unknown {
        None
    } else {
        Some(false)
    };
    events.dry_run_finished(code, &summary, started.elapsed(), would_change);
    Ok(code)
}

/// What a probe found out about a step (see [`Ctx::probe`]).
struct Probed {
    summary: String,
    blocker: Option<String>,
    outcome: Option<bool>,
    changes: Option<bool>,
    ends_run: Option<String>,
}

impl Probed {
    fn blocked(uses: &str, blocker: String) -> Probed {
        Probed {
            summary: format!("uses {uses}"),
            blocker: Some(blocker),
            outcome: None,
            changes: None,
            ends_run: None,
        }
    }
}

struct Ctx<'a> {
    setup: &'a Setup<'a>,
    vars: Vec<(String, String)>,
    /// A value was refused: the dry-run's exit code is bad input.
    bad_input: std::cell::Cell<bool>,
}

impl<'a> Ctx<'a> {
    fn new(setup: &'a Setup<'a>) -> Ctx<'a> {
        Ctx {
            setup,
            vars: setup.environment("dry-run", true),
            bad_input: std::cell::Cell::new(false),
        }
    }

    /// What the action would do, what would stop it, its outcome, whether
    /// it would change the app and end the run, when a read-only probe can
    /// tell.
    fn probe(&self, action: &Action) -> Probed {
        match action {
            Action::Shell { run } => Probed {
                summary: format!("would run `{}`", crate::redact::urls(run)),
                blocker: shell::program_exists(run, &self.setup.config.root).err(),
                outcome: None,
                changes: Some(true),
                ends_run: None,
            },
            Action::Builtin { uses, with } => {
                let Some(step) = steps::find(uses) else {
                    return Probed::blocked(uses, format!("unknown step type `{uses}`"));
                };
                let with: Result<With> = with
                    .iter()
                    .map(|(key, value)| Ok((key.clone(), substitute(value, &self.vars)?)))
                    .collect();
                let with = match with {
                    Ok(with) => with,
                    Err(error) => {
                        return Probed::blocked(uses, crate::error::describe(&error));
                    }
                };
                // What load time let pass as `${NAME}` is checked now, and
                // the probes never see a refused value.
                if let Err(message) = step.check(&with) {
                    self.bad_input.set(true);
                    return Probed::blocked(
                        uses,
                        format!(
                            "`with:` once its variables are substituted: {message}; fix the variable's value"
                        ),
                    );
                }
                let restore_point = std::cell::RefCell::default();
                let ctx = steps::Ctx {
                    config: self.setup.config,
                    env: &self.setup.env,
                    schema: self.setup.schema.as_ref(),
                    progress: crate::progress::Progress::hidden(),
                    restore_point: &restore_point,
                    record: &steps::no_record,
                    vars: &self.vars,
                };
                let plan = step.plan(&ctx, &with);
                let changes = if step.may_change() {
                    plan.changes
                } else {
                    Some(false)
                };
                Probed {
                    summary: format!("would {}", plan.summary),
                    blocker: plan.blocker,
                    outcome: plan.outcome,
                    changes,
                    ends_run: plan.ends_run,
                }
            }
        }
    }
}
