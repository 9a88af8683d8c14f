//! The backups folder: names, manifests, and which backups can be trusted.
//!
//! Backups are named `{env}_data_{YYYYMMDD_HHMMSS}.duckdb` (UTC), as the old
//! scripts named them, so that their backups are listed, rotated and
//! restorable too. A backup made by upkeep has a manifest beside it
//! (`NAME.manifest.json`); one without is a legacy backup of the old scripts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::db::retention::Rotation;
use crate::error::bad_input;
use crate::fsx;

/// What a manifest records about a backup, so that it can be verified
/// later without trusting the file's name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub env: String,
    pub source: PathBuf,
    pub created_at: String,
    pub size: u64,
    pub blake3: String,
    pub tables: BTreeMap<String, u64>,
    pub duckdb_version: String,
    pub storage_version: String,
    pub upkeep_version: String,
    pub verified: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Made and verified by upkeep; the manifest matches the file's size.
    Verified,
    /// A manifest that is unreadable or does not match the file.
    Unverified,
    /// Made by the old scripts: no manifest.
    Legacy,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Verified => "verified",
            Status::Unverified => "unverified",
            Status::Legacy => "legacy",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Backup {
    pub name: String,
    #[serde(skip)]
    pub path: PathBuf,
    /// `YYYYMMDD_HHMMSS`, UTC: sorts in time order.
    #[serde(skip)]
    pub stamp: String,
    /// The same moment for people, `2024-01-15 02:00:00 UTC`.
    pub time: String,
    pub size: u64,
    pub status: Status,
    #[serde(skip)]
    pub manifest: Option<Manifest>,
    /// The rotation rules that keep this backup (`last`, `daily`, ...,
    /// `newest verified`); empty when the next rotation deletes it. Filled
    /// by [`mark_kept`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept_by: Vec<&'static str>,
}

/// What `upkeep verify` found of one backup (local or off-site).
#[derive(Debug, Serialize)]
pub struct Finding {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// The file name of the backup of `env` taken at `stamp`.
pub fn file_name(env: &str, stamp: &str) -> String {
    format!("{env}_data_{stamp}.duckdb")
}

/// Where the manifest of a backup file lives.
pub fn manifest_path(backup: &Path) -> PathBuf {
    fsx::with_suffix(backup, ".manifest.json")
}

/// The most a manifest may hold, here or off-site: one is a few KiB (its
/// tables' row counts), so anything over this is damage, or not upkeep's,
/// and is refused without being read whole.
pub const MANIFEST_LIMIT: u64 = 4 << 20;

/// Reads a manifest file's bytes. Anything but a whole, well-typed manifest
/// is an error: the backup then counts as unverified.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// The stamp in a backup name of `env`, if the name is one.
pub fn stamp_of(env: &str, name: &str) -> Option<String> {
    let stamp = name
        .strip_prefix(env)?
        .strip_prefix("_data_")?
        .strip_suffix(".duckdb")?;
    let bytes = stamp.as_bytes();
    let well_formed = bytes.len() == 15
        && bytes[8] == b'_'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, byte)| i == 8 || byte.is_ascii_digit());
    well_formed.then(|| stamp.to_string())
}

pub fn human_time(stamp: &str) -> String {
    format!(
        "{}-{}-{} {}:{}:{} UTC",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    )
}

/// The backups of `env` in `dir`, oldest first. A missing folder holds none.
pub fn list(dir: &Path, env: &str) -> Result<Vec<Backup>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot list backups folder `{}`", dir.display()));
        }
    };
    let mut backups = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list `{}`", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stamp) = stamp_of(env, &name) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        backups.push(describe(entry.path(), name, stamp, meta.len()));
    }
    backups.sort_by(|a, b| a.stamp.cmp(&b.stamp).then(a.name.cmp(&b.name)));
    Ok(backups)
}

fn describe(path: PathBuf, name: String, stamp: String, size: u64) -> Backup {
    let manifest_file = manifest_path(&path);
    let (manifest, status) = match fsx::read_at_most(&manifest_file, MANIFEST_LIMIT) {
        Err(_) if !manifest_file.exists() => (None, Status::Legacy),
        Err(_) => (None, Status::Unverified),
        Ok(bytes) => match parse_manifest(&bytes) {
            Ok(manifest) if manifest.verified && manifest.size == size => {
                (Some(manifest), Status::Verified)
            }
            Ok(manifest) => (Some(manifest), Status::Unverified),
            Err(_) => (None, Status::Unverified),
        },
    };
    Backup {
        time: human_time(&stamp),
        name,
        path,
        stamp,
        size,
        status,
        manifest,
        kept_by: Vec::new(),
    }
}

/// What rotation keeps of `backups` (oldest first, as [`list`] gives
/// them) and why: each backup's rules, plus `newest verified` for the
/// newest verified backup, which is never deleted whatever the rules say.
pub fn mark_kept(backups: &mut [Backup], rotation: &Rotation) {
    mark_kept_after(backups, rotation, None);
}

/// [`mark_kept`] right after `just_made` was made: it counts as the newest
/// backup (see [`Rotation::kept_after`]).
fn mark_kept_after(backups: &mut [Backup], rotation: &Rotation, just_made: Option<&str>) {
    let listed: Vec<(&str, bool)> = backups
        .iter()
        .map(|backup| (backup.stamp.as_str(), backup.status == Status::Verified))
        .collect();
    let just_made = just_made.and_then(|name| backups.iter().position(|b| b.name == name));
    let reasons = rotation.kept_after(&listed, just_made);
    for (backup, reasons) in backups.iter_mut().zip(reasons) {
        backup.kept_by = reasons;
    }
}

/// Gives a complete, synced backup file its name in the backups folder,
/// its manifest first: a manifest never stands beside a file that is not
/// its backup (one left by a crash before the file is named is swept by
/// the next rotation).
pub fn publish(partial: tempfile::NamedTempFile, path: &Path, manifest: &Manifest) -> Result<()> {
    let manifest_path = manifest_path(path);
    fsx::write_atomic(&manifest_path, &serde_json::to_vec_pretty(manifest)?)?;
    fsx::publish(partial, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&manifest_path);
    })
}

/// Finds the backup a user named for a restore. Only a plain file name of a
/// backup of `env` inside the backups folder is accepted: no paths, no `..`.
pub fn resolve(dir: &Path, env: &str, name: &str) -> Result<Backup> {
    let plain = !name.is_empty()
        && !name.contains('/')
        && !name.contains('\\')
        && name != "."
        && name != "..";
    if !plain {
        return Err(bad_input(format!(
            "backup `{name}` is not a backup name: give a name from `upkeep backups {env}` (no paths)"
        )));
    }
    list(dir, env)?
        .into_iter()
        .find(|backup| backup.name == name)
        .ok_or_else(|| {
            bad_input(format!(
                "no backup `{name}` of `{env}` in `{}`: see `upkeep backups {env}` for the names",
                dir.display()
            ))
        })
}

/// Deletes the backups of `env` that `rotation` does not keep. Never
/// deleted, whatever the rules say: `protect` (the backup just made, even if
/// a clock set back makes it look older) and the newest verified backup.
/// The backup just made is one of `keep: N`'s (or `last: N`'s) N, and the
/// newest verified one: N remain. Also removes manifests whose backup is
/// gone. Returns the names deleted.
pub fn rotate(dir: &Path, env: &str, rotation: &Rotation, protect: &str) -> Result<Vec<String>> {
    sweep_orphan_manifests(dir, env);
    let mut backups = list(dir, env)?;
    mark_kept_after(&mut backups, rotation, Some(protect));
    let mut deleted = Vec::new();
    for backup in backups.iter().filter(|backup| backup.kept_by.is_empty()) {
        if backup.name == protect {
            continue;
        }
        std::fs::remove_file(&backup.path)
            .with_context(|| format!("cannot delete old backup `{}`", backup.path.display()))?;
        let _ = std::fs::remove_file(manifest_path(&backup.path));
        deleted.push(backup.name.clone());
    }
    if !deleted.is_empty() {
        fsx::sync_parent(&dir.join("x"))?;
    }
    Ok(deleted)
}

/// Manifests of `env` whose backup file no longer exists (a crash between
/// writing the manifest and naming the backup).
fn sweep_orphan_manifests(dir: &Path, env: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(backup) = name.strip_suffix(".manifest.json")
            && stamp_of(env, backup).is_some()
            && !dir.join(backup).exists()
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_of_the_env_with_a_full_stamp_are_backups() {
        assert_eq!(
            stamp_of("production", "production_data_20240115_020000.duckdb").as_deref(),
            Some("20240115_020000")
        );
        assert_eq!(
            stamp_of("production", "staging_data_20240115_020000.duckdb"),
            None
        );
        assert_eq!(
            stamp_of("production", "production_data_2024011_020000.duckdb"),
            None
        );
        assert_eq!(
            stamp_of("production", "production_data_20240115_020000.duckdb.wal"),
            None
        );
    }
}
