//! On a terminal, a real run of a pipeline on `production` first shows its
//! plan (the dry-run) and asks once; `--yes` skips the question. Without a
//! terminal to answer on (cron, CI, input from a pipe) it never asks; with
//! `CI` set (as CI services do) neither. The question goes to stderr, so it
//! is seen even when stdout goes to a pipe or a file.

use std::io::{BufRead, IsTerminal};

use anyhow::Result;

use crate::pipeline::events::Reports;
use crate::pipeline::model::Pipeline;
use crate::pipeline::plan;
use crate::pipeline::run::Setup;
use crate::report::say_err;

/// The environment a person confirms runs on.
const GUARDED: &str = "production";

/// Whether to go on: yes without asking when nobody is there to ask or the
/// environment is not production; else the person's answer.
pub fn confirmed(pipeline: &Pipeline, setup: &Setup) -> Result<bool> {
    let ci = std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false");
    if setup.env.name != GUARDED || !std::io::stdin().is_terminal() || ci {
        return Ok(true);
    }
    plan::dry_run(pipeline, setup, Reports::default())?;
    say_err!(
        "Run `{}` on {GUARDED} now? Type y to go on, anything else to stop [y/N]: ",
        pipeline.name
    );
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    let yes = matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes");
    if !yes {
        say_err!("Not run: nothing was changed. (`--yes` runs without asking.)");
    }
    Ok(yes)
}
