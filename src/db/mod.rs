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
pub mod live;
pub mod open;
pub mod repair;
pub mod restore;
pub mod retention;
pub mod rewind;
pub mod salvage;
pub mod swap;
pub mod wal;

pub use header::StorageVersion;
