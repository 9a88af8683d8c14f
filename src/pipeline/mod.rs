//! Pipelines: YAML files of steps, run in order and undone in reverse order
//! when one fails.
//!
//! - `load`: reading and checking a file (through the YAML tree with
//!   positions of `crate::yaml`), every problem with its line and column;
//!   `model`: what a pipeline is;
//! - `run`: running it, and rolling back (`Runner::roll_back`), and
//!   `upkeep recover`; `shell`: shell commands; `plan`: dry-run;
//! - `events`: what a run prints and logs, kept in a `record` for the
//!   reports: `junit`, `github` (Actions), `notify` (webhook).

pub mod admission;
pub mod confirm;
pub mod events;
pub mod github;
pub mod junit;
pub mod load;
pub mod model;
pub mod notify;
pub mod plan;
pub mod record;
pub mod recover;
pub mod run;
pub mod shell;

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::config::Config;
use crate::db::catalog::Schema;
use crate::error::{bad_input, code, exit_code};
use crate::redact;
use crate::report::Printer;
use crate::steps;

/// What `upkeep run` was asked.
pub struct RunArgs<'a> {
    pub pipeline: &'a str,
    pub dry_run: bool,
    pub env: Option<&'a str>,
    pub vars: &'a [String],
    pub lock_wait: Option<Duration>,
    /// Where to write a JUnit XML report of the run.
    pub junit: Option<&'a Path>,
    /// Run on production without asking, even on a terminal.
    pub yes: bool,
    /// Run every step, even when one finds nothing to do (`pending`).
    pub force: bool,
}

/// `upkeep run`: loads and checks everything, then runs or plans.
pub fn run_command(config: &Config, args: &RunArgs, printer: Printer) -> Result<i32> {
    let path = load::resolve(config, args.pipeline);
    let pipeline = load::load(&path, config)?;
    let env = match args
        .env
        .map(str::to_string)
        .or_else(|| pipeline.env.clone())
    {
        Some(name) => config.env(&name)?,
        None => default_env(config, &pipeline, &path)?,
    };
    let mut vars = pipeline.vars.clone();
    for assignment in args.vars {
        let Some((name, value)) = assignment.split_once('=') else {
            return Err(bad_input(format!(
                "--var `{assignment}` must be NAME=VALUE"
            )));
        };
        if name.starts_with("UPKEEP_") {
            return Err(bad_input(format!(
                "--var `{name}`: names starting with UPKEEP_ are the run's own variables: pick another name"
            )));
        }
        if !load::is_var_name(name) {
            return Err(bad_input(format!(
                "--var `{name}` is not a variable name: letters, digits and `_`, not starting with a digit"
            )));
        }
        // --var overrides the pipeline's `vars:`.
        vars.retain(|(existing, _)| existing != name);
        vars.push((name.to_string(), value.to_string()));
    }
    let schema = config.schema.as_deref().map(Schema::load).transpose()?;
    let setup = run::Setup {
        config,
        env,
        schema,
        vars,
        printer,
        force: args.force,
    };
    let known = setup.environment("", args.dry_run);
    check_substituted(&pipeline, config, &known)?;
    let notify = match &pipeline.notify {
        Some(notify) => {
            let url = run::substitute(&notify.url, &known)
                .map_err(|error| crate::error::describe(&error))
                .and_then(|url| crate::webhook::check_url(&url).map(|()| url))
                .map_err(|error| {
                    bad_input(format!("{}: `notify: url`: {error}", path.display()))
                })?;
            Some(notify::Notify {
                url,
                on: notify.on.clone(),
            })
        }
        None => None,
    };
    if let Some(junit) = args.junit {
        let folder = junit.parent().filter(|p| !p.as_os_str().is_empty());
        if folder.is_some_and(|folder| !folder.is_dir()) {
            return Err(bad_input(format!(
                "--junit `{}`: its folder does not exist; create it first",
                junit.display()
            )));
        }
    }
    let reports = events::Reports {
        junit: args.junit.map(Path::to_path_buf),
        notify,
    };
    if args.dry_run {
        return plan::dry_run(&pipeline, &setup, reports);
    }
    let ask = !args.yes;
    run::run(&pipeline, &setup, args.lock_wait, reports.clone(), ask).inspect_err(|error| {
        // Refused before any step (busy, an unfinished run): the reports
        // still say so, so that cron's webhook and CI's JUnit see it.
        let mut events = events::Events::new(printer, None);
        events.expect(pipeline.step_names(), reports);
        let reason = crate::error::describe(error);
        events.refused(&pipeline.name, &setup.env.name, exit_code(error), &reason);
    })
}

/// The environment of a pipeline that names none: the only one of
/// upkeep.yaml, or none at all when no step works on one; else the first
/// step that needs one says so.
fn default_env(config: &Config, pipeline: &model::Pipeline, path: &Path) -> Result<crate::db::Env> {
    if config.databases.len() == 1
        && let Some(name) = config.databases.keys().next()
    {
        return config.env(name);
    }
    let needs = |action: &crate::action::Action| match action {
        crate::action::Action::Builtin { uses, with } => {
            !with.contains_key("env")
                && crate::steps::find(uses).is_some_and(|step| step.needs_env())
        }
        crate::action::Action::Shell { .. } => false,
    };
    match pipeline
        .steps
        .iter()
        .find(|step| needs(&step.action) || step.rollback.as_ref().is_some_and(needs))
    {
        None => Ok(crate::db::Env::none()),
        Some(step) => Err(bad_input(format!(
            "{}:{}: step `{}` works on an environment, and the pipeline names no `env:`: \
             add `env: NAME` to the pipeline, or pass --env ENV (upkeep.yaml has {})",
            path.display(),
            step.pos,
            step.name,
            config
                .databases
                .keys()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `${NAME}` in `with:` must name a variable, and the values it gives must
/// pass the step type's checks, as if written in the file: all before
/// anything runs (a dry-run's probes included).
fn check_substituted(
    pipeline: &model::Pipeline,
    config: &Config,
    known: &[(String, String)],
) -> Result<()> {
    for step in &pipeline.steps {
        for action in std::iter::once(&step.action).chain(step.rollback.iter()) {
            let crate::action::Action::Builtin { uses, with } = action else {
                continue;
            };
            let refuse = |error: String| {
                bad_input(format!(
                    "{}:{}: step `{}`: {error}",
                    pipeline.path.display(),
                    step.pos,
                    step.name
                ))
            };
            let substituted: steps::With = with
                .iter()
                .map(|(key, value)| Ok((key.clone(), run::substitute(value, known)?)))
                .collect::<Result<_>>()
                .map_err(|error| refuse(crate::error::describe(&error)))?;
            if let Some(env) = substituted.get("env") {
                config
                    .env(env)
                    .map_err(|error| refuse(crate::error::describe(&error)))?;
            }
            if let Some(step_type) = steps::find(uses)
                && let Err(message) = step_type.check(&substituted)
            {
                return Err(refuse(format!(
                    "`with` of step type `{uses}`, once its variables are in: {}",
                    redact::urls(&message)
                )));
            }
        }
    }
    Ok(())
}

/// `upkeep validate`: checks pipeline files (by default every one in
/// `pipelines/`), reporting every problem of every file.
pub fn validate_command(config: &Config, names: &[String], printer: Printer) -> Result<i32> {
    let paths: Vec<std::path::PathBuf> = if names.is_empty() {
        let dir = config.root.join("pipelines");
        let mut found: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|error| {
                bad_input(format!(
                    "cannot list `{}`: {error}; name the pipelines to validate",
                    dir.display()
                ))
            })?
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| {
                path.extension()
                    .is_some_and(|ext| ext == "yaml" || ext == "yml")
            })
            .collect();
        found.sort();
        found
    } else {
        names
            .iter()
            .map(|name| load::resolve(config, name))
            .collect()
    };
    let mut status = code::OK;
    for path in paths {
        match load::load(&path, config) {
            Ok(pipeline) => printer.validated(&path, Ok(pipeline.steps.len())),
            Err(error) => {
                printer.validated(&path, Err(&crate::error::describe(&error)));
                status = code::BAD_INPUT;
            }
        }
    }
    Ok(status)
}
