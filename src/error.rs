//! The kinds of failure a caller acts on, and the exit code of each.
//!
//! Most code reports errors through `anyhow` with context. Where the exit code
//! depends on *what* went wrong (bad input, busy, a rollback left undone), the
//! error carries one of the typed errors below somewhere in its chain, and
//! [`exit_code`] finds it.

/// Exit codes, as documented in SPEC.md, `--help` and the README.
pub mod code {
    /// Success; for `check`, the database is sound.
    pub const OK: i32 = 0;
    /// Failed, and nothing is left half-done.
    pub const FAILED: i32 = 1;
    /// Bad input (flags, config, pipeline file): nothing was run.
    pub const BAD_INPUT: i32 = 2;
    /// Failed and a rollback did not complete: a person must look.
    pub const ROLLBACK_INCOMPLETE: i32 = 3;
    /// Busy: another run holds the lock, or the database is open elsewhere.
    pub const BUSY: i32 = 4;
}

/// The exit code table, shown in `--help` and the man page.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (for `check`: the database is sound)
  1  failed, and nothing is left half-done (a pipeline was fully rolled back,
     or `check` found problems)
  2  bad input (flags, config, pipeline file): nothing was run
  3  failed and a rollback did not complete: a person must look (`upkeep recover`)
  4  busy: another run holds the lock, or the database is open in another process";

/// Input that upkeep refuses before doing anything: a bad flag value, config,
/// environment name, backup name or pipeline file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Something else holds what upkeep needs: the run lock, or the database.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Busy(pub String);

/// A failure after which some rollback did not complete, or an interrupted
/// run that waits for `upkeep recover`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RollbackIncomplete(pub String);

/// Shorthand for returning a [`BadInput`] error.
pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(message.into()))
}

/// The exit code for an error: the first typed error found in its chain
/// decides, anything else is a plain failure.
pub fn exit_code(error: &anyhow::Error) -> i32 {
    for cause in error.chain() {
        if cause.is::<RollbackIncomplete>() {
            return code::ROLLBACK_INCOMPLETE;
        }
        if cause.is::<Busy>() {
            return code::BUSY;
        }
        if cause.is::<BadInput>() {
            return code::BAD_INPUT;
        }
    }
    code::FAILED
}

/// Of two exit codes, the one a person must see: a rollback left undone,
/// then busy, then bad input, then a plain failure. Commands that handle
/// several environments or runs exit with the most serious of theirs.
pub fn most_serious(a: i32, b: i32) -> i32 {
    let rank = |status: i32| match status {
        code::ROLLBACK_INCOMPLETE => 4,
        code::BUSY => 3,
        code::BAD_INPUT => 2,
        code::OK => 0,
        _ => 1,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// An error as one line, for people: each cause of its chain said once,
/// without the DuckDB driver's own "Error code 1: Unknown error code"
/// under DuckDB's message.
pub fn describe(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        if cause.is::<duckdb::ffi::Error>() {
            continue;
        }
        let text = cause.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}
