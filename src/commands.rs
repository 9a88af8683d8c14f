//! The toolkit commands: configuration in, library calls, results out.
//!
//! Each command is a thin layer over `db::*`, which the pipeline step types
//! call too. Commands that change files take the run lock first, so a cron
//! backup never interleaves with an update.

use anyhow::{Context, Result};

use crate::app;
use crate::cli::Command;
use crate::config::{Config, parse_keep};
use crate::db::Env;
use crate::db::catalog::Schema;
use crate::db::restore::Choice;
use crate::db::retention::Rotation;
use crate::db::{backup, backups, repair, restore};
use crate::error::{bad_input, code, exit_code, most_serious};
use crate::lock;
use crate::offsite;
use crate::pipeline;
use crate::report::Printer;
use crate::schedule;

/// Runs a toolkit command and returns its exit code. Errors for one
/// environment are reported and the others still run; the most serious
/// outcome decides the exit code.
pub fn run(command: &Command, config: &Config, printer: &Printer) -> Result<i32> {
    // Pipelines load the schema themselves, when they run.
    let toolkit = !matches!(
        command,
        Command::Run { .. }
            | Command::Validate { .. }
            | Command::Recover { .. }
            | Command::Schedule(_)
    );
    let schema = match &config.schema {
        Some(path) if toolkit => Some(Schema::load(path)?),
        _ => None,
    };
    let schema = schema.as_ref();
    let progress = printer.progress();
    match command {
        Command::Check { env, deep } => each_env(config, env, printer, |env| {
            let report = app::check(config, env, schema, *deep)?;
            printer.check(&env.name, &report);
            if report.ok() {
                Ok(code::OK)
            } else {
                printer.note(&format!(
                    "  next: `upkeep repair {0}` (quarantines the file and brings back a sound one) or `upkeep restore {0} --latest`",
                    env.name
                ));
                Ok(code::FAILED)
            }
        }),
        Command::Backup {
            env,
            keep,
            no_window,
            push,
        } => {
            let rotation = match keep {
                Some(keep) => Rotation::Newest(
                    parse_keep(*keep).map_err(|e| bad_input(format!("--keep {e}")))?,
                ),
                None => config.rotation.clone(),
            };
            let envs = config.select(env)?;
            let _lock = lock::acquire(&config.state_dir, &format!("upkeep backup {env}"))?;
            pipeline::admission::put_back_interrupted_swaps(&envs, *printer)?;
            run_each(&envs, printer, |env| {
                let notify = |reason: &str| {
                    if let Err(why) = app::notify_down(config, env, reason) {
                        printer.hint(&format!(
                            "warning: the app.notify webhook was not told: {why}"
                        ));
                    }
                };
                let made = match app::backup(config, env, &rotation, schema, &progress, *no_window)
                {
                    Ok(made) => made,
                    Err(error) => {
                        // The app stopped for the window stays down.
                        if exit_code(&error) == code::ROLLBACK_INCOMPLETE {
                            notify(&crate::error::describe(&error));
                        }
                        return Err(error);
                    }
                };
                printer.backup(&env.name, &made);
                if *push {
                    let which = offsite::Which::Named(made.backup.name.clone());
                    let pushed = config
                        .offsite()
                        .and_then(|site| offsite::push(&site, env, &which, &progress))
                        .with_context(|| {
                        format!(
                            "backup {} of `{}` is made and kept here, but was not copied off-site",
                            made.backup.name, env.name
                        )
                    })?;
                    printer.pushed(&env.name, &pushed);
                }
                match &made.taken {
                    backup::Taken::Window {
                        restart_error: Some(error),
                        ..
                    } => {
                        notify(&format!(
                            "the app of `{}` is down: it was stopped for a backup ({} is published) and did not come back healthy: {error}",
                            env.name, made.backup.name
                        ));
                        Ok(code::ROLLBACK_INCOMPLETE)
                    }
                    _ => Ok(code::OK),
                }
            })
        }
        Command::Backups {
            env,
            offsite: false,
        } => each_env(config, env, printer, |env| {
            let mut listed = backups::list(&config.backups_dir, &env.name)?;
            backups::mark_kept(&mut listed, &config.rotation);
            printer.backups(&env.name, &listed);
            Ok(code::OK)
        }),
        Command::Backups { env, offsite: true } => each_env(config, env, printer, |env| {
            let site = config.offsite()?;
            printer.remote_backups(&env.name, &offsite::list(&site, env)?);
            let span = offsite::points::Points::open(&site, &env.name)?
                .span(site.spec.continuous.wal_retention)?;
            printer.continuous(&env.name, span.as_ref());
            Ok(code::OK)
        }),
        Command::Replicate {
            env,
            interval,
            point_every,
        } => {
            let env = config.env(env)?;
            let site = config.offsite()?;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(signal, std::sync::Arc::clone(&stop))?;
            }
            let options = offsite::replicate::Options {
                interval: interval.unwrap_or(site.spec.continuous.interval),
                point_every: point_every.unwrap_or(site.spec.continuous.point_every),
                ..site.spec.continuous
            };
            offsite::replicate::run(&site, &env, options, &stop, &mut |shipment| {
                printer.shipment(&env.name, shipment)
            })?;
            Ok(code::OK)
        }
        Command::Push { env, backup, all } => {
            let which = match (backup, all) {
                (Some(name), _) => offsite::Which::Named(name.clone()),
                (None, true) => offsite::Which::All,
                (None, false) => offsite::Which::Newest,
            };
            let envs = config.select(env)?;
            let _lock = lock::acquire(&config.state_dir, &format!("upkeep push {env}"))?;
            run_each(&envs, printer, |env| {
                let pushed = offsite::push(&config.offsite()?, env, &which, &progress)?;
                printer.pushed(&env.name, &pushed);
                Ok(code::OK)
            })
        }
        Command::Verify {
            env,
            offsite,
            read_data,
            restore_test,
            points,
            identity,
        } => each_env(config, env, printer, |env| {
            let mut findings = match offsite {
                true => offsite::verify(&config.offsite()?, env, *read_data, &progress)?,
                false => restore::verify_all(&config.backups_dir, &env.name, schema)?,
            };
            // The points' plaintext: asked for by name, or with the key.
            if *read_data && (!points.is_empty() || identity.is_some()) {
                findings.extend(offsite::points::read_points(
                    &config.offsite()?,
                    env,
                    points,
                    identity.as_deref(),
                )?);
            }
            if *restore_test {
                let site = config.offsite()?;
                findings.push(offsite::points::restore_test(
                    &site,
                    env,
                    identity.as_deref(),
                    schema,
                )?);
            }
            printer.findings(&env.name, *offsite, &findings);
            Ok(match findings.iter().all(|finding| finding.ok) {
                true => code::OK,
                false => code::FAILED,
            })
        }),
        Command::Restore {
            env,
            backup,
            latest,
            at,
            offsite,
            identity,
            allow_plaintext,
        } => {
            let env = config.env(env)?;
            let (backup, verified) = match offsite {
                false => (backup.clone(), None),
                true => {
                    let _lock = lock::acquire(
                        &config.state_dir,
                        &format!("upkeep restore {} --offsite", env.name),
                    )?;
                    // A moment from the continuous copies: --at, or --latest
                    // when there are any (else the newest pushed backup).
                    let moment = match (at, latest) {
                        (Some(_), _) | (None, true) => offsite::points::fetch(
                            &config.offsite()?,
                            &env,
                            *at,
                            identity.as_deref(),
                            schema,
                        )?,
                        _ => None,
                    };
                    if let (Some(at), None) = (at, &moment) {
                        return Err(bad_input(format!(
                            "no continuous copy of `{}` off-site (`upkeep replicate`): nothing to restore at {at}; \
                             pushed backups are restored by name or with --latest; nothing was changed",
                            env.name
                        )));
                    }
                    let fetched = match moment {
                        Some(fetched) => fetched,
                        None => {
                            let pick = backup
                                .clone()
                                .map_or(offsite::Pick::Latest, offsite::Pick::Named);
                            let opening = offsite::Opening {
                                identity: identity.as_deref(),
                                allow_plaintext: *allow_plaintext,
                            };
                            offsite::fetch(
                                &config.offsite()?,
                                &env,
                                &pick,
                                opening,
                                schema,
                                &progress,
                            )?
                        }
                    };
                    printer.fetched(&env.name, &fetched);
                    (Some(fetched.name), fetched.verified)
                }
            };
            if let Some(status) = around_running_app(
                config,
                printer,
                &env,
                "restore",
                "uses: restore\n    with: { backup: \"${BACKUP}\" }",
                &[format!("BACKUP={}", backup.as_deref().unwrap_or("latest"))],
            )? {
                return Ok(status);
            }
            let _lock = lock::acquire(&config.state_dir, &format!("upkeep restore {}", env.name))?;
            pipeline::admission::put_back_interrupted_swaps(std::slice::from_ref(&env), *printer)?;
            let restored = match verified {
                // A download, verified before it was named: not read twice.
                Some(verified) => restore::restore_verified(&env, verified, schema, &progress)?,
                None => {
                    let choice = backup.clone().map_or(Choice::Latest, Choice::Named);
                    restore::restore(&env, &config.backups_dir, &choice, schema, &progress)?
                }
            };
            printer.restored(&env.name, &restored);
            Ok(if restored.after.ok() {
                code::OK
            } else {
                code::FAILED
            })
        }
        Command::Repair { env } => {
            // `cli::parse` gave it from ENVIRONMENT, or refused.
            let env = config.env(env.as_deref().unwrap_or_default())?;
            if let Some(status) = around_running_app(
                config,
                printer,
                &env,
                "repair",
                "uses: repair\n    with: { undo: previous }",
                &[],
            )? {
                return Ok(status);
            }
            let _lock = lock::acquire(&config.state_dir, &format!("upkeep repair {}", env.name))?;
            pipeline::admission::put_back_interrupted_swaps(std::slice::from_ref(&env), *printer)?;
            let sources = repair::Sources {
                backups_dir: &config.backups_dir,
                schema,
                storage_version: config.storage_version.as_ref(),
            };
            let repaired = repair::repair(&env, &sources, &progress)
                .with_context(|| format!("repair of `{}` failed", env.name))?;
            printer.repaired(&env.name, &repaired);
            Ok(if repaired.after.ok() {
                code::OK
            } else {
                code::FAILED
            })
        }
        Command::Run {
            pipeline,
            dry_run,
            env,
            vars,
            lock_wait,
            junit,
            yes,
            force,
        } => {
            let args = pipeline::RunArgs {
                pipeline,
                dry_run: *dry_run,
                env: env.as_deref(),
                vars,
                lock_wait: *lock_wait,
                junit: junit.as_deref(),
                yes: *yes,
                force: *force,
            };
            pipeline::run_command(config, &args, *printer)
        }
        Command::Validate { pipelines } => pipeline::validate_command(config, pipelines, *printer),
        Command::Recover { forget } => pipeline::recover::recover(config, *printer, *forget),
        Command::Schedule(args) => {
            schedule::run(&args.request(), config, printer).map(|()| code::OK)
        }
        Command::Demo { .. }
        | Command::DemoApp { .. }
        | Command::Completions { .. }
        | Command::Man => {
            unreachable!("handled before upkeep.yaml is read")
        }
    }
}

/// Restore and repair on a running app: when the app holds the database,
/// the work runs as a pipeline between `stop-app` and `start-app`, so that
/// an app that does not come back healthy has the previous database put
/// back and is started on it again (exit 1), and a kill -9 is finished by
/// `upkeep recover`. `None` when the database is not held.
fn around_running_app(
    config: &Config,
    printer: &Printer,
    env: &Env,
    what: &str,
    step: &str,
    vars: &[String],
) -> Result<Option<i32>> {
    use crate::db::open::{Access, lock_holder};
    let Some(pid) = lock_holder(&env.db, Access::Exclusive) else {
        return Ok(None);
    };
    if crate::app::App::of(config, env).is_none() {
        return Err(crate::app::held(env, pid, crate::app::HINT));
    }
    let folder = config.state_dir.join("pipelines");
    crate::fsx::create_private_dir(&folder)?;
    let path = folder.join(format!("{what}-running-app.yaml"));
    crate::fsx::write_atomic(
        &path,
        format!(
            "name: {what} (running app)\n\
             description: '{what} on a running app, written by upkeep (stop it, {what}, start it, wait until healthy)'\n\
             env: {}\n\
             steps:\n  - uses: stop-app\n  - {step}\n  - uses: start-app\n",
            env.name
        )
        .as_bytes(),
    )?;
    let pipeline = path.to_string_lossy().into_owned();
    let args = pipeline::RunArgs {
        pipeline: &pipeline,
        dry_run: false,
        env: Some(&env.name),
        vars,
        lock_wait: None,
        junit: None,
        // Asked for by name on the command line: no second question.
        yes: true,
        force: false,
    };
    pipeline::run_command(config, &args, *printer).map(Some)
}

fn each_env(
    config: &Config,
    selector: &str,
    printer: &Printer,
    action: impl FnMut(&Env) -> Result<i32>,
) -> Result<i32> {
    run_each(&config.select(selector)?, printer, action)
}

fn run_each(
    envs: &[Env],
    printer: &Printer,
    mut action: impl FnMut(&Env) -> Result<i32>,
) -> Result<i32> {
    let mut worst = code::OK;
    for env in envs {
        let status = action(env).unwrap_or_else(|error| {
            let status = exit_code(&error);
            printer.error(&error, status);
            status
        });
        worst = most_serious(worst, status);
    }
    Ok(worst)
}
