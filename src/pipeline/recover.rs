//! `upkeep recover`: finishing what an interrupted run left. For each
//! journal without its end, it stops the process groups the run started,
//! removes the temporary files it had begun, then rolls back, newest
//! first, what was done and not yet undone, with the run's own
//! [`Runner`]; `--forget` closes a journal after a person put things right.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::admission::{put_back_interrupted_swaps, take_lock_from_the_dead};
use super::run::{Done, RunLog, Runner, Setup, stop_flag};
use crate::config::Config;
use crate::db::catalog::Schema;
use crate::error::code;
use crate::journal::{self, Entry, Journal};
use crate::pipeline::events::Events;
use crate::report::Printer;

/// `upkeep recover`: for each run that did not finish (interrupted, or
/// whose rollback did not complete), stops what it left running, then undoes
/// what it did and did not undo, newest first. With `forget`, only marks
/// them finished, for after a person has put things right by hand.
pub fn recover(config: &Config, printer: Printer, forget: bool) -> Result<i32> {
    let _lock = take_lock_from_the_dead(config)?;
    let swaps = put_back_interrupted_swaps(&config.select("all")?, printer)?;
    let journals = journal::unfinished(&config.state_dir)?;
    if journals.is_empty() {
        if !swaps {
            printer.note("nothing to recover: no interrupted run");
        }
        return Ok(code::OK);
    }
    let schema = config.schema.as_deref().map(Schema::load).transpose()?;
    let mut worst = code::OK;
    for path in journals {
        let entries = journal::read(&path)?;
        let status = match entries.first().cloned() {
            // Killed before it wrote its first line: nothing ran.
            None => close_empty(&path, printer)?,
            Some(_) if forget => forget_run(&path, &entries, printer)?,
            Some(Entry::RunStarted {
                run_id,
                pipeline,
                env,
                vars,
                ..
            }) => {
                let env = if env.is_empty() {
                    // A run without an environment.
                    crate::db::Env::none()
                } else {
                    config.env(&env).with_context(|| {
                        format!(
                            "journal `{}` names environment `{env}`, which upkeep.yaml no longer has",
                            path.display()
                        )
                    })?
                };
                let setup = Setup {
                    config,
                    env,
                    schema: schema.clone(),
                    vars: vars.clone().into_iter().collect(),
                    printer,
                    force: false,
                };
                let log = RunLog::open(config, &run_id)?;
                let journal = Journal::open(&path)?;
                // What the rollbacks copy is journaled too: a recover
                // killed in turn is recovered the same way.
                let _temporaries = journal.announce_temporaries()?;
                let mut runner = Runner {
                    setup: &setup,
                    journal: Rc::new(RefCell::new(journal)),
                    restore_point: RefCell::default(),
                    events: Events::new(printer, Some(log.append.try_clone()?)),
                    log,
                    vars: vars.into_iter().collect(),
                    stop: stop_flag(),
                    rolling_back: true,
                    changed: BTreeMap::new(),
                };
                runner.recover(&run_id, &pipeline, &entries)
            }
            Some(_) => bail!(
                "journal `{}` does not start with its run: look at the app by hand, then `upkeep recover --forget`",
                path.display()
            ),
        };
        worst = crate::error::most_serious(worst, status);
    }
    Ok(worst)
}

impl Runner<'_> {
    fn recover(&mut self, run_id: &str, pipeline: &str, entries: &[Entry]) -> i32 {
        let started = Instant::now();
        self.events
            .recovery_started(pipeline, &self.setup.env.name, run_id);
        // What the interrupted run started may still be running: stop it
        // before undoing anything.
        for group in journal::groups(entries) {
            if group.stop_if_alive() {
                self.events.output(
                    0,
                    &format!("stopped process group {} left by run {run_id}", group.pgid),
                );
            }
        }
        // What it had begun to write goes before the rollbacks, which may
        // need the room (a restore point copied back).
        self.remove_temporaries(run_id, entries);
        let done: Vec<Done> = journal::pending_undos(entries)
            .into_iter()
            .rev()
            .map(|(index, name, undo)| Done { index, name, undo })
            .collect();
        let rolled = self.roll_back(done);
        let (exit_code, summary) = if rolled.not_undone.is_empty() {
            (
                code::OK,
                format!(
                    "recovered run {run_id}{}: rolled back ({})",
                    interrupted_in(entries),
                    rolled.undone_text()
                ),
            )
        } else {
            (
                code::ROLLBACK_INCOMPLETE,
                format!(
                    "recovery of run {run_id}{} is incomplete: {}. A person must look: see the log in {}",
                    interrupted_in(entries),
                    rolled.incomplete_text(),
                    self.log.path.display()
                ),
            )
        };
        // In the journal, the run itself failed (it was rolled back).
        let (exit_code, summary) = self.close_as(exit_code, code::FAILED, summary);
        // Putting back what the run left is a change, when there was any.
        let changed = !rolled.undone.is_empty();
        self.events
            .run_finished(exit_code, &summary, started.elapsed(), changed);
        exit_code
    }
}

impl Runner<'_> {
    /// Removes the temporary files the run journaled and left (a backup's
    /// partial copy), each said on its own line. One that cannot be
    /// removed is said too, and does not stop the recovery.
    fn remove_temporaries(&mut self, run_id: &str, entries: &[Entry]) {
        for path in journal::temporaries(entries) {
            let line = match crate::fsx::remove_partial(&path) {
                Ok(()) => format!(
                    "removed `{}`, which run {run_id} had begun to write",
                    path.display()
                ),
                Err(error) => format!(
                    "cannot remove `{}`, which run {run_id} had begun to write: {error}; remove it by hand",
                    path.display()
                ),
            };
            self.events.output(0, &line);
        }
    }
}

/// ` (interrupted during step N `name`)`, or during its rollback, from the
/// journal; empty when the run ended on its own (a rollback left undone).
fn interrupted_in(entries: &[Entry]) -> String {
    let mut last = None;
    for entry in entries {
        match entry {
            Entry::StepStarted { step, name, .. } => last = Some((*step, name.clone(), false)),
            Entry::StepDone { .. } => last = None,
            Entry::RollbackStarted { step } => {
                let name = entries
                    .iter()
                    .find_map(|e| match e {
                        Entry::StepStarted { step: s, name, .. } if s == step => Some(name.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                last = Some((*step, name, true));
            }
            Entry::RollbackDone { .. } => last = None,
            _ => {}
        }
    }
    match last {
        Some((step, name, false)) => format!(" (interrupted during step {} `{name}`)", step + 1),
        Some((step, name, true)) => format!(
            " (interrupted while rolling back step {} `{name}`)",
            step + 1
        ),
        None => String::new(),
    }
}

fn close_empty(path: &std::path::Path, printer: Printer) -> Result<i32> {
    Journal::open(path)?.write(&Entry::RunFinished {
        exit_code: code::FAILED,
    })?;
    printer.note(&format!(
        "recovered run `{}`: it was interrupted before its first step, nothing to undo",
        path.display()
    ));
    Ok(code::OK)
}

fn forget_run(path: &std::path::Path, entries: &[Entry], printer: Printer) -> Result<i32> {
    // Half-written copies are of no use to the person who put things
    // right: only the undos are left to them.
    for temporary in journal::temporaries(entries) {
        if crate::fsx::remove_partial(&temporary).is_ok() {
            printer.note(&format!(
                "removed `{}`, which the run had begun to write",
                temporary.display()
            ));
        }
    }
    let pending = journal::pending_undos(entries);
    let names: Vec<String> = pending.iter().map(|(_, name, _)| name.clone()).collect();
    Journal::open(path)?.write(&Entry::RunFinished {
        exit_code: code::ROLLBACK_INCOMPLETE,
    })?;
    printer.note(&format!(
        "forgot run `{}`{}",
        path.display(),
        if names.is_empty() {
            String::new()
        } else {
            format!(" without undoing: {}", names.join(", "))
        }
    ));
    Ok(code::OK)
}
