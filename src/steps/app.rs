//! `uses: stop-app` and `uses: start-app`: the app of the run's environment
//! (or `with: { env: NAME }`), as `app:` in upkeep.yaml says how. start-app
//! waits until the app is healthy. Each is the other's rollback: an update
//! that fails after stop-app starts the app again, and a start-app whose app
//! never becomes healthy stops it before the older steps are undone; so
//! neither runs when one of the app's commands could not (its program is
//! missing), and a dry-run says so.

use anyhow::{Result, anyhow, bail};
use serde_json::json;

use super::{Ctx, Plan, Ran, StepType, Undo, With, target_env};
use crate::app::App;
use crate::config::AppSpec;
use crate::db::Env;
use crate::db::open::{self, Access};
use crate::db::topup;

pub struct StopApp;
pub struct StartApp;

/// The app of `env`, or why there is none.
fn app<'a>(ctx: &Ctx<'a>, env: &'a Env) -> Result<App<'a>> {
    App::of(ctx.config, env).ok_or_else(|| {
        anyhow!(
            "no app is configured for `{}`: add `app:` (`stop`, `start`, `health`) to {}",
            env.name,
            ctx.config.path.display()
        )
    })
}

/// The environment an undo entry names.
fn undo_env(ctx: &Ctx, undo: &Undo) -> Result<Env> {
    match undo.0.get("env").and_then(|env| env.as_str()) {
        Some(name) => ctx.config.env(name),
        None => bail!("the journal does not say which environment's app this was"),
    }
}

/// A live copy of `env`'s database for the run's restore point, taken
/// while the app runs; or why not (the backup then copies the whole file).
fn prepare_live(ctx: &Ctx, env: &Env) -> Result<topup::Prepared, String> {
    if open::lock_holder(&env.db, Access::Exclusive).is_none() {
        return Err("nothing holds the database".to_string());
    }
    if !ctx.config.ways.contains(&crate::config::Way::Live) {
        return Err("`backups.ways` leaves out live".to_string());
    }
    if let Some(why) = crate::app::live_refused(ctx.config, env) {
        return Err(why);
    }
    topup::prepare(env, &ctx.config.backups_dir).map_err(|error| crate::error::describe(&error))
}

fn held_by(env: &Env) -> String {
    match open::lock_holder(&env.db, Access::Exclusive) {
        Some(pid) => format!("the app is running now (PID {pid} holds the database)"),
        None => "nothing holds the database now".to_string(),
    }
}

/// The plan of stop-app and start-app: `what` the step does to the app of
/// the step's environment, `how` (from its `app:` keys), and who holds the
/// database now; blocked when there is no app.
fn plan(ctx: &Ctx, with: &With, what: &str, how: impl FnOnce(&AppSpec) -> String) -> Plan {
    let env = match target_env(ctx, with) {
        Ok(env) => env,
        Err(error) => return Plan::blocked(what, &error),
    };
    match app(ctx, &env) {
        Ok(app) => Plan {
            summary: format!(
                "{what} of `{}` {}: {}",
                env.name,
                how(&ctx.config.apps[&env.name]),
                held_by(&env)
            ),
            blocker: app.cannot_run(),
            ..Plan::default()
        },
        Err(error) => Plan::blocked(what, &error),
    }
}

impl StepType for StopApp {
    fn name(&self) -> &'static str {
        "stop-app"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["env", "restore_point"]
    }

    fn check(&self, with: &With) -> Result<(), String> {
        match with.get("restore_point").map(String::as_str) {
            None | Some("live") => Ok(()),
            Some(other) => Err(format!(
                "`restore_point: {other}` is not a way stop-app knows: write `restore_point: live` \
                 (a live copy of the database before the stop, which the backup after it tops up), or leave it out"
            )),
        }
    }

    /// Stopping and starting bounce the app: its code and data stay.
    fn may_change(&self) -> bool {
        false
    }

    fn plan(&self, ctx: &Ctx, with: &With) -> Plan {
        let first = if with.contains_key("restore_point") {
            "; its database is copied live first (the backup after the stop adds only what changed)"
        } else {
            ""
        };
        plan(ctx, with, "stop the app", |spec| {
            format!(
                "(`{}`) and wait until it lets go of the database{first}",
                crate::redact::urls(&spec.stop)
            )
        })
    }

    fn run(&self, ctx: &Ctx, with: &With) -> Result<Ran> {
        let env = target_env(ctx, with)?;
        let app = app(ctx, &env)?;
        if let Some(why) = app.cannot_run() {
            bail!("{why}; the app was not stopped");
        }
        // The restore point's live copy, while the app still runs.
        let prepared = with
            .contains_key("restore_point")
            .then(|| prepare_live(ctx, &env));
        let undo = Undo(json!({ "start": true, "env": env.name }));
        (ctx.record)(&undo)?;
        app.stop()?;
        let mut summary = format!("stopped the app of `{}`", env.name);
        match prepared {
            Some(Ok(prepared)) => {
                summary.push_str(
                    "; its database was copied live first: the backup adds only what changed since",
                );
                ctx.restore_point.borrow_mut().prepared = Some(prepared);
            }
            Some(Err(why)) => summary.push_str(&format!(
                "; no live copy first ({why}): a backup copies the whole file"
            )),
            None => {}
        }
        // Stopping and starting the app bounce it: its code and data stay.
        Ok(Ran::unchanged(summary, undo))
    }

    fn undo(&self, ctx: &Ctx, undo: &Undo) -> Result<String> {
        let env = undo_env(ctx, undo)?;
        let app = app(ctx, &env)?;
        // After a crash, the app may have been started already: never twice.
        if app.running() {
            return Ok(format!("the app of `{}` runs already", env.name));
        }
        app.start()?;
        Ok(format!("started the app of `{}`; it is healthy", env.name))
    }
}

impl StepType for StartApp {
    fn name(&self) -> &'static str {
        "start-app"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["env"]
    }

    /// Stopping and starting bounce the app: its code and data stay.
    fn may_change(&self) -> bool {
        false
    }

    fn plan(&self, ctx: &Ctx, with: &With) -> Plan {
        plan(ctx, with, "start the app", |spec| {
            let wait = spec.health.as_ref().map_or_else(
                || " (no `health:` to wait for)".to_string(),
                |health| {
                    format!(
                        " and wait up to {} until {}",
                        humantime::format_duration(health.timeout),
                        crate::app::describe(health)
                    )
                },
            );
            format!("(`{}`){wait}", crate::redact::urls(&spec.start))
        })
    }

    fn run(&self, ctx: &Ctx, with: &With) -> Result<Ran> {
        let env = target_env(ctx, with)?;
        let app = app(ctx, &env)?;
        if let Some(why) = app.cannot_run() {
            bail!("{why}; the app was not started");
        }
        let undo = Undo(json!({ "stop": true, "env": env.name }));
        (ctx.record)(&undo)?;
        app.start()?;
        Ok(Ran::unchanged(
            format!("started the app of `{}`; it is healthy", env.name),
            undo,
        ))
    }

    fn undo(&self, ctx: &Ctx, undo: &Undo) -> Result<String> {
        let env = undo_env(ctx, undo)?;
        app(ctx, &env)?.stop()?;
        Ok(format!("stopped the app of `{}`", env.name))
    }
}
