//! Salvage: copying what can still be read out of a damaged database into a
//! fresh file.
//!
//! Tables are created as schema.sql declares them (or, for tables it does not
//! know, as the damaged file declared them), then filled table by table. A
//! table whose data cannot be read stays empty and is reported lost; its
//! rows are still in the quarantined file for a person to dig out.
//! Sequences restart after the highest value already used, so the app does
//! not hand out keys that the salvaged rows already hold.

use std::path::Path;

use anyhow::{Context, Result};
use duckdb::Connection;

use crate::db::catalog::{Catalog, Schema, Sequence, Table};
use crate::db::fresh::{Fresh, NEW};
use crate::db::open::{ident, literal};
use crate::progress::Progress;

const OLD: &str = "upkeep_old";

#[derive(Debug, Clone, Default)]
pub struct Salvaged {
    /// Tables copied, with their row counts.
    pub copied: Vec<(String, u64)>,
    /// Tables that could not be read, created empty, with why.
    pub lost: Vec<(String, String)>,
    /// Tables copied without some rows whose keys were NULL or duplicated.
    pub dropped: Vec<(String, u64)>,
}

/// Copies every readable table of the damaged file `old` into `fresh`.
pub fn salvage(
    old: &Path,
    fresh: &Fresh,
    schema: Option<&Schema>,
    progress: &Progress,
) -> Result<Salvaged> {
    let conn = &fresh.conn;
    conn.execute_batch(&format!(
        "ATTACH {} AS {OLD} (READ_ONLY)",
        literal(&old.to_string_lossy())
    ))
    .with_context(|| format!("cannot open the damaged file `{}`", old.display()))?;
    let result = copy_all(conn, schema, progress);
    let _ = conn.execute_batch(&format!("USE memory; DETACH {OLD}"));
    result
}

fn copy_all(conn: &Connection, schema: Option<&Schema>, progress: &Progress) -> Result<Salvaged> {
    let old = Catalog::read(conn, OLD).context("cannot read the damaged file's catalog")?;
    let empty = Catalog::default();
    let declared = schema.map_or(&empty, |schema| &schema.catalog);

    // What the new file holds: schema.sql first, then whatever else the
    // damaged file had, so no table of the app's is dropped on the floor.
    let tables: Vec<&Table> = declared
        .tables
        .iter()
        .chain(
            old.tables
                .iter()
                .filter(|table| declared.table(&table.schema, &table.name).is_none()),
        )
        .collect();
    let sequences: Vec<&Sequence> = declared
        .sequences
        .iter()
        .chain(
            old.sequences
                .iter()
                .filter(|seq| !declared.has_sequence(&seq.schema, &seq.name)),
        )
        .collect();

    conn.execute_batch(&format!("USE {NEW}"))?;
    for schema_name in tables
        .iter()
        .map(|t| &t.schema)
        .chain(sequences.iter().map(|s| &s.schema))
    {
        conn.execute_batch(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            ident(schema_name)
        ))?;
    }
    for sequence in &sequences {
        let start = restart_value(conn, sequence, &old);
        conn.execute_batch(&format!(
            "CREATE SEQUENCE {}.{} START WITH {start} INCREMENT BY {} MINVALUE {} MAXVALUE {} {}",
            ident(&sequence.schema),
            ident(&sequence.name),
            sequence.increment_by,
            sequence.min_value,
            sequence.max_value.max(start),
            if sequence.cycle { "CYCLE" } else { "NO CYCLE" }
        ))
        .with_context(|| format!("cannot create sequence `{}`", sequence.display_name()))?;
    }
    for table in &tables {
        conn.execute_batch(&table.sql)
            .with_context(|| format!("cannot create table `{}`", table.display_name()))?;
    }

    let mut salvaged = Salvaged::default();
    let bar = progress.tables("salvage", tables.len() as u64);
    for table in &tables {
        bar.inc(1);
        let name = table.display_name();
        let Some(source) = old.table(&table.schema, &table.name) else {
            salvaged.lost.push((name, "not in the damaged file".into()));
            continue;
        };
        match copy_table(conn, table, source) {
            Ok((rows, 0)) => salvaged.copied.push((name, rows)),
            Ok((rows, dropped)) => {
                salvaged.copied.push((name.clone(), rows));
                salvaged.dropped.push((name, dropped));
            }
            Err(error) => salvaged.lost.push((name, error.to_string())),
        }
    }
    bar.finish_and_clear();
    Ok(salvaged)
}

/// Copies the columns both sides have. If the rows break the new table's
/// key (NULL or duplicate keys in a table that had lost its constraint),
/// copies again keeping the first row of each key; returns the rows copied
/// and the rows left behind.
fn copy_table(conn: &Connection, target: &Table, source: &Table) -> duckdb::Result<(u64, u64)> {
    let columns: Vec<String> = target
        .columns
        .iter()
        .filter(|column| source.columns.contains(column))
        .map(|column| ident(column))
        .collect();
    let list = columns.join(", ");
    let into = target.sql_name(NEW);
    let from = source.sql_name(OLD);
    let plain = format!("INSERT INTO {into} ({list}) SELECT {list} FROM {from}");
    match conn.execute(&plain, []) {
        Ok(rows) => Ok((rows as u64, 0)),
        Err(error) if target.primary_key.is_empty() || !is_constraint_error(&error) => Err(error),
        Err(_) => {
            let not_null = target
                .primary_key
                .iter()
                .map(|column| format!("{} IS NOT NULL", ident(column)))
                .collect::<Vec<_>>()
                .join(" AND ");
            let rows = conn.execute(
                &format!("INSERT OR IGNORE INTO {into} ({list}) SELECT {list} FROM {from} WHERE {not_null}"),
                [],
            )? as u64;
            let total: i64 =
                conn.query_row(&format!("SELECT count(*) FROM {from}"), [], |row| {
                    row.get(0)
                })?;
            Ok((rows, (total.max(0) as u64).saturating_sub(rows)))
        }
    }
}

fn is_constraint_error(error: &duckdb::Error) -> bool {
    let message = error.to_string();
    message.contains("Constraint Error") || message.contains("constraint")
}

/// Where a recreated sequence starts: after its last value, and after the
/// highest value already stored in any column that draws from it.
fn restart_value(conn: &Connection, sequence: &Sequence, old: &Catalog) -> i64 {
    let step = sequence.increment_by;
    let mut start = sequence.start_value;
    if step <= 0 {
        return start;
    }
    if let Some(last) = old
        .sequences
        .iter()
        .find(|s| s.schema == sequence.schema && s.name == sequence.name)
        .and_then(|s| s.last_value)
    {
        start = start.max(last.saturating_add(step));
    }
    let users: Vec<(String, String, String)> = conn
        .prepare(&format!(
            "SELECT schema_name, table_name, column_name FROM duckdb_columns() \
             WHERE database_name = {} AND column_default LIKE {}",
            literal(OLD),
            literal(&format!("%nextval(%{}'%", sequence.name))
        ))
        .and_then(|mut statement| {
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect()
        })
        .unwrap_or_default();
    for (schema, table, column) in users {
        let sql = format!(
            "SELECT max({})::BIGINT FROM {}.{}.{}",
            ident(&column),
            ident(OLD),
            ident(&schema),
            ident(&table)
        );
        if let Ok(Some(max)) = conn.query_row(&sql, [], |row| row.get::<_, Option<i64>>(0)) {
            start = start.max(max.saturating_add(step));
        }
    }
    start
}
