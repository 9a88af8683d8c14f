//! The crash journal: what a run did, written down before it moves on.
//!
//! Each event is one JSON line, appended and synced (`fsync`) before the
//! next step starts, in `state_dir/runs/RUN_ID.jsonl`. A journal without a
//! `run_finished` line belongs to a run that was interrupted (crash,
//! `kill -9`, power loss) or of one whose rollback did not complete (exit
//! 3): `upkeep run` refuses to start while one exists, and `upkeep recover`
//! reads it to stop what the run left running and undo, newest first, what
//! was done and not yet undone.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::action::{Action, Outcome, Undo};
use crate::fsx;
use crate::process::Group;

/// A run id, which names its journal and its log: the UTC time and the
/// process id, unique on this machine.
pub fn new_run_id() -> String {
    format!(
        "{}-{}",
        jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ"),
        std::process::id()
    )
}

/// How to undo one step, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Undoing {
    /// The step's `rollback:` (a shell command or a built-in action).
    Action { action: Action },
    /// A built-in step type's own undo, with what its run recorded.
    Builtin { uses: String, undo: Undo },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Entry {
    RunStarted {
        run_id: String,
        pipeline: String,
        path: PathBuf,
        env: String,
        vars: BTreeMap<String, String>,
        started_at: String,
    },
    /// A step begins; `undo` is its `rollback:`, which also covers a step
    /// that was interrupted halfway.
    StepStarted {
        step: usize,
        name: String,
        undo: Option<Undoing>,
    },
    /// The process group of a command a step (or rollback) started.
    StepProcess {
        step: usize,
        group: Group,
    },
    /// A built-in step says how to undo what it is about to do.
    StepUndo {
        step: usize,
        undo: Undoing,
    },
    StepDone {
        step: usize,
        outcome: Outcome,
        undo: Option<Undoing>,
    },
    RollbackStarted {
        step: usize,
    },
    RollbackDone {
        step: usize,
        ok: bool,
        message: String,
    },
    /// A temporary file (a backup's copy, a manifest being written) the run
    /// is about to create, written before it is: `recover` removes it if
    /// it is still there (once named, it is gone under this name).
    Temporary {
        path: PathBuf,
    },
    RunFinished {
        exit_code: i32,
    },
}

/// An open journal, appended to and synced entry by entry.
pub struct Journal {
    file: File,
    pub path: PathBuf,
}

fn runs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("runs")
}

impl Journal {
    pub fn create(state_dir: &Path, run_id: &str) -> Result<Journal> {
        let dir = runs_dir(state_dir);
        fsx::create_private_dir(&dir)?;
        let path = dir.join(format!("{run_id}.jsonl"));
        let file = fsx::private_options()
            .create_new(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot create journal `{}`", path.display()))?;
        fsx::sync_parent(&path)?;
        Ok(Journal { file, path })
    }

    pub fn open(path: &Path) -> Result<Journal> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open journal `{}`", path.display()))?;
        // A journal left by an older upkeep may be readable by all.
        fsx::make_private(path);
        Ok(Journal {
            file,
            path: path.to_path_buf(),
        })
    }

    /// A second handle on the same journal, appending after the first: for
    /// what other layers journal on their own (see [`Journal::announce_temporaries`]).
    pub fn try_clone(&self) -> Result<Journal> {
        Ok(Journal {
            file: self
                .file
                .try_clone()
                .with_context(|| format!("cannot open journal `{}`", self.path.display()))?,
            path: self.path.clone(),
        })
    }

    /// Journals each temporary file the process makes, before it is
    /// created (see [`crate::fsx::announce_temporaries`]).
    pub fn announce_temporaries(&self) -> Result<crate::fsx::AnnounceGuard> {
        let journal = std::sync::Mutex::new(self.try_clone()?);
        Ok(crate::fsx::announce_temporaries(Box::new(move |path| {
            journal
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .write(&Entry::Temporary {
                    path: path.to_path_buf(),
                })
                .map_err(std::io::Error::other)
        })))
    }

    /// Appends an entry and syncs it (and any entry before it) to disk
    /// before returning.
    pub fn write(&mut self, entry: &Entry) -> Result<()> {
        self.append(entry)?;
        self.file
            .sync_data()
            .with_context(|| format!("cannot sync journal `{}`", self.path.display()))
    }

    /// Appends a step's end without syncing: the entry that always follows
    /// it (the next step's start, a rollback's start, the run's end) is
    /// synced before anything else happens, and carries it to disk. It
    /// survives a killed upkeep either way (it is in the kernel's cache);
    /// this saves one sync per step.
    pub fn write_step_done(&mut self, entry: &Entry) -> Result<()> {
        self.append(entry)
    }

    fn append(&mut self, entry: &Entry) -> Result<()> {
        let mut line = serde_json::to_string(entry)?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .with_context(|| format!("cannot write journal `{}`", self.path.display()))
    }
}

/// Reads a journal's entries. A last line cut short by a crash is ignored.
pub fn read(path: &Path) -> Result<Vec<Entry>> {
    let file =
        File::open(path).with_context(|| format!("cannot read journal `{}`", path.display()))?;
    let mut entries = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.with_context(|| format!("cannot read journal `{}`", path.display()))?;
        if let Ok(entry) = serde_json::from_str(&line) {
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// The journals of runs that did not finish, oldest first.
pub fn unfinished(state_dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = runs_dir(state_dir);
    let mut found = Vec::new();
    let Ok(listing) = std::fs::read_dir(&dir) else {
        return Ok(found);
    };
    for entry in listing.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "jsonl")
            && !read(&path)?
                .iter()
                .any(|entry| matches!(entry, Entry::RunFinished { .. }))
        {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// The process groups of steps and rollbacks the run started and did not
/// finish, newest first: what an interrupted step or rollback left running.
/// (What a finished step or rollback started on purpose, an app in the
/// background, is for rollbacks to stop.)
pub fn groups(entries: &[Entry]) -> Vec<Group> {
    let ends_after = |from: usize, done: &dyn Fn(&Entry) -> bool| entries[from..].iter().any(done);
    let mut found = Vec::new();
    // Whether each step's rollback is under way, as the journal goes.
    let mut rolling_back: Vec<usize> = Vec::new();
    for (at, entry) in entries.iter().enumerate() {
        match entry {
            Entry::RollbackStarted { step } => rolling_back.push(*step),
            Entry::RollbackDone { step, .. } => rolling_back.retain(|s| s != step),
            Entry::StepProcess { step, group } => {
                let finished = if rolling_back.contains(step) {
                    ends_after(
                        at,
                        &|e| matches!(e, Entry::RollbackDone { step: s, .. } if s == step),
                    )
                } else {
                    ends_after(
                        at,
                        &|e| matches!(e, Entry::StepDone { step: s, .. } if s == step),
                    )
                };
                if !finished {
                    found.push(*group);
                }
            }
            _ => {}
        }
    }
    found.reverse();
    found
}

/// The temporary files the run journaled (see [`Entry::Temporary`]) that
/// are still there, with the `.wal` DuckDB may have left beside one (a
/// snapshot hook's copy): what the run had begun and not finished. Only
/// upkeep's own temporary names: a journal names nothing else for removal.
pub fn temporaries(entries: &[Entry]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in entries {
        let Entry::Temporary { path } = entry else {
            continue;
        };
        let ours = path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with(fsx::PARTIAL_PREFIX));
        if !ours || !path.is_absolute() {
            continue;
        }
        for candidate in [path.clone(), fsx::with_suffix(path, ".wal")] {
            if candidate.symlink_metadata().is_ok() && !found.contains(&candidate) {
                found.push(candidate);
            }
        }
    }
    found
}

/// What is still to undo after an interruption, newest first: steps that
/// started (done or halfway) and whose rollback has not completed.
pub fn pending_undos(entries: &[Entry]) -> Vec<(usize, String, Undoing)> {
    let mut started: Vec<(usize, String, Option<Undoing>)> = Vec::new();
    let mut rolled_back: Vec<usize> = Vec::new();
    for entry in entries {
        match entry {
            Entry::StepStarted { step, name, undo } => {
                started.push((*step, name.clone(), undo.clone()))
            }
            Entry::StepUndo { step, undo } => {
                if let Some(last) = started.iter_mut().rev().find(|(s, _, _)| s == step) {
                    // The step's own `rollback:` comes first; a first
                    // attempt's undo before a retry's. A step may add to
                    // what it recorded as it goes (git-pull: the commit it
                    // leaves, then the one it moves to).
                    match &last.2 {
                        None => last.2 = Some(undo.clone()),
                        Some(earlier) if extends(undo, earlier) => last.2 = Some(undo.clone()),
                        Some(_) => {}
                    }
                }
            }
            Entry::StepDone { step, undo, .. } => {
                if let Some(last) = started.iter_mut().rev().find(|(s, _, _)| s == step) {
                    // What the step did decides how to undo it, once known.
                    if undo.is_some() {
                        last.2 = undo.clone();
                    }
                }
            }
            // A failed rollback is still to do: `recover` tries it again.
            Entry::RollbackDone { step, ok: true, .. } => rolled_back.push(*step),
            _ => {}
        }
    }
    started
        .into_iter()
        .rev()
        .filter(|(step, _, _)| !rolled_back.contains(step))
        .filter_map(|(step, name, undo)| Some((step, name, undo?)))
        .collect()
}

/// Whether `newer` is `earlier` with more said: the same built-in type, and
/// every field of `earlier` in `newer` with the same value.
fn extends(newer: &Undoing, earlier: &Undoing) -> bool {
    match (newer, earlier) {
        (
            Undoing::Builtin { uses, undo: new },
            Undoing::Builtin {
                uses: old_uses,
                undo: old,
            },
        ) if uses == old_uses => match (new.0.as_object(), old.0.as_object()) {
            (Some(new), Some(old)) => old.iter().all(|(key, value)| new.get(key) == Some(value)),
            _ => false,
        },
        _ => false,
    }
}
