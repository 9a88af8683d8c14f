//! Who may run now: the run lock (one run at a time, waited for when
//! asked), a run left unfinished (refused until recovered), and swaps a
//! crash interrupted (put back before anything opens the database). Taken
//! by `run` and `recover` alike, and by the commands that change a
//! database.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::config::Config;
use crate::db::Env;
use crate::error::{RollbackIncomplete, code};
use crate::journal;
use crate::lock;
use crate::report::Printer;

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
pub(super) fn take_lock_from_the_dead(config: &Config) -> Result<lock::Lock> {
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
