//! Running a pipeline, and rolling it back when a step fails.
//!
//! Where rollback happens: [`Runner::roll_back`]. When a step fails (after
//! its retries), its own rollback runs first (it may have half happened),
//! then those of the steps already done, newest first. A rollback that fails
//! does not stop the others; the run then exits 3. Every step's start, end
//! and rollback goes to the journal before the run moves on, so that
//! `upkeep recover` can finish the job after a crash.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::config::{Config, Env};
use crate::db::catalog::Schema;
use crate::error::{RollbackIncomplete, code};
use crate::journal::{self, Entry, Journal, Undoing};
use crate::lock;
use crate::pipeline::events::{Events, Reports, Status};
use crate::pipeline::model::{Action, Outcome, Pipeline, Step};
use crate::pipeline::shell::{self, Ended, Output};
use crate::redact;
use crate::report::Printer;
use crate::steps::{self, Ctx, Undo, With};

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
        restore_point: &'a RefCell<Option<PathBuf>>,
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
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
    }
    stop
}

/// Takes the run lock, waiting up to `wait` for it when asked to.
pub fn take_lock(config: &Config, what: &str, wait: Option<Duration>) -> Result<lock::Lock> {
    // Past a year, waiting is as good as forever (and cannot overflow).
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    let deadline = wait.map(|wait| Instant::now() + wait.min(YEAR));
    loop {
        match lock::acquire(&config.state_dir, what) {
            Err(error)
                if crate::error::exit_code(&error) == code::BUSY
                    && deadline.is_some_and(|deadline| Instant::now() < deadline) =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// The lock for `recover`. Right after a `kill -9`, the killed upkeep may
/// hold it for a moment more (the kernel releases it once the process is
/// gone, which waits for a disk write under way): `recover` waits for that,
/// and reports busy only when a live upkeep holds the lock.
fn take_lock_from_the_dead(config: &Config) -> Result<lock::Lock> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match lock::acquire(&config.state_dir, "upkeep recover") {
            Err(error)
                if crate::error::exit_code(&error) == code::BUSY
                    && Instant::now() < deadline
                    && lock::holder_dying(&config.state_dir) =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Puts back the `.wal` of a database whose swap (restore, repair, a
/// rollback) was interrupted before the new file took its place (see
/// [`crate::db::swap::undo_interrupted`]), before anything opens it.
/// Holders of the run lock only. Returns whether it put anything back.
pub fn put_back_interrupted_swaps(envs: &[Env], printer: Printer) -> Result<bool> {
    let mut any = false;
    for env in envs {
        for kept in crate::db::swap::undo_interrupted(&env.db)? {
            any = true;
            printer.note(&format!(
                "`{}`: a swap was interrupted before the new file took its place; its `.wal` is back from `{}`",
                env.name,
                kept.display()
            ));
        }
    }
    Ok(any)
}

/// Refuses to start while an interrupted run has not been recovered.
pub fn refuse_if_unfinished(config: &Config) -> Result<()> {
    if let Some(path) = journal::unfinished(&config.state_dir)?.first() {
        return Err(anyhow::Error::new(RollbackIncomplete(format!(
            "an earlier run was interrupted and not rolled back (journal `{}`): run `upkeep recover` first",
            path.display()
        ))));
    }
    Ok(())
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
    let _lock = take_lock(
        config,
        &format!("upkeep run {} ({})", pipeline.name, setup.env.name),
        lock_wait,
    )?;
    refuse_if_unfinished(config)?;
    put_back_interrupted_swaps(&config.select("all")?, setup.printer)?;
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
        restore_point: RefCell::new(None),
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

struct Runner<'a> {
    setup: &'a Setup<'a>,
    journal: Rc<RefCell<Journal>>,
    /// See [`Ctx::restore_point`].
    restore_point: RefCell<Option<PathBuf>>,
    events: Events,
    log: RunLog,
    vars: Vec<(String, String)>,
    stop: Arc<AtomicBool>,
    rolling_back: bool,
    /// The steps that changed the app's code or data, and were not undone
    /// (by number, with their names): the run's `changed`.
    changed: BTreeMap<usize, String>,
}

/// The run's log, `state_dir/logs/RUN_ID.log`: opened once for appending
/// (events, and every command's output) and once for following it.
struct RunLog {
    path: PathBuf,
    append: std::fs::File,
    follow: std::fs::File,
}

impl RunLog {
    fn open(config: &Config, run_id: &str) -> Result<RunLog> {
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
struct Done {
    index: usize,
    name: String,
    undo: Undoing,
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
struct RolledBack {
    undone: Vec<String>,
    not_undone: Vec<String>,
}

impl RolledBack {
    fn undone_text(&self) -> String {
        if self.undone.is_empty() {
            "nothing to undo".to_string()
        } else {
            format!("undone: {}", self.undone.join(", "))
        }
    }

    fn incomplete_text(&self) -> String {
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
    fn close_as(&mut self, exit_code: i32, run_code: i32, summary: String) -> (i32, String) {
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
    fn roll_back(&mut self, done: Vec<Done>) -> RolledBack {
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
                    crate::config::Env::none()
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
                    restore_point: RefCell::new(None),
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
            let line = match std::fs::remove_file(&path) {
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
        if std::fs::remove_file(&temporary).is_ok() {
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
