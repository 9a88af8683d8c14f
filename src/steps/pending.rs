//! `uses: pending` (`with: { migrations, remote, branch }`): asks, before
//! anything is touched, whether an update has anything to do. It fetches
//! the app's code and compares it with the code that runs (what `git-pull`
//! would bring), and lists the migrations of the `migrations` folder that
//! the database has not recorded (what `migrate` would apply).
//!
//! When nothing is new, the run ends there, successfully: the steps after
//! it are skipped, the app is untouched, and the run is `changed: false`.
//! A scheduled update (cron, Ansible) is then a no-op that says so.
//! `upkeep run --force` runs the whole pipeline anyway.
//!
//! Read-only for the app: the fetch writes only into `.git` (objects,
//! `FETCH_HEAD`, the remote-tracking branch), and the migrations recorded
//! in a database the app holds are read from a copy of its last checkpoint
//! (see [`crate::db::open::read_checkpointed`]), removed once read. What it
//! cannot find out (no room for that copy) counts as new: the update goes
//! on. A migration file changed since it was applied, or uncommitted
//! changes when there is something to pull, fail the step before the app
//! is stopped, as `migrate` and `git-pull` would fail after.

use anyhow::Result;

use super::git_pull::{self, Incoming};
use super::migrate::{self, Migrate};
use super::{Ctx, Plan, Ran, StepType, Undo, With};
use crate::error::{code, exit_code};

pub struct Pending;

/// Why the run ends at a step that found nothing new.
const NOTHING_NEW: &str =
    "nothing new (no commit to pull, no migration pending): the run ends here, the app untouched";

/// `with:` as `migrate` reads it, for its checks.
fn as_migrate(with: &With) -> Option<With> {
    let dir = with.get("migrations")?;
    Some(With::from([("dir".to_string(), dir.clone())]))
}

/// The migrations not yet recorded, in words, and whether there are none
/// (`None`: cannot tell).
fn migrations(ctx: &Ctx, with: &With, copy: bool) -> Result<(String, Option<bool>)> {
    let Some(dir) = with.get("migrations") else {
        return Ok(("no migrations folder".to_string(), Some(true)));
    };
    let found = match migrate::not_recorded(ctx, dir, copy) {
        Ok(found) => found,
        Err(error) if exit_code(&error) == code::BAD_INPUT => return Err(error),
        // Not knowing is not a reason to skip the update.
        Err(error) => {
            return Ok((
                format!(
                    "cannot list the pending migrations ({}): taken as new",
                    crate::error::describe(&error)
                ),
                Some(false),
            ));
        }
    };
    Ok(match found {
        Some(names) if names.is_empty() => ("no migration pending".to_string(), Some(true)),
        Some(names) => (
            format!("{} migration(s) pending: {}", names.len(), names.join(", ")),
            Some(false),
        ),
        None => (
            "the pending migrations are known only in a real run (the app holds the database)"
                .to_string(),
            None,
        ),
    })
}

/// Whether nothing is new, from what the code and the migrations said
/// (`None`: cannot tell).
fn nothing_new(code: &Incoming, no_migration: Option<bool>) -> Option<bool> {
    match (code.count, no_migration) {
        (Some(n), _) if n > 0 => Some(false),
        (_, Some(false)) => Some(false),
        (Some(0), Some(true)) => Some(true),
        _ => None,
    }
}

impl StepType for Pending {
    fn name(&self) -> &'static str {
        "pending"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["migrations", "remote", "branch"]
    }

    fn check(&self, with: &With) -> Result<(), String> {
        git_pull::GitPull.check(with)?;
        match as_migrate(with) {
            Some(migrate) => Migrate
                .check(&migrate)
                .map_err(|message| message.replace("`dir", "`migrations")),
            None => Ok(()),
        }
    }

    fn may_change(&self) -> bool {
        false
    }

    fn plan(&self, ctx: &Ctx, with: &With) -> Plan {
        let blocked = |error: anyhow::Error| Plan::blocked("look for something new", &error);
        let code = match git_pull::asked(&ctx.config.root, with) {
            Ok(code) => code,
            Err(error) => return blocked(error),
        };
        let (migrations, no_migration) = match migrations(ctx, with, false) {
            Ok(found) => found,
            Err(error) => return blocked(error),
        };
        let nothing_new = nothing_new(&code, no_migration);
        let verdict = match nothing_new {
            Some(true) => format!("; {NOTHING_NEW}"),
            Some(false) => "; something is new: the run goes on".to_string(),
            None => "; if nothing is new, the run ends here".to_string(),
        };
        Plan {
            summary: format!(
                "look for something new: `{}`: {}; {migrations}{verdict}",
                code.source, code.what
            ),
            ends_run: nothing_new
                .filter(|none| *none)
                .map(|_| NOTHING_NEW.to_string()),
            ..Plan::default()
        }
    }

    fn run(&self, ctx: &Ctx, with: &With) -> Result<Ran> {
        let code = git_pull::fetched(ctx, with)?;
        if code.count.is_some_and(|n| n > 0) {
            // The pull would refuse them once the app is stopped.
            git_pull::clean(&ctx.config.root)?;
        }
        let (migrations, no_migration) = migrations(ctx, with, true)?;
        let detail = format!("`{}`: {}; {migrations}", code.source, code.what);
        let mut ran = Ran::unchanged(detail, Undo::nothing());
        if nothing_new(&code, no_migration) == Some(true) {
            ran.ends_run = Some(NOTHING_NEW.to_string());
        }
        Ok(ran)
    }

    fn undo(&self, _ctx: &Ctx, undo: &Undo) -> Result<String> {
        git_pull::undo_fetch(undo)
    }
}
