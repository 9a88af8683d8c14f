//! The command line, as clap reads it: the only module that knows clap.
//! Its values become the library's own types here (`report::Format`,
//! `schedule::Request`...), so that nothing below knows how they were given.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::EXIT_CODES_HELP;
use crate::report;
use crate::schedule::{self, At, parse_at};

#[derive(Debug, Parser)]
#[command(
    name = "upkeep",
    version,
    about = "Safe updates for an app with an embedded DuckDB database",
    long_about = "upkeep replaces an app's update.sh and its database scripts: integrity \
                  checks, verified and rotated backups, restore and repair, and update \
                  pipelines that roll back when a step fails. Documentation: README.md and \
                  docs/ in the source and in each release's tarball.",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// The project configuration (default: UPKEEP_CONFIG, else upkeep.yaml here or in a parent folder)
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Output for people, or one JSON object per line (docs/output.md)
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub format: Format,

    /// Print only errors
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print more detail
    #[arg(long, short, global = true)]
    pub verbose: bool,

    /// Colour the output (NO_COLOR is honoured in `auto`)
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,

    #[command(subcommand)]
    pub command: Command,
}

/// Reads the command line, then the environment variables that stand in
/// for a flag or argument left out (`UPKEEP_CONFIG`, `UPKEEP_AGE_IDENTITY`,
/// `ENVIRONMENT`).
///
/// They are read here, after clap has checked the command line, and only
/// for a command that takes them: clap's `env` counts a variable as a flag
/// given, so that `requires` then refused every other use of the command
/// (`UPKEEP_AGE_IDENTITY` made each local restore invalid), and an empty
/// variable was a flag without its value (an empty `UPKEEP_CONFIG` made
/// every command invalid). An empty variable is unset here, as cron and
/// `.env` files leave them.
pub fn parse() -> Result<Cli, clap::Error> {
    let mut cli = Cli::try_parse()?;
    cli.fill_from(|name| std::env::var_os(name).filter(|value| !value.is_empty()))?;
    Ok(cli)
}

impl Cli {
    fn fill_from(
        &mut self,
        variable: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<(), clap::Error> {
        if self.config.is_none() {
            self.config = variable("UPKEEP_CONFIG").map(PathBuf::from);
        }
        match &mut self.command {
            Command::Restore {
                offsite: true,
                identity: identity @ None,
                ..
            }
            | Command::Verify {
                offsite: true,
                identity: identity @ None,
                ..
            } => *identity = variable("UPKEEP_AGE_IDENTITY").map(PathBuf::from),
            Command::Repair { env: env @ None } => {
                *env = variable("ENVIRONMENT").map(|env| env.to_string_lossy().into_owned());
                if env.is_none() {
                    let kind = clap::error::ErrorKind::MissingRequiredArgument;
                    let message = "the following required argument was not provided: <ENV> (or set ENVIRONMENT)";
                    let mut command = <Cli as clap::CommandFactory>::command();
                    command.build();
                    // With `repair`'s own usage line.
                    return Err(match command.find_subcommand_mut("repair") {
                        Some(repair) => repair.error(kind, message),
                        None => clap::Error::raw(kind, message),
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

impl From<Format> for report::Format {
    fn from(format: Format) -> report::Format {
        match format {
            Format::Human => report::Format::Human,
            Format::Json => report::Format::Json,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

impl From<Color> for report::Color {
    fn from(color: Color) -> report::Color {
        match color {
            Color::Auto => report::Color::Auto,
            Color::Always => report::Color::Always,
            Color::Never => report::Color::Never,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Integrity report of a database; never writes to it
    #[command(
        after_help = "Example:\n  upkeep check production --deep\n\nExit 0: sound; 1: problems found; 4: open in another process.\n\nWhat is checked: docs/guarantees.md."
    )]
    Check {
        /// An environment from upkeep.yaml, `both` (production and staging) or `all`
        env: String,
        /// Read every column of every table, so every block's checksum is verified
        #[arg(long)]
        deep: bool,
    },
    /// Verified, rotated backup of a database
    #[command(
        after_help = "Examples:\n  upkeep backup both --keep=50\n  upkeep backup production --push   # then copy it off-site (backups.offsite)\n\nOf a running app: docs/configuration.md (app:); what a backup guarantees: docs/guarantees.md;\noff-site copies: docs/offsite.md."
    )]
    Backup {
        /// An environment from upkeep.yaml, `both` or `all`
        env: String,
        /// How many backups to keep (default: backups.keep in upkeep.yaml, else 30)
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        keep: Option<i64>,
        /// Never stop a running app for the copy: exit 4 when the database is
        /// held and `app:` has no snapshot hook
        #[arg(long)]
        no_window: bool,
        /// Then copy the new backup off-site (`backups.offsite` in upkeep.yaml)
        #[arg(long)]
        push: bool,
    },
    /// List the backups of an environment
    #[command(
        after_help = "Examples:\n  upkeep backups production\n  upkeep backups production --offsite"
    )]
    Backups {
        /// An environment from upkeep.yaml, `both` or `all`
        env: String,
        /// List the copies in the off-site store instead
        #[arg(long)]
        offsite: bool,
    },
    /// Copy verified backups off-site (`backups.offsite` in upkeep.yaml)
    #[command(
        after_help = "Examples:\n  upkeep push production            # the newest verified backup\n  upkeep push both --all\n  upkeep push production production_data_20240115_020000.duckdb\n\nA backup already off-site is not sent again. Credentials come from the environment\n(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, or AWS_PROFILE).\nSee docs/offsite.md."
    )]
    Push {
        /// An environment from upkeep.yaml, `both` or `all`
        env: String,
        /// A backup name, as `upkeep backups ENV` lists it (default: the newest verified)
        #[arg(conflicts_with = "all")]
        backup: Option<String>,
        /// Every verified local backup not off-site yet
        #[arg(long)]
        all: bool,
    },
    /// Check backups against their manifests: local ones, or the off-site copies
    #[command(
        after_help = "Examples:\n  upkeep verify production            # every local backup: hash, then DuckDB\n  upkeep verify production --offsite  # every off-site manifest has its object, of the right size\n  upkeep verify production --offsite --read-data   # and download each to check its hash\n\nExit 0: all verify; 1: a problem was found."
    )]
    Verify {
        /// An environment from upkeep.yaml, `both` or `all`
        env: String,
        /// Check the off-site store
        #[arg(long)]
        offsite: bool,
        /// With --offsite: download every object and check its hash
        #[arg(long, requires = "offsite")]
        read_data: bool,
        /// With --offsite: restore the newest moment of the continuous copies into a scratch folder and check it
        #[arg(long, requires = "offsite")]
        restore_test: bool,
        /// With --read-data: also fetch, decrypt and check every block of this point of the continuous copies (its manifest's name, MS-ITERATION.json, or `newest`; repeatable; default with --identity: newest)
        #[arg(long = "point", value_name = "NAME", requires = "read_data")]
        points: Vec<String>,
        /// The age identity that decrypts encrypted continuous copies for --restore-test and --point (default: UPKEEP_AGE_IDENTITY)
        #[arg(long, value_name = "FILE", requires = "offsite")]
        identity: Option<PathBuf>,
    },
    /// Put a backup in place; the current database is kept aside
    #[command(
        after_help = "Examples:\n  upkeep restore production --latest\n  upkeep restore production production_data_20240115_020000.duckdb\n  upkeep restore production --offsite --latest --identity backup-key.txt   # on a new machine\n\nIn practice: docs/operations.md; from off-site: docs/offsite.md."
    )]
    Restore {
        /// An environment from upkeep.yaml
        env: String,
        /// A backup name, as `upkeep backups ENV` lists it
        #[arg(required_unless_present_any = ["latest", "at"])]
        backup: Option<String>,
        /// The newest backup that verifies; with --offsite and continuous copies (`upkeep replicate`), the newest commit shipped
        #[arg(long, conflicts_with = "backup")]
        latest: bool,
        /// With --offsite: the database as it was at TIME (RFC 3339, such as 2026-12-03T17:00:00Z), from the continuous copies
        #[arg(long, value_name = "TIME", requires = "offsite", conflicts_with_all = ["backup", "latest"], value_parser = parse_time)]
        at: Option<jiff::Timestamp>,
        /// Take the backup from the off-site store (downloaded, checked, kept as a local backup)
        #[arg(long)]
        offsite: bool,
        /// The age identity that decrypts an encrypted off-site backup (default: UPKEEP_AGE_IDENTITY)
        #[arg(long, value_name = "FILE", requires = "offsite")]
        identity: Option<PathBuf>,
        /// Restore an off-site backup that is not encrypted although `encrypt_to` is set
        #[arg(long, requires = "offsite")]
        allow_plaintext: bool,
    },
    /// Continuous off-site copies: every commit off the machine within seconds
    #[command(
        after_help = "Examples:\n  upkeep replicate production\n  upkeep replicate production --interval 5s --point-every 1h\n\nRuns in the foreground; SIGTERM or Ctrl-C ships what is pending, then stops.\nRestore any moment: upkeep restore production --offsite --at 2026-12-03T17:00:00Z.\nSee docs/offsite.md."
    )]
    Replicate {
        /// An environment from upkeep.yaml
        env: String,
        /// How often the commits added to the .wal are shipped (default: backups.offsite.continuous.interval, else 1s)
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        interval: Option<std::time::Duration>,
        /// A new point (a live copy; only changed blocks go up) at least this often (default: continuous.point_every, else 15m)
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        point_every: Option<std::time::Duration>,
    },
    /// Quarantine a damaged database and bring back a sound one
    #[command(
        after_help = "Examples:\n  upkeep repair production\n  ENVIRONMENT=production upkeep repair\n\nIn practice: docs/operations.md."
    )]
    Repair {
        /// An environment from upkeep.yaml (default: ENVIRONMENT)
        env: Option<String>,
    },
    /// Run a pipeline (default `update`): steps in order, rolled back on failure
    #[command(
        after_help = "Examples:\n  upkeep run update --dry-run\n  upkeep run update --env staging --var APP_URL=http://127.0.0.1:9000\n  upkeep run update --yes --junit reports/upkeep.xml   # in CI\n\nExit 1: failed and fully rolled back; 3: a rollback did not complete (see `upkeep recover`); 4: busy.\n\nPipelines and step types: docs/pipelines.md."
    )]
    Run {
        /// A name in pipelines/ beside upkeep.yaml, or a path
        #[arg(default_value = "update")]
        pipeline: String,
        /// Show what would be done, with read-only probes; change nothing
        #[arg(long)]
        dry_run: bool,
        /// The environment (default: the pipeline's `env:`)
        #[arg(long, value_name = "ENV")]
        env: Option<String>,
        /// A variable for the pipeline, passed to commands as an environment variable
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Wait up to this long (e.g. 5m) for another run to finish, instead of exiting 4
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        lock_wait: Option<std::time::Duration>,
        /// Write a JUnit XML report of the run (a test case per step and per rollback)
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// On production, run without showing the plan and asking first (only a terminal asks)
        #[arg(long, short)]
        yes: bool,
        /// Run every step, even when a `pending` step finds nothing new
        #[arg(long)]
        force: bool,
    },
    /// Check pipeline files without running anything
    #[command(
        after_help = "Examples:\n  upkeep validate\n  upkeep validate update pipelines/backup.yaml\n\nThe format: docs/pipelines.md."
    )]
    Validate {
        /// Pipeline names or paths (default: every file in pipelines/)
        pipelines: Vec<String>,
    },
    /// Roll back what an interrupted run (crash, kill -9) did
    #[command(
        after_help = "Examples:\n  upkeep recover\n  upkeep recover --forget   # after putting things right by hand\n\nA second recover is a harmless no-op. After a crash: docs/operations.md."
    )]
    Recover {
        /// Mark unfinished runs as finished without undoing anything
        #[arg(long)]
        forget: bool,
    },
    /// Print (or install) the daily backup or a replicator: cron, systemd, Windows
    #[command(
        after_help = "Examples:\n  upkeep schedule\n  upkeep schedule --at 03:30 --keep 50 --install\n  upkeep schedule --systemd --install\n  upkeep schedule --windows\n  upkeep schedule --replicate --env production --install            # cron @reboot\n  upkeep schedule --replicate --env production --systemd --install  # a service kept running\n\nThe cron line ends with `# upkeep schedule: /path/to/upkeep.yaml` (a replicator's with\n`# upkeep replicate ENV: /path/to/upkeep.yaml`): --install replaces the line with that\nmarker (or adds it), --uninstall removes it, and other lines are left alone. Times are\nthe machine's local time.\n\nExit 1: `crontab` is missing or refused the table (nothing was changed); 2: bad flag.\n\nDaily backups: docs/operations.md; continuous copies: docs/offsite.md."
    )]
    Schedule(ScheduleArgs),
    /// The demo's app stand-in (a process holding a DuckDB, serving /health)
    #[command(hide = true)]
    DemoApp {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print a shell completion script
    #[command(
        after_help = "Examples:\n  upkeep completions bash > /etc/bash_completion.d/upkeep\n  upkeep completions zsh > ~/.zfunc/_upkeep"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    #[command(after_help = "Example:\n  upkeep man > /usr/local/share/man/man1/upkeep.1")]
    Man,
    /// Build a sandbox app (git origin, releases) and run the update on it
    #[command(after_help = "Example:\n  upkeep demo --dir /tmp/upkeep-demo")]
    Demo {
        /// Where to build the sandbox (default: a new temporary folder)
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// When the backup runs each day (24-hour clock, local time)
    #[arg(long, value_name = "HH:MM", default_value = "02:00", value_parser = parse_at)]
    pub at: At,
    /// An environment from upkeep.yaml, `both` or `all` (with --replicate: one environment)
    #[arg(long, value_name = "ENV", default_value = "both")]
    pub env: String,
    /// How many backups to keep (default: backups.keep in upkeep.yaml, else 30)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep: Option<i64>,
    /// The replicator of --env (`upkeep replicate ENV`, continuous off-site copies) instead of
    /// the daily backup: started at boot by cron (@reboot), or a systemd service kept running
    #[arg(long, conflicts_with_all = ["at", "keep"])]
    pub replicate: bool,
    /// A systemd user service and timer (with --replicate: a service) instead of a cron line
    #[arg(long, conflicts_with = "windows")]
    pub systemd: bool,
    /// The Windows Task Scheduler command (schtasks) for scripts\backup_db.ps1
    #[arg(long)]
    pub windows: bool,
    /// Put the entry in place: your crontab, or ~/.config/systemd/user with --systemd
    #[arg(long, conflicts_with = "uninstall")]
    pub install: bool,
    /// Remove this project's entry, and nothing else
    #[arg(long)]
    pub uninstall: bool,
}

impl ScheduleArgs {
    /// What the flags ask of `schedule` (clap refuses the pairs that
    /// conflict).
    pub fn request(&self) -> schedule::Request<'_> {
        schedule::Request {
            entry: if self.replicate {
                schedule::Entry::Replicate
            } else {
                schedule::Entry::Backup {
                    at: self.at,
                    keep: self.keep,
                }
            },
            env: &self.env,
            scheduler: if self.windows {
                schedule::Scheduler::Windows
            } else if self.systemd {
                schedule::Scheduler::Systemd
            } else {
                schedule::Scheduler::Cron
            },
            action: if self.install {
                schedule::Action::Install
            } else if self.uninstall {
                schedule::Action::Uninstall
            } else {
                schedule::Action::Print
            },
        }
    }
}

/// A moment for `restore --at`: RFC 3339, with its offset.
fn parse_time(text: &str) -> Result<jiff::Timestamp, String> {
    text.parse::<jiff::Timestamp>().map_err(|error| {
        format!("`{text}` is not a moment in RFC 3339 (such as 2026-12-03T17:00:00Z): {error}")
    })
}
