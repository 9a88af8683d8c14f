//! The integrity check: the old `check_db_integrity.py`, and more.
//!
//! It never writes: the file is opened read-only, which takes only a shared
//! lock, replays a `.wal` in memory without touching it, and leaves the
//! file's bytes, mtime and storage version as they were. Every problem found
//! is collected and named; only "someone else is writing it" (busy) and
//! unexpected I/O stop the check early.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use duckdb::Connection;
use serde::Serialize;

use crate::db::blocks;
use crate::db::catalog::{Catalog, Schema, Table};
use crate::db::header::{self, HeaderProblem};
use crate::db::layout;
use crate::db::open::{self, Access, ident};
use crate::db::wal;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub path: PathBuf,
    pub size: Option<u64>,
    pub storage_version: Option<String>,
    pub deep: bool,
    pub tables: Vec<TableRows>,
    pub problems: Vec<Problem>,
    /// The file's blake3, when a deep check read all of it.
    #[serde(skip)]
    pub blake3: Option<blake3::Hash>,
    /// What was read was a fresh snapshot the app wrote of `path` (it
    /// kept running), not the file itself.
    pub from_snapshot: bool,
    /// Checked on a live copy (see `db::live`), the app running.
    pub copied_live: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableRows {
    pub table: String,
    /// `None` when the table could not be counted (see the problems).
    pub rows: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    MissingFile,
    EmptyFile,
    NotDuckdb,
    Truncated,
    CannotOpen,
    Checksum,
    Unreadable,
    MissingTable,
    MissingColumn,
    MissingSequence,
    NullPrimaryKey,
    DuplicatePrimaryKey,
    /// A `.wal` beside the file that DuckDB cannot replay: the writes
    /// committed in it are not in the database.
    UnreplayedWal,
}

impl ProblemKind {
    /// Damage to the file itself, as opposed to content that is off.
    pub fn is_damage(self) -> bool {
        matches!(
            self,
            ProblemKind::MissingFile
                | ProblemKind::EmptyFile
                | ProblemKind::NotDuckdb
                | ProblemKind::Truncated
                | ProblemKind::CannotOpen
                | ProblemKind::Checksum
                | ProblemKind::Unreadable
        )
    }
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Whether DuckDB could open the file at all (a salvage can read it).
    pub fn opens(&self) -> bool {
        !self.problems.iter().any(|problem| {
            matches!(
                problem.kind,
                ProblemKind::MissingFile
                    | ProblemKind::EmptyFile
                    | ProblemKind::NotDuckdb
                    | ProblemKind::Truncated
                    | ProblemKind::CannotOpen
            )
        })
    }

    /// The problems' messages, in one line.
    pub fn problem_list(&self) -> String {
        self.problems
            .iter()
            .map(|problem| problem.message.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn rows(&self) -> impl Iterator<Item = (&str, u64)> {
        self.tables
            .iter()
            .filter_map(|table| Some((table.table.as_str(), table.rows?)))
    }

    fn problem(&mut self, kind: ProblemKind, message: String) {
        self.problems.push(Problem { kind, message });
    }
}

/// Checks the database at `path` against `schema` (when there is one).
/// `deep` reads every column of every table, so that DuckDB verifies the
/// checksum of every block in use.
pub fn check(path: &Path, schema: Option<&Schema>, deep: bool) -> Result<Report> {
    let mut report = Report {
        path: path.to_path_buf(),
        size: None,
        storage_version: None,
        deep,
        tables: Vec::new(),
        problems: Vec::new(),
        blake3: None,
        from_snapshot: false,
        copied_live: false,
    };
    let header = match header::read(path) {
        Ok(header) => header,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            report.problem(
                ProblemKind::MissingFile,
                format!("no database file at `{}`", path.display()),
            );
            return Ok(report);
        }
        Err(error) => {
            return Err(anyhow::Error::new(error)
                .context(format!("cannot read database `{}`", path.display())));
        }
    };
    report.size = std::fs::metadata(path).ok().map(|meta| meta.len());
    let header = match header {
        Ok(header) => header,
        Err(problem) => {
            let kind = match problem {
                HeaderProblem::Empty => ProblemKind::EmptyFile,
                HeaderProblem::NotDuckdb { .. } => ProblemKind::NotDuckdb,
                HeaderProblem::Truncated { .. } => ProblemKind::Truncated,
            };
            report.problem(kind, problem.to_string());
            return Ok(report);
        }
    };
    report.storage_version = Some(header.storage_version().map_or_else(
        || format!("unknown ({})", header.version_number),
        |version| version.to_string(),
    ));
    let size = report.size.unwrap_or(0);
    if let Some(reason) = wal::unreplayable(path, &header)? {
        report.problem(
            ProblemKind::UnreplayedWal,
            format!(
                "`{}` cannot be replayed: {reason}. DuckDB skips it, so writes committed in it are not in the database, \
                 and the next read-write open deletes it: copy it somewhere safe \
                 (`upkeep repair`, `backup` and `migrate` keep a copy in quarantine/)",
                wal::path_of(path).display()
            ),
        );
    }
    let conn = match open::open(path, Access::ReadOnly) {
        Ok(conn) => conn,
        Err(error) if crate::error::exit_code(&error) == crate::error::code::BUSY => {
            return Err(error);
        }
        Err(error) => {
            let message = crate::error::describe(&error);
            report.problem(kind_of_read_error(&message), message);
            return Ok(report);
        }
    };
    // A deep check reads every byte back besides DuckDB's scan, on the
    // other core: the scan never loads index blocks, nor metadata blocks
    // beyond the catalog.
    let read_back = std::thread::scope(|scope| {
        let read_back = deep.then(|| {
            scope.spawn(|| -> Result<blocks::ReadBack> {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("cannot read `{}`", path.display()))?;
                blocks::read_back(path, file, size)
            })
        });
        let contents = check_contents(&conn, schema, deep, &mut report);
        let read_back = read_back.map(|thread| {
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("the read-back thread panicked"))
        });
        contents.map(|()| read_back)
    })?;
    let bad_blocks = match read_back {
        Some(read_back) => {
            let read_back = read_back??;
            report.blake3 = Some(read_back.hash);
            if read_back.checked {
                read_back.bad_blocks
            } else {
                Vec::new()
            }
        }
        None => Vec::new(),
    };
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let damage = layout::damage(&file, &header, size, &bad_blocks);
    if let Some(message) = damage.truncation_message(size, &header) {
        report.problem(ProblemKind::Truncated, message);
    }
    if deep {
        for message in damage.checksum_messages(&header) {
            report.problem(ProblemKind::Checksum, message);
        }
    }
    Ok(report)
}

fn check_contents(
    conn: &Connection,
    schema: Option<&Schema>,
    deep: bool,
    report: &mut Report,
) -> Result<()> {
    let database: String = conn.query_row("SELECT current_database()", [], |row| row.get(0))?;
    let actual = match Catalog::read(conn, &database) {
        Ok(catalog) => catalog,
        Err(error) => {
            let message = format!(
                "cannot read the catalog: {}",
                crate::error::describe(&error)
            );
            report.problem(kind_of_read_error(&message), message);
            return Ok(());
        }
    };
    let expected = schema.map(|schema| &schema.catalog);
    if let Some(expected) = expected {
        compare_with_schema(expected, &actual, report);
    }
    for table in &actual.tables {
        let declared = expected.and_then(|expected| expected.table(&table.schema, &table.name));
        check_table(conn, &database, table, declared, deep, report);
    }
    Ok(())
}

fn compare_with_schema(expected: &Catalog, actual: &Catalog, report: &mut Report) {
    for wanted in &expected.tables {
        let Some(found) = actual.table(&wanted.schema, &wanted.name) else {
            report.problem(
                ProblemKind::MissingTable,
                format!("table `{}` is missing", wanted.display_name()),
            );
            continue;
        };
        for column in wanted.columns.iter().filter(|c| !found.columns.contains(c)) {
            report.problem(
                ProblemKind::MissingColumn,
                format!(
                    "column `{column}` of table `{}` is missing",
                    wanted.display_name()
                ),
            );
        }
    }
    for sequence in &expected.sequences {
        if !actual.has_sequence(&sequence.schema, &sequence.name) {
            report.problem(
                ProblemKind::MissingSequence,
                format!("sequence `{}` is missing", sequence.display_name()),
            );
        }
    }
}

fn check_table(
    conn: &Connection,
    database: &str,
    table: &Table,
    declared: Option<&Table>,
    deep: bool,
    report: &mut Report,
) {
    let name = table.display_name();
    let from = table.sql_name(database);
    let rows = count(conn, &format!("SELECT count(*) FROM {from}"));
    report.tables.push(TableRows {
        table: name.clone(),
        rows: rows.as_ref().ok().copied(),
    });
    if let Err(message) = rows {
        report.problem(
            kind_of_read_error(&message),
            format!("table `{name}` cannot be read: {message}"),
        );
        return;
    }
    // The key the app relies on: the one schema.sql declares, else the
    // table's own. A table that lost its constraint no longer enforces it,
    // so that is where NULLs and duplicates creep in.
    let key = declared
        .map(|declared| &declared.primary_key)
        .filter(|key| !key.is_empty() && key.iter().all(|c| table.columns.contains(c)))
        .unwrap_or(&table.primary_key);
    if !key.is_empty() {
        check_key(conn, &from, &name, key, *key != table.primary_key, report);
    }
    if deep {
        let sql = format!("SELECT count(*), bit_xor(hash(COLUMNS(*))) FROM {from}");
        if let Err(message) = count(conn, &sql) {
            report.problem(
                kind_of_read_error(&message),
                format!("table `{name}` cannot be read in full: {message}"),
            );
        }
    }
}

fn check_key(
    conn: &Connection,
    from: &str,
    name: &str,
    key: &[String],
    unenforced: bool,
    report: &mut Report,
) {
    let columns: Vec<String> = key.iter().map(|column| ident(column)).collect();
    let key_list = key.join(", ");
    let any_null = columns
        .iter()
        .map(|column| format!("{column} IS NULL"))
        .collect::<Vec<_>>()
        .join(" OR ");
    match count(
        conn,
        &format!("SELECT count(*) FROM {from} WHERE {any_null}"),
    ) {
        Ok(0) => {}
        Ok(nulls) => report.problem(
            ProblemKind::NullPrimaryKey,
            format!("table `{name}`: {nulls} row(s) with NULL in primary key ({key_list})"),
        ),
        Err(message) => report.problem(
            kind_of_read_error(&message),
            format!("table `{name}`: primary key cannot be read: {message}"),
        ),
    }
    // An enforced primary key cannot hold duplicates; scanning for them
    // would only cost time on large tables.
    if !unenforced {
        return;
    }
    let group = columns.join(", ");
    let sql = format!(
        "SELECT count(*) FROM (SELECT 1 FROM {from} WHERE NOT ({any_null}) GROUP BY {group} HAVING count(*) > 1)"
    );
    match count(conn, &sql) {
        Ok(0) => {}
        Ok(duplicated) => report.problem(
            ProblemKind::DuplicatePrimaryKey,
            format!(
                "table `{name}`: {duplicated} primary key value(s) ({key_list}) appear more than once \
                 (the table no longer enforces its primary key)"
            ),
        ),
        Err(message) => report.problem(
            kind_of_read_error(&message),
            format!("table `{name}`: primary key cannot be read: {message}"),
        ),
    }
}

/// Runs a query whose first column is a count; the error as text, since it
/// becomes part of a problem's message.
fn count(conn: &Connection, sql: &str) -> Result<u64, String> {
    conn.query_row(sql, [], |row| row.get::<_, i64>(0))
        .map(|n| n.max(0) as u64)
        .map_err(|error| error.to_string())
}

fn kind_of_read_error(message: &str) -> ProblemKind {
    if message.contains("checksum") {
        ProblemKind::Checksum
    } else if message.contains("Could not read enough bytes") {
        ProblemKind::Truncated
    } else if message.contains("cannot open") {
        ProblemKind::CannotOpen
    } else {
        ProblemKind::Unreadable
    }
}
