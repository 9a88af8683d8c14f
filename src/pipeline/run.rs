//! Running a pipeline, and rolling it back when a step fails.
//!
//! Where rollback happens: [`Runner::roll_back`]. When a step fails (after
//! its retries), its own rollback runs first (it may have half happened),
//! then those of the steps already done, newest first. A rollback that fails
//! does not stop the others; the run then exits 3. Every step's start, end
//! and rollback goes to the journal before the run moves on, so that
//! `upkeep recover` can finish the job after a crash (see `recover`, which
//! rolls back with this runner; the lock and the refusal of unfinished runs
//! are in `admission`).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::action::{Action, Outcome, Undo};
use crate::config::Config;
use crate::db::Env;
use crate::db::catalog::Schema;
use crate::error::code;
use crate::journal::{self, Entry, Journal, Undoing};
use crate::pipeline::events::{Events, Reports, Status};
use crate::pipeline::model::{Pipeline, Step};
use crate::pipeline::shell::{self, Ended, Output};
use crate::redact;
use crate::report::Printer;
use crate::steps::{self, Ctx, RestorePoint, With};

/// Everything a run needs besides the pipeline.
pub struct Setup<'a> {
    pub config: &'a Config,
    pub env: Env,
    pub schema: Option<Schema>,
    /// The pipeline's `vars`, then `--var` overrides.
    pub vars: Vec<(String, String)>,
    pub printer: Printer,
    /// `run --force`: no step ends the run early (see [`Ran::ends_run`]).
    ///
    /// [`Ran::ends_run`]: crate::steps::Ran::ends_run
    pub force: bool,
}

impl Setup<'_> {
    fn ctx<'a>(
        &'a self,
        restore_point: &'a RefCell<RestorePoint>,
        record: &'a dyn Fn(&Undo) -> Result<()>,
        vars: &'a [(String, String)],
    ) -> Ctx<'a> {
        Ctx {
            config: self.config,
            env: &self.env,
            schema: self.schema.as_ref(),
            progress: self.printer.progress(),
            restore_point,
            record,
            vars,
        }
    }

    /// The variables commands see: the run's own, then the pipeline's.
    pub fn environment(&self, run_id: &str, dry_run: bool) -> Vec<(String, String)> {
        let mut vars = vec![
            ("UPKEEP_ENV".to_string(), self.env.name.clone()),
            ("UPKEEP_DB".to_string(), self.env.db.display().to_string()),
            ("UPKEEP_RUN_ID".to_string(), run_id.to_string()),
            ("UPKEEP_DRY_RUN".to_string(), dry_run.to_string()),
        ];
        vars.extend(self.vars.iter().cloned());
        vars
    }
}

/// Replaces `${NAME}` in a `with:` value by the variable's value.
pub fn substitute(text: &str, vars: &[(String, String)]) -> Result<String> {
    let mut result = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        result.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| anyhow!("unclosed `${{` in `{}`", redact::urls(text)))?;
        let name = &after[..end];
        let value = vars
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
            .ok_or_else(|| anyhow!("`${{{name}}}` in `{}` is not a variable: define it in `vars:` or with --var {name}=...", redact::urls(text)))?;
        result.push_str(value);
        rest = &after[end + 1..];
    }
    result.push_str(rest);
    Ok(result)
}

fn substitute_all(with: &BTreeMap<String, String>, vars: &[(String, String)]) -> Result<With> {
    with.iter()
        .map(|(key, value)| Ok((key.clone(), substitute(value, vars)?)))
        .collect()
}

/// Stops the current step on SIGINT / SIGTERM, then rolls back.
pub(super) fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
    }
    stop
}

/// Runs `pipeline` for real. Returns the exit code.
pub fn run(
    pipeline: &Pipeline,
    setup: &Setup,
    lock_wait: Option<Duration>,
    reports: Reports,
    ask: bool,
) -> Result<i32> {
    let config = setup.config;
    let _lock = super::admission::take_lock(
        config,
        &format!("upkeep run {} ({})", pipeline.name, setup.env.name),
        lock_wait,
    )?;
    super::admission::refuse_if_unfinished(config)?;
    super::admission::put_back_interrupted_swaps(&config.select("all")?, setup.printer)?;
    // Asked once the run is sure to start: not busy, nothing to recover.
    if ask && !crate::pipeline::confirm::confirmed(pipeline, setup)? {
        return Ok(code::FAILED);
    }
    let run_id = journal::new_run_id();
    let mut journal = Journal::create(&config.state_dir, &run_id)?;
    let log = RunLog::open(config, &run_id)?;
    let vars = setup.environment(&run_id, false);
    journal.write(&Entry::RunStarted {
        run_id: run_id.clone(),
        pipeline: pipeline.name.clone(),
        path: pipeline.path.clone(),
        env: setup.env.name.clone(),
        vars: vars.iter().cloned().collect(),
        started_at: jiff::Timestamp::now().to_string(),
    })?;
    let _temporaries = journal.announce_temporaries()?;
    let mut runner = Runner {
        setup,
        journal: Rc::new(RefCell::new(journal)),
        restore_point: RefCell::default(),
        events: Events::new(setup.printer, Some(log.append.try_clone()?)),
        log,
        vars,
        stop: stop_flag(),
        rolling_back: false,
        changed: BTreeMap::new(),
    };
    let started = Instant::now();
    runner.events.expect(pipeline.step_names(), reports);
    runner
        .events
        .run_started(&pipeline.name, &setup.env.name, &run_id, false);
    let (exit_code, summary) = runner.steps(pipeline);
    let (exit_code, summary) = runner.close(exit_code, summary);
    let changed = !runner.changed.is_empty();
    runner
        .events
        .run_finished(exit_code, &summary, started.elapsed(), changed);
    Ok(exit_code)
}

pub(super) struct Runner<'a> {
    pub(super) setup: &'a Setup<'a>,
    pub(super) journal: Rc<RefCell<Journal>>,
    /// See [`Ctx::restore_point`].
    pub(super) restore_point: RefCell<RestorePoint>,
    pub(super) events: Events,
    pub(super) log: RunLog,
    pub(super) vars: Vec<(String, String)>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) rolling_back: bool,
    /// The steps that changed the app's code or data, and were not undone
    /// (by number, with their names): the run's `changed`.
    pub(super) changed: BTreeMap<usize, String>,
}

/// The run's log, `state_dir/logs/RUN_ID.log`: opened once for appending
/// (events, and every command's output) and once for following it.
pub(super) struct RunLog {
    pub(super) path: PathBuf,
    pub(super) append: std::fs::File,
    pub(super) follow: std::fs::File,
}

impl RunLog {
    pub(super) fn open(config: &Config, run_id: &str) -> Result<RunLog> {
        let logs = config.state_dir.join("logs");
        crate::fsx::create_private_dir(&logs)?;
        let path = logs.join(format!("{run_id}.log"));
        let append = crate::fsx::private_options()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open run log `{}`", path.display()))?;
        let follow = std::fs::File::open(&path)
            .with_context(|| format!("cannot read run log `{}`", path.display()))?;
        Ok(RunLog {
            path,
            append,
            follow,
        })
    }
}

/// What an action did: its line for people, and whether it changed the
/// app's code or data (a command is taken to; see [`Step::changes`]).
struct Did {
    detail: String,
    changed: bool,
    /// See [`crate::steps::Ran::ends_run`].
    ends_run: Option<String>,
}

/// How a step ended, after its retries.
struct Attempted {
    result: Result<()>,
    /// A built-in type's own undo (see [`Runner::attempt`]).
    undo: Option<Undoing>,
    /// Whether it changed the app's code or data; for a failed step,
    /// whether it may have: a command, or a step type that recorded an undo
    /// before it failed.
    changed: bool,
    /// See [`crate::steps::Ran::ends_run`].
    ends_run: Option<String>,
}

/// A step that ran, with how to undo it.
pub(super) struct Done {
    pub(super) index: usize,
    pub(super) name: String,
    pub(super) undo: Undoing,
}

/// How the steps went, before any rollback.
enum Flow {
    Finished(String),
    /// Why, and whether it was bad input.
    Failed(String, bool),
}

/// What a rollback undid, and what it could not undo (why is on the
/// rollback's own line, and in the log).
#[derive(Default)]
pub(super) struct RolledBack {
    pub(super) undone: Vec<String>,
    pub(super) not_undone: Vec<String>,
}

impl RolledBack {
    pub(super) fn undone_text(&self) -> String {
        if self.undone.is_empty() {
            "nothing to undo".to_string()
        } else {
            format!("undone: {}", self.undone.join(", "))
        }
    }

    pub(super) fn incomplete_text(&self) -> String {
        let not_undone = format!("not undone: {}", self.not_undone.join(", "));
        if self.undone.is_empty() {
            not_undone
        } else {
            format!("{not_undone}; {}", self.undone_text())
        }
    }
}

/// A rollback runs to its end: signals stop steps, never rollbacks.
static NEVER: AtomicBool = AtomicBool::new(false);

impl Runner<'_> {
    /// Runs the steps, and rolls back when one fails. A journal that cannot
    /// be written stops the run too (it would not know what to undo after a
    /// crash): what is known in memory is rolled back, and the run exits 3.
    fn steps(&mut self, pipeline: &Pipeline) -> (i32, String) {
        let mut done = Vec::new();
        match self.each_step(pipeline, &mut done) {
            Ok(Flow::Finished(summary)) => (code::OK, format!("{summary}; {}", self.changes())),
            Ok(Flow::Failed(reason, bad_input)) => {
                let rolled = self.roll_back(done);
                let (status, summary) = self.failed(&reason, &rolled);
                // Bad input found by a step (a changed migration file): what
                // ran was undone, and the input is what must change.
                if bad_input && status == code::FAILED {
                    (code::BAD_INPUT, summary)
                } else {
                    (status, summary)
                }
            }
            Err(error) => {
                let reason = format!(
                    "cannot write the journal ({})",
                    crate::error::describe(&error)
                );
                let rolled = self.roll_back(done);
                let (_, summary) = self.failed(&reason, &rolled);
                (
                    code::ROLLBACK_INCOMPLETE,
                    format!("{summary}; the journal may be incomplete: look at the app"),
                )
            }
        }
    }

    fn each_step(&mut self, pipeline: &Pipeline, done: &mut Vec<Done>) -> Result<Flow> {
        let mut outcomes: HashMap<String, Outcome> = HashMap::new();
        let (mut ran, mut skipped) = (0, 0);
        for (index, step) in pipeline.steps.iter().enumerate() {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(Flow::Failed(
                    format!(
                        "interrupted (SIGINT/SIGTERM) before step {} `{}`",
                        index + 1,
                        step.name
                    ),
                    false,
                ));
            }
            if let Some(when) = &step.when {
                let actual = outcomes
                    .get(&when.step)
                    .copied()
                    .unwrap_or(Outcome::Skipped);
                if actual != when.outcome {
                    let reason = when.unmet("was", actual);
                    self.events.step_skipped(index, &step.name, &reason);
                    record(&mut outcomes, step, Outcome::Skipped);
                    skipped += 1;
                    continue;
                }
            }
            let user_undo = step
                .rollback
                .clone()
                .map(|action| Undoing::Action { action });
            self.journal.borrow_mut().write(&Entry::StepStarted {
                step: index,
                name: step.name.clone(),
                undo: user_undo.clone(),
            })?;
            ran += 1;
            let Attempted {
                result,
                undo: builtin_undo,
                changed,
                ends_run,
            } = self.attempt(index, step);
            if changed {
                self.changed.insert(index, step.name.clone());
            }
            // The step's own `rollback:` takes the place of its type's. A
            // failed step may have half happened: it is undone too (first,
            // or with the others if it was allowed to fail).
            let undo = user_undo.or(builtin_undo);
            let (outcome, failure) = match result {
                Ok(()) => (Outcome::Ok, None),
                Err(_) if step.allow_failure && !self.stop.load(Ordering::SeqCst) => {
                    (Outcome::Failed, None)
                }
                Err(error) => (Outcome::Failed, Some(error)),
            };
            let undo = match undo {
                Some(Undoing::Builtin { uses, undo }) if failure.is_none() => {
                    Some(Undoing::Builtin {
                        uses,
                        undo: undo.went_on(),
                    })
                }
                undo => undo,
            };
            self.journal
                .borrow_mut()
                .write_step_done(&Entry::StepDone {
                    step: index,
                    outcome,
                    undo: undo.clone(),
                })?;
            record(&mut outcomes, step, outcome);
            if let Some(undo) = undo {
                done.push(Done {
                    index,
                    name: step.name.clone(),
                    undo,
                });
            }
            if let Some(reason) = ends_run.filter(|_| failure.is_none()) {
                if self.setup.force {
                    self.events
                        .output(index, &format!("{reason}; but --force: the run goes on"));
                } else {
                    let later = &pipeline.steps[index + 1..];
                    for (at, step) in later.iter().enumerate() {
                        self.events.step_skipped(
                            index + 1 + at,
                            &step.name,
                            "the run ended before it (`--force` runs it)",
                        );
                    }
                    return Ok(Flow::Finished(format!(
                        "{reason}; {ran} step(s) ran, {} skipped",
                        skipped + later.len()
                    )));
                }
            }
            if let Some(error) = failure {
                let bad_input = crate::error::exit_code(&error) == code::BAD_INPUT;
                // The step's own line says why; the run's last line says
                // where, and what was undone.
                return Ok(Flow::Failed(
                    format!("failed at step {} `{}`", index + 1, step.name),
                    bad_input,
                ));
            }
        }
        Ok(Flow::Finished(format!(
            "{ran} step(s) ran, {skipped} skipped"
        )))
    }

    /// What changed, for the summary of a run that finished: "nothing
    /// changed", or the steps that changed the app.
    fn changes(&self) -> String {
        if self.changed.is_empty() {
            "nothing changed".to_string()
        } else {
            let names: Vec<&str> = self.changed.values().map(String::as_str).collect();
            format!("changed: {}", names.join(", "))
        }
    }

    /// Runs a step with its retries. Also returns how to undo it: a
    /// built-in type's own undo, as recorded before it acted (the first
    /// attempt's, which saw the state before the step) or returned by it.
    fn attempt(&mut self, index: usize, step: &Step) -> Attempted {
        let mut attempt = 1;
        let mut first_undo = None;
        loop {
            self.events
                .step_started(index, &step.name, &step.action.describe(), attempt);
            let started = Instant::now();
            // A step named by its command (`run `exit 1``) has it on its
            // line already: its failure need not say it again.
            let named_by_command = step.name == step.action.describe();
            let (result, undo) = self.perform(index, &step.action, step.timeout, named_by_command);
            first_undo = first_undo.or(undo);
            let last = attempt > step.retries || self.stop.load(Ordering::SeqCst);
            match result {
                Ok(did) => {
                    let changed = did.changed && step.changes;
                    self.events.step_finished(
                        index,
                        &step.name,
                        Status::Ok,
                        started.elapsed(),
                        &did.detail,
                        changed,
                    );
                    return Attempted {
                        result: Ok(()),
                        undo: first_undo,
                        changed,
                        ends_run: did.ends_run,
                    };
                }
                Err(error) => {
                    let status = match (last, step.allow_failure) {
                        (false, _) => Status::Retrying,
                        (true, true) => Status::FailedAllowed,
                        (true, false) => Status::Failed,
                    };
                    let retrying = if last { "" } else { "; retrying" };
                    let why = crate::error::describe(&error);
                    let changed = step.changes
                        && match &step.action {
                            Action::Shell { .. } => true,
                            Action::Builtin { .. } => first_undo.is_some(),
                        };
                    self.events.step_finished(
                        index,
                        &step.name,
                        status,
                        started.elapsed(),
                        &format!("{why}{retrying}"),
                        changed,
                    );
                    if last {
                        return Attempted {
                            result: Err(error),
                            undo: first_undo,
                            changed,
                            ends_run: None,
                        };
                    }
                }
            }
            attempt += 1;
        }
    }

    /// Does one action: a shell command or a built-in step type. Returns
    /// the outcome, and how to undo what a built-in type did (also when it
    /// failed halfway after recording its undo). A failed command names
    /// itself unless its line shows it already (`command_shown`).
    fn perform(
        &mut self,
        index: usize,
        action: &Action,
        timeout: Option<Duration>,
        command_shown: bool,
    ) -> (Result<Did>, Option<Undoing>) {
        match action {
            Action::Shell { run } => {
                let result = self.shell(index, run, timeout).and_then(|ended| {
                    if ended.ok() {
                        Ok(Did {
                            detail: String::new(),
                            changed: true,
                            ends_run: None,
                        })
                    } else if command_shown {
                        Err(anyhow!("{}", ended.describe()))
                    } else {
                        let run = redact::urls(run);
                        Err(anyhow!("`{run}` {}", ended.describe()))
                    }
                });
                (result, None)
            }
            Action::Builtin { uses, with } => {
                if !self.rolling_back && self.stop.load(Ordering::SeqCst) {
                    return (Err(anyhow!("interrupted (SIGINT/SIGTERM)")), None);
                }
                let Some(step) = steps::find(uses) else {
                    return (Err(anyhow!("unknown step type `{uses}`")), None);
                };
                let with = match substitute_all(with, &self.vars) {
                    Ok(with) => with,
                    Err(error) => return (Err(error), None),
                };
                // What load time let pass as `${NAME}` is checked now.
                if let Err(message) = step.check(&with) {
                    return (
                        Err(crate::error::bad_input(format!(
                            "`with:` of `{uses}`, once its variables are substituted: {message}; \
                             nothing was done: fix the variable's value"
                        ))),
                        None,
                    );
                }
                let as_undoing = |undo: Undo| {
                    (!undo.is_nothing()).then(|| Undoing::Builtin {
                        uses: uses.clone(),
                        undo,
                    })
                };
                let recorded: RefCell<Option<Undo>> = RefCell::new(None);
                let journal = Rc::clone(&self.journal);
                let record = |undo: &Undo| {
                    *recorded.borrow_mut() = Some(undo.clone());
                    let undo = Undoing::Builtin {
                        uses: uses.clone(),
                        undo: undo.clone(),
                    };
                    journal
                        .borrow_mut()
                        .write(&Entry::StepUndo { step: index, undo })
                };
                let ctx = self.setup.ctx(&self.restore_point, &record, &self.vars);
                match step.run(&ctx, &with) {
                    Ok(ran) => (
                        Ok(Did {
                            detail: ran.detail,
                            changed: ran.changed,
                            ends_run: ran.ends_run,
                        }),
                        as_undoing(ran.undo),
                    ),
                    Err(error) => (Err(error), recorded.take().and_then(as_undoing)),
                }
            }
        }
    }

    fn shell(&mut self, index: usize, command: &str, timeout: Option<Duration>) -> Result<Ended> {
        let events = &mut self.events;
        let mut show = |line: &str| events.output(index, line);
        let journal = &self.journal;
        let mut spawned = |group| {
            journal
                .borrow_mut()
                .write(&Entry::StepProcess { step: index, group })
        };
        let mut output = Output {
            log: &self.log.append,
            follow: &mut self.log.follow,
            show: &mut show,
            spawned: &mut spawned,
        };
        let stop = if self.rolling_back {
            &NEVER
        } else {
            &*self.stop
        };
        shell::run(
            command,
            &self.setup.config.root,
            &self.vars,
            timeout,
            stop,
            &mut output,
        )
    }

    /// Ends the journal. A run whose rollback did not complete stays open,
    /// so that `upkeep run` refuses and `upkeep recover` retries.
    fn close(&mut self, exit_code: i32, summary: String) -> (i32, String) {
        self.close_as(exit_code, exit_code, summary)
    }

    /// [`Runner::close`], recording `run_code` in the journal as the run's
    /// outcome (for `recover`: the run failed, its recovery worked).
    pub(super) fn close_as(
        &mut self,
        exit_code: i32,
        run_code: i32,
        summary: String,
    ) -> (i32, String) {
        if exit_code == code::ROLLBACK_INCOMPLETE {
            return (
                exit_code,
                format!(
                    "{summary}. Fix the cause, then `upkeep recover` retries what was not undone \
                     (`upkeep recover --forget` once you have put things right by hand)"
                ),
            );
        }
        match self.journal.borrow_mut().write(&Entry::RunFinished {
            exit_code: run_code,
        }) {
            Ok(()) => (exit_code, summary),
            Err(error) => (
                code::ROLLBACK_INCOMPLETE,
                format!(
                    "{summary}; but the journal could not be closed ({}): \
                     `upkeep recover --forget` once you have checked the app",
                    crate::error::describe(&error)
                ),
            ),
        }
    }

    /// Undoes `done`, newest first (the failed step, if it has a rollback,
    /// is the newest). Returns what was undone and what was not (and why).
    pub(super) fn roll_back(&mut self, done: Vec<Done>) -> RolledBack {
        // Rollbacks run to their end, whatever signals come now.
        self.rolling_back = true;
        let mut rolled = RolledBack::default();
        for item in done.into_iter().rev() {
            if self.undo_one(item.index, &item.name, &item.undo) {
                self.changed.remove(&item.index);
                rolled.undone.push(item.name);
            } else {
                rolled.not_undone.push(item.name);
            }
        }
        rolled
    }

    /// The exit code and summary of a run that failed for `reason`, after
    /// its rollback.
    fn failed(&self, reason: &str, rolled: &RolledBack) -> (i32, String) {
        if rolled.not_undone.is_empty() {
            (
                code::FAILED,
                format!("{reason}; rolled back ({})", rolled.undone_text()),
            )
        } else {
            (
                code::ROLLBACK_INCOMPLETE,
                format!(
                    "{reason}; ROLLBACK INCOMPLETE: {}. A person must look: see the log in {}",
                    rolled.incomplete_text(),
                    self.log.path.display()
                ),
            )
        }
    }

    /// Undoes one step, and says how it went on the rollback's own line
    /// (why it failed, too: the run's summary only names it). Returns
    /// whether it was undone.
    fn undo_one(&mut self, index: usize, name: &str, undo: &Undoing) -> bool {
        self.events
            .rollback_started(index, name, &describe_undo(undo));
        let started = Instant::now();
        // Journaled before it acts: a crash during the undo has it run again.
        let journaled = self
            .journal
            .borrow_mut()
            .write(&Entry::RollbackStarted { step: index });
        let result = match journaled {
            Err(error) => Err(error.context("the journal cannot be written, so it was not run")),
            Ok(()) => match undo {
                Undoing::Action { action } => self
                    .perform(index, action, None, false)
                    .0
                    .map(|did| did.detail),
                Undoing::Builtin { uses, undo } => {
                    let ctx = self
                        .setup
                        .ctx(&self.restore_point, &steps::no_record, &self.vars);
                    builtin_undo(&ctx, uses, undo)
                }
            },
        };
        let (mut ok, mut message) = match &result {
            Ok(detail) => (true, detail.clone()),
            Err(error) => (false, crate::error::describe(error)),
        };
        let journaled = self.journal.borrow_mut().write(&Entry::RollbackDone {
            step: index,
            ok,
            message: message.clone(),
        });
        if let Err(error) = journaled {
            if ok {
                message = format!(
                    "{message}; but the journal cannot record it ({}): `upkeep recover` would run it again",
                    crate::error::describe(&error)
                );
            }
            ok = false;
        }
        self.events
            .rollback_finished(index, name, ok, started.elapsed(), &message);
        ok
    }
}

fn record(outcomes: &mut HashMap<String, Outcome>, step: &Step, outcome: Outcome) {
    if let Some(id) = &step.id {
        outcomes.insert(id.clone(), outcome);
    }
}

fn describe_undo(undo: &Undoing) -> String {
    match undo {
        Undoing::Action { action } => action.describe(),
        Undoing::Builtin { uses, .. } => format!("{uses}'s own rollback"),
    }
}

fn builtin_undo(ctx: &Ctx, uses: &str, undo: &Undo) -> Result<String> {
    steps::find(uses)
        .ok_or_else(|| anyhow!("unknown step type `{uses}` in the journal"))?
        .undo(ctx, undo)
}
