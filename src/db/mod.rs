//! Everything upkeep does to DuckDB files: open, check, back up, restore,
//! repair. The commands (`upkeep check`, ...) and the pipeline step types
//! (`uses: integrity`, ...) both call these functions: one implementation,
//! two entry points.

pub mod backup;
pub mod backups;
pub mod blocks;
pub mod catalog;
pub mod check;
pub mod fresh;
pub mod header;
pub mod layout;
pub mod leaves;
pub mod live;
pub mod open;
pub mod repair;
pub mod restore;
pub mod retention;
pub mod rewind;
pub mod salvage;
pub mod segment;
pub mod swap;
pub mod topup;
pub mod wal;

use std::path::PathBuf;

pub use header::StorageVersion;

/// One configured environment (`databases:` in upkeep.yaml): its name and
/// its database file. Defined here, where every user of it looks down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub name: String,
    pub db: PathBuf,
}

impl Env {
    /// No environment: for a pipeline none of whose steps works on one.
    pub fn none() -> Env {
        Env {
            name: String::new(),
            db: PathBuf::new(),
        }
    }

    pub fn is_none(&self) -> bool {
        self.name.is_empty()
    }
}
