//! End-to-end tests: the real `upkeep` binary on real DuckDB files in temp
//! dirs, with a real app process where one is needed. One test crate, so
//! DuckDB is linked into few binaries.

mod ansible;
mod backup;
mod changed;
mod check;
mod config;
mod corruption;
mod crash;
mod demo;
mod docs;
mod file_modes;
mod fuzz;
mod git_pull;
mod health;
mod hostile_input;
mod injection;
mod layers;
mod live_app;
mod live_backup;
mod live_copy;
mod live_restore_point;
mod messages;
mod migrate;
mod offsite;
mod offsite_input;
mod offsite_points;
mod offsite_trust;
mod pipeline;
mod reflink;
mod repair;
mod replicate;
mod reports;
mod restore;
mod schedule;
mod scripts;
mod shell;
mod storage_version;
mod support;
mod terminal;
mod update;
mod wal;
mod wal_segments;
mod workflows;
