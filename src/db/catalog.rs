//! What a database holds, read from DuckDB's own catalog functions.
//!
//! The same reader serves the expected schema (`schema.sql` loaded into an
//! in-memory database), the database under check, and the corrupt file a
//! salvage reads from, so all three are compared in the same terms.

use std::path::Path;

use anyhow::{Context, Result};
use duckdb::Connection;

use crate::db::open::{ident, literal};
use crate::error::bad_input;

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub tables: Vec<Table>,
    pub sequences: Vec<Sequence>,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub columns: Vec<String>,
    pub primary_key: Vec<String>,
    /// The `CREATE TABLE` statement, as DuckDB prints it.
    pub sql: String,
}

#[derive(Debug, Clone)]
pub struct Sequence {
    pub schema: String,
    pub name: String,
    pub sql: String,
    pub start_value: i64,
    pub increment_by: i64,
    pub min_value: i64,
    pub max_value: i64,
    pub cycle: bool,
    /// The last value handed out, when the sequence has been used.
    pub last_value: Option<i64>,
}

impl Table {
    /// The name users know: bare in the `main` schema, qualified elsewhere.
    pub fn display_name(&self) -> String {
        display_name(&self.schema, &self.name)
    }

    /// The quoted name, for SQL, inside the attached database `database`.
    pub fn sql_name(&self, database: &str) -> String {
        format!(
            "{}.{}.{}",
            ident(database),
            ident(&self.schema),
            ident(&self.name)
        )
    }
}

impl Sequence {
    pub fn display_name(&self) -> String {
        display_name(&self.schema, &self.name)
    }
}

fn display_name(schema: &str, name: &str) -> String {
    if schema == "main" {
        name.to_string()
    } else {
        format!("{schema}.{name}")
    }
}

impl Catalog {
    /// Reads the catalog of the attached database `database`.
    pub fn read(conn: &Connection, database: &str) -> Result<Catalog> {
        let db = literal(database);
        let mut tables: Vec<Table> = conn
            .prepare(&format!(
                "SELECT schema_name, table_name, coalesce(sql, '') FROM duckdb_tables() \
                 WHERE database_name = {db} AND NOT internal ORDER BY schema_name, table_name"
            ))?
            .query_map([], |row| {
                Ok(Table {
                    schema: row.get(0)?,
                    name: row.get(1)?,
                    columns: Vec::new(),
                    primary_key: Vec::new(),
                    sql: row.get(2)?,
                })
            })?
            .collect::<duckdb::Result<_>>()?;
        let columns: Vec<(String, String, String)> = conn
            .prepare(&format!(
                "SELECT schema_name, table_name, column_name FROM duckdb_columns() \
                 WHERE database_name = {db} AND NOT internal ORDER BY schema_name, table_name, column_index"
            ))?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<duckdb::Result<_>>()?;
        let keys: Vec<(String, String, String)> = conn
            .prepare(&format!(
                "SELECT schema_name, table_name, unnest(constraint_column_names) FROM duckdb_constraints() \
                 WHERE database_name = {db} AND constraint_type = 'PRIMARY KEY'"
            ))?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<duckdb::Result<_>>()?;
        for table in &mut tables {
            let same =
                |schema: &String, name: &String| *schema == table.schema && *name == table.name;
            table.columns = columns
                .iter()
                .filter(|(schema, name, _)| same(schema, name))
                .map(|(_, _, column)| column.clone())
                .collect();
            table.primary_key = keys
                .iter()
                .filter(|(schema, name, _)| same(schema, name))
                .map(|(_, _, column)| column.clone())
                .collect();
        }
        let sequences = conn
            .prepare(&format!(
                "SELECT schema_name, sequence_name, coalesce(sql, ''), start_value, increment_by, \
                 min_value, max_value, cycle, last_value FROM duckdb_sequences() \
                 WHERE database_name = {db} AND NOT temporary ORDER BY schema_name, sequence_name"
            ))?
            .query_map([], |row| {
                Ok(Sequence {
                    schema: row.get(0)?,
                    name: row.get(1)?,
                    sql: row.get(2)?,
                    start_value: row.get(3)?,
                    increment_by: row.get(4)?,
                    min_value: row.get(5)?,
                    max_value: row.get(6)?,
                    cycle: row.get(7)?,
                    last_value: row.get(8)?,
                })
            })?
            .collect::<duckdb::Result<_>>()?;
        Ok(Catalog { tables, sequences })
    }

    pub fn table(&self, schema: &str, name: &str) -> Option<&Table> {
        self.tables
            .iter()
            .find(|table| table.schema == schema && table.name == name)
    }

    pub fn has_sequence(&self, schema: &str, name: &str) -> bool {
        self.sequences
            .iter()
            .any(|sequence| sequence.schema == schema && sequence.name == name)
    }
}

/// The schema the app needs, from `schema.sql`.
#[derive(Debug, Clone)]
pub struct Schema {
    pub path: std::path::PathBuf,
    pub text: String,
    pub catalog: Catalog,
}

impl Schema {
    /// Loads `schema.sql` into an in-memory DuckDB and reads its catalog:
    /// DuckDB parses the SQL, so whatever the app's DuckDB accepts, we do.
    pub fn load(path: &Path) -> Result<Schema> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            bad_input(format!(
                "cannot read schema `{}`: {error}; fix `schema:` in upkeep.yaml",
                path.display()
            ))
        })?;
        // No file access: a schema must not attach, copy or read files.
        let config = duckdb::Config::default().enable_external_access(false)?;
        let conn = Connection::open_in_memory_with_flags(config)?;
        conn.execute_batch(&text).map_err(|error| {
            bad_input(format!(
                "{}: DuckDB cannot load this schema: {error}; it must hold CREATE SEQUENCE / CREATE TABLE statements",
                path.display()
            ))
        })?;
        let catalog = Catalog::read(&conn, "memory")
            .with_context(|| format!("cannot read the catalog of `{}`", path.display()))?;
        Ok(Schema {
            path: path.to_path_buf(),
            text,
            catalog,
        })
    }
}
