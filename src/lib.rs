//! upkeep: safe updates for an app with an embedded DuckDB database.
//!
//! `main.rs` only calls [`main`]. The library is a module per concept:
//! `config` (upkeep.yaml), `db` (open, check, backup, restore, repair),
//! `pipeline` (load, plan, run, roll back), `steps` (built-in step types),
//! `journal` (crash journal), `lock` (one run at a time), `report` (output),
//! `commands` (the CLI's verbs), `schedule` (cron / systemd
//! entries for daily backups), `redact` (credentials in URLs, masked
//! wherever one is shown), `app` (the app's lifecycle: stop, start,
//! health, snapshot), `process` (a command in a process group of its own,
//! held to a time limit; another process named in one line), `action` (the
//! words shared by everything that runs steps: an action, an outcome, an
//! undo), `offsite` (copies in S3-compatible stores), `webhook` (a JSON summary POSTed for `notify:` and
//! `app.notify`), `demo` (the README's ready-made sandbox), `yaml`
//! (the first pass every YAML file goes through, and the tree with
//! positions that pipelines are checked on).
//!
//! Layers look down, never up: `cli` (the only module that knows clap)
//! turns the command line into the library's own types and hands it to
//! `commands`, which call `pipeline`, `steps`, `app` and `db`; `report`
//! (output modes and JSON lines), `error` (exit codes and their ranking),
//! `config` and the small helpers sit below them all. Words that several
//! layers share live below all of their users: a database's environment
//! (`db::Env`), a process group (`process::Group`), a step's action,
//! outcome and undo (`action`), so that `app` journals a backup window as
//! a run (for `upkeep recover`) without reaching up into `pipeline`. The
//! config hands `offsite` what it needs of it (`offsite::Site`), so the
//! two do not import each other. No two folders import each other.

pub mod action;
pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod demo;
pub mod error;
pub mod fsx;
pub mod http;
pub mod journal;
pub mod lock;
pub mod offsite;
pub mod pipeline;
pub mod probe;
pub mod process;
pub mod progress;
pub mod redact;
pub mod report;
pub mod schedule;
pub mod steps;
pub mod webhook;
pub mod yaml;

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::error::exit_code;
use crate::report::Printer;

/// Parses the command line, runs the command, returns the exit code.
pub fn main() -> i32 {
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                error::code::BAD_INPUT
            } else {
                error::code::OK
            };
        }
    };
    let printer = Printer::new(cli.format.into(), cli.quiet, cli.verbose, cli.color.into());
    let started = std::time::Instant::now();
    let outcome = match &cli.command {
        Command::Demo { dir } => demo::run(dir.as_deref(), &printer),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "upkeep", &mut std::io::stdout());
            Ok(error::code::OK)
        }
        Command::Man => clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
            .render(&mut std::io::stdout())
            .map(|()| error::code::OK)
            .map_err(anyhow::Error::from),
        Command::DemoApp { args } => Ok(demo::app::main(args)),
        command => std::env::current_dir()
            .map_err(anyhow::Error::from)
            .and_then(|cwd| Config::discover(cli.config.as_deref(), &cwd))
            .and_then(|config| commands::run(command, &config, &printer)),
    };
    let code = outcome.unwrap_or_else(|error| {
        let code = exit_code(&error);
        printer.error(&error, code);
        code
    });
    printer.timing(started.elapsed(), code);
    code
}
