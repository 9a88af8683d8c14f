//! `uses: git-pull` (`with: remote, branch`; default: the current branch's
//! upstream): brings the app's code up to date, fast-forward only.
//!
//! It refuses before doing anything when tracked files have uncommitted
//! changes, fetches, then fast-forwards (a diverged branch is an error, never
//! a merge). Git runs in the folder of upkeep.yaml. A dry-run writes nothing
//! into `.git`: it asks the remote with `git ls-remote`.
//!
//! The remote and the branch are names, never options: a value that starts
//! with `-` or breaks git's ref name rules is refused (exit 2), and every
//! git call puts `--` (or `--end-of-options`) before what follows.
//!
//! Crash safety: before it fetches, the step journals the commit it stands
//! on, and before it merges, the commit it is about to move to. A `kill -9`
//! can land anywhere in git's own work: HEAD moved or not, the index
//! written or not, some files of the new release written. The undo does not
//! trust any of it: it removes the lock files a killed git left (only those
//! no process has open), puts HEAD and the index back on the recorded
//! commit, and brings back every file the pull would change whose content
//! is the new release's. The step refused a dirty tree, so such a file was
//! written by the pull; a file holding anything else (changed by hand since)
//! is left alone, named, and the undo fails so that a person looks.
//! Git is started so that it dies with upkeep (`PR_SET_PDEATHSIG`): no git
//! outlives a killed upkeep to race with `upkeep recover`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::{Ctx, Plan, Ran, StepType, Undo, With, later};
use crate::error::bad_input;

pub struct GitPull;

/// Runs git in `dir`; its trimmed stdout, or an error with its stderr.
fn git(dir: &Path, args: &[&str]) -> Result<String> {
    git_with_input(dir, args, None)
}

/// Runs git in `dir` with `input` on its stdin.
fn git_with_input(dir: &Path, args: &[&str], input: Option<&[u8]>) -> Result<String> {
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(dir)
        // No background `gc` / maintenance that would outlive the step.
        .args(["-c", "gc.auto=0", "-c", "maintenance.auto=false"])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        // Paths are paths, never patterns.
        .env("GIT_LITERAL_PATHSPECS", "1")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl and getppid are async-signal-safe.
    unsafe { command.pre_exec(die_with_parent) };
    let mut child = command
        .spawn()
        .context("cannot run git: is it installed?")?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input)
            .context("cannot write to git's input")?;
    }
    let output = child.wait_with_output().context("cannot run git")?;
    if !output.status.success() {
        bail!(
            "`git {}` in `{}` failed: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// In the child before exec: be killed when upkeep dies. If upkeep died
/// already (the parent is not the one that forked), exit at once.
fn die_with_parent() -> std::io::Result<()> {
    // SAFETY: plain calls with no memory involved.
    unsafe {
        let parent = libc::getppid();
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if parent == 1 || libc::getppid() != parent {
            libc::_exit(125);
        }
    }
    Ok(())
}

/// Checks a name against git's ref name rules (`git check-ref-format`),
/// and that it cannot be read as an option.
pub fn valid_name(name: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        Some("is empty")
    } else if name.starts_with('-') {
        Some("starts with `-` (git would read it as an option)")
    } else if name == "@" {
        Some("is `@`")
    } else if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        Some("starts or ends with `/`, or holds `//`")
    } else if name.ends_with('.') {
        Some("ends with `.`")
    } else if name.contains("..") || name.contains("@{") {
        Some("holds `..` or `@{`")
    } else if name
        .chars()
        .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c))
    {
        Some("holds a space, a control character or one of ~ ^ : ? * [ \\")
    } else if name
        .split('/')
        .any(|part| part.starts_with('.') || part.ends_with(".lock"))
    {
        Some("has a part that starts with `.` or ends with `.lock`")
    } else {
        None
    };
    match why {
        Some(why) => Err(format!(
            "`{name}` {why}: not a valid git name (see `git check-ref-format`)"
        )),
        None => Ok(()),
    }
}

/// Checks `with: { remote, branch }` (after substitution, or literal).
fn check_names(with: &With, skip_later: bool) -> Result<(), String> {
    for key in ["remote", "branch"] {
        if let Some(value) = with.get(key)
            && !(skip_later && later(value))
        {
            valid_name(value).map_err(|why| format!("`{key}`: {why}"))?;
        }
    }
    Ok(())
}

/// The remote and branch to pull: `with:`, else the upstream of the current
/// branch. Refused (bad input) unless both are valid names.
fn source(dir: &Path, with: &With) -> Result<(String, String)> {
    check_names(with, false).map_err(bad_input)?;
    let (remote, branch) =
        if let (Some(remote), Some(branch)) = (with.get("remote"), with.get("branch")) {
            (remote.clone(), branch.clone())
        } else {
            let upstream = git(
                dir,
                &[
                    "rev-parse",
                    "--abbrev-ref",
                    "--symbolic-full-name",
                    "@{upstream}",
                ],
            )
            .context(
                "the current branch has no upstream: set one, or give `with: { remote, branch }`",
            )?;
            let (remote, branch) = upstream
                .split_once('/')
                .with_context(|| format!("cannot read the upstream `{upstream}`"))?;
            (
                with.get("remote")
                    .cloned()
                    .unwrap_or_else(|| remote.to_string()),
                with.get("branch")
                    .cloned()
                    .unwrap_or_else(|| branch.to_string()),
            )
        };
    for (key, value) in [("remote", &remote), ("branch", &branch)] {
        valid_name(value).map_err(|why| bad_input(format!("{key} {why}")))?;
    }
    Ok((remote, branch))
}

/// What a pull would bring: the commits of `remote/branch` that HEAD lacks.
pub(super) struct Incoming {
    /// `remote/branch`.
    pub source: String,
    /// How many; `None` when only a fetch can tell.
    pub count: Option<u64>,
    /// The same in words, for people.
    pub what: String,
}

/// What a pull would bring, asking the remote (`git ls-remote`): writes
/// nothing, for dry-runs. It counts only commits already fetched.
pub(super) fn asked(dir: &Path, with: &With) -> Result<Incoming> {
    let (remote, branch) = source(dir, with)?;
    let listing = git(
        dir,
        &["ls-remote", "--", &remote, &format!("refs/heads/{branch}")],
    )?;
    let remote_head = listing.split_whitespace().next().unwrap_or("");
    if remote_head.is_empty() {
        bail!("branch `{branch}` is not on `{remote}`");
    }
    if !is_hash(remote_head) {
        bail!("`{remote}` answered `{remote_head}` for branch `{branch}`, not a commit");
    }
    Ok(incoming(dir, remote_head, format!("{remote}/{branch}")))
}

/// What a pull would bring, after fetching it: exact. The fetch writes
/// only into `.git` (objects, `FETCH_HEAD`, the remote-tracking branch);
/// the code that runs is untouched. `record` journals the repository first,
/// as `run` does: a fetch killed halfway leaves lock files, which the undo
/// removes (see [`undo_fetch`]).
pub(super) fn fetched(ctx: &Ctx, with: &With) -> Result<Incoming> {
    let dir = &ctx.config.root;
    let (remote, branch) = source(dir, with)?;
    (ctx.record)(&Undo(json!({ "dir": dir })))?;
    git(dir, &["fetch", "--quiet", "--", &remote, &branch])?;
    let target = commit_of(dir, "FETCH_HEAD")?;
    Ok(incoming(dir, &target, format!("{remote}/{branch}")))
}

/// Undoes a fetch that may have been killed: removes the lock files of
/// the repository `undo` names that no process has open.
pub(super) fn undo_fetch(undo: &Undo) -> Result<String> {
    let Some(dir) = undo.0.get("dir").and_then(|v| v.as_str()) else {
        return Ok("nothing to undo".to_string());
    };
    let removed = remove_stale_locks(Path::new(dir))?;
    Ok(if removed.is_empty() {
        "nothing to undo".to_string()
    } else {
        format!(
            "removed the lock file(s) a killed git left: {}",
            removed.join(", ")
        )
    })
}

/// The commits between HEAD and `target` (the head of `source`).
fn incoming(dir: &Path, target: &str, source: String) -> Incoming {
    let head = git(dir, &["rev-parse", "HEAD"]).unwrap_or_default();
    let (count, what) = if target == head {
        (Some(0), "up to date: nothing to pull".to_string())
    } else if commit_of(dir, target).is_ok() {
        let count = git(
            dir,
            &[
                "rev-list",
                "--count",
                "--end-of-options",
                &format!("HEAD..{target}"),
            ],
        )
        .ok()
        .and_then(|count| count.parse::<u64>().ok());
        match count {
            Some(0) => (
                Some(0),
                format!("nothing to pull: HEAD already has {}", short(target)),
            ),
            Some(n) => (
                Some(n),
                format!("{n} incoming commit(s), up to {}", short(target)),
            ),
            None => (
                None,
                format!(
                    "`{source}` is at {}: cannot count its commits",
                    short(target)
                ),
            ),
        }
    } else {
        (
            None,
            format!(
                "`{source}` is at {}, which is not fetched yet: how many commits, only a fetch can tell (the real run fetches)",
                short(target)
            ),
        )
    };
    Incoming {
        source,
        count,
        what,
    }
}

/// Refuses when tracked files have uncommitted changes.
pub(super) fn clean(dir: &Path) -> Result<()> {
    let changes = git(dir, &["status", "--porcelain", "--untracked-files=no"])?;
    if !changes.is_empty() {
        bail!(
            "uncommitted changes to tracked files in `{}`: commit or stash them first, nothing was pulled:\n{changes}",
            dir.display()
        );
    }
    Ok(())
}

/// The commit a revision names, as a full hash.
fn commit_of(dir: &Path, revision: &str) -> Result<String> {
    git(
        dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &format!("{revision}^{{commit}}"),
        ],
    )
}

fn is_hash(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.chars().all(|c| c.is_ascii_hexdigit())
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

impl StepType for GitPull {
    fn needs_env(&self) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        "git-pull"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["remote", "branch"]
    }

    fn check(&self, with: &With) -> Result<(), String> {
        check_names(with, true)
    }

    fn plan(&self, ctx: &Ctx, with: &With) -> Plan {
        let dir = &ctx.config.root;
        let blocked = |error: anyhow::Error| Plan::blocked("pull the app's code", &error);
        if let Err(error) = clean(dir) {
            return blocked(error);
        }
        match asked(dir, with) {
            Ok(incoming) => Plan {
                summary: format!("fast-forward to `{}`: {}", incoming.source, incoming.what),
                changes: Some(incoming.count != Some(0)),
                ..Plan::default()
            },
            Err(error) => blocked(error),
        }
    }

    fn run(&self, ctx: &Ctx, with: &With) -> Result<Ran> {
        let dir = &ctx.config.root;
        let (remote, branch) = source(dir, with)?;
        clean(dir)?;
        let before = commit_of(dir, "HEAD")?;
        // Journaled before git writes anything: a fetch killed halfway
        // leaves lock files that would break the next one.
        (ctx.record)(&Undo(json!({ "dir": dir, "commit": before })))?;
        git(dir, &["fetch", "--quiet", "--", &remote, &branch])?;
        let target = commit_of(dir, "FETCH_HEAD")?;
        if target != before {
            (ctx.record)(&Undo(
                json!({ "dir": dir, "commit": before, "target": target }),
            ))?;
        }
        git(dir, &["merge", "--ff-only", "--quiet", "--", &target]).with_context(|| {
            format!(
                "`{remote}/{branch}` cannot be fast-forwarded to (diverged?): nothing was merged"
            )
        })?;
        let after = commit_of(dir, "HEAD")?;
        if after == before {
            return Ok(Ran::unchanged(
                format!("`{remote}/{branch}`: up to date"),
                Undo::nothing(),
            ));
        }
        Ok(Ran::changed(
            format!(
                "{} -> {} from `{remote}/{branch}`",
                short(&before),
                short(&after)
            ),
            Undo(json!({ "dir": dir, "commit": before, "target": target })),
        ))
    }

    fn undo(&self, _ctx: &Ctx, undo: &Undo) -> Result<String> {
        let (Some(dir), Some(commit)) = (
            undo.0.get("dir").and_then(|v| v.as_str()),
            undo.0.get("commit").and_then(|v| v.as_str()),
        ) else {
            bail!("the journal does not say which commit to go back to");
        };
        if !is_hash(commit) {
            bail!("the journal names `{commit}`, not a commit: look at the app's code by hand");
        }
        let target = undo
            .0
            .get("target")
            .and_then(|v| v.as_str())
            .filter(|t| is_hash(t));
        let dir = Path::new(dir);
        let removed = remove_stale_locks(dir)?;
        let foreign = back_to(dir, commit, target)?;
        let locks = if removed.is_empty() {
            String::new()
        } else {
            format!(
                " (removed the lock file(s) a killed git left: {})",
                removed.join(", ")
            )
        };
        if !foreign.is_empty() {
            bail!(
                "HEAD and the index are back on {}{locks}, but these files were changed after the pull, \
                 and hold neither the old nor the new release's version: {}; they were left as they are: \
                 look at them (`git -C {} diff`), then `upkeep recover`",
                short(commit),
                foreign.join(", "),
                dir.display()
            );
        }
        Ok(format!("the code is back on {}{locks}", short(commit)))
    }
}

/// Puts HEAD and the index on `commit`, and every file the pull changes
/// (between `commit` and `target`, HEAD or FETCH_HEAD) back as it was, when
/// it holds the pulled version. Returns the files that hold something else.
fn back_to(dir: &Path, commit: &str, target: Option<&str>) -> Result<Vec<String>> {
    let mut newer: BTreeSet<String> = target.into_iter().map(str::to_string).collect();
    for revision in ["HEAD", "FETCH_HEAD"] {
        if let Ok(found) = commit_of(dir, revision) {
            newer.insert(found);
        }
    }
    newer.remove(commit);
    let old = tree(dir, commit)?;
    let mut pulled: Vec<BTreeMap<String, String>> = Vec::new();
    let mut paths: BTreeSet<String> = BTreeSet::new();
    for revision in &newer {
        let files = tree(dir, revision)?;
        paths.extend(
            files
                .iter()
                .filter(|(path, blob)| old.get(*path) != Some(*blob))
                .map(|(path, _)| path.clone()),
        );
        paths.extend(
            old.keys()
                .filter(|path| !files.contains_key(*path))
                .cloned(),
        );
        pulled.push(files);
    }
    // HEAD (the branch) and the whole index back on the recorded commit;
    // the work tree is untouched by this.
    git(dir, &["reset", "--quiet", "--mixed", commit, "--"])?;
    let mut checkout = Vec::new();
    let mut foreign = Vec::new();
    for path in &paths {
        let now = content(dir, path)?;
        let was = old.get(path);
        if now.as_ref() == was {
            continue;
        }
        let by_the_pull = pulled.iter().any(|files| files.get(path) == now.as_ref());
        match (by_the_pull, was) {
            (false, _) => foreign.push(format!("`{path}`")),
            (true, Some(_)) => checkout.push(path.as_str()),
            (true, None) => remove_file(dir, path)?,
        }
    }
    if !checkout.is_empty() {
        let mut list = Vec::new();
        for path in &checkout {
            list.extend_from_slice(path.as_bytes());
            list.push(0);
        }
        git_with_input(
            dir,
            &[
                "checkout",
                "--quiet",
                "--pathspec-from-file=-",
                "--pathspec-file-nul",
                commit,
            ],
            Some(&list),
        )?;
    }
    Ok(foreign)
}

/// The files of a commit: path -> "mode blob".
fn tree(dir: &Path, commit: &str) -> Result<BTreeMap<String, String>> {
    let listing = git(
        dir,
        &[
            "ls-tree",
            "-r",
            "-z",
            "--full-tree",
            "--end-of-options",
            commit,
        ],
    )?;
    Ok(listing
        .split('\0')
        .filter_map(|line| {
            let (meta, path) = line.split_once('\t')?;
            let mut parts = meta.split(' ');
            let mode = parts.next()?;
            let _kind = parts.next()?;
            let blob = parts.next()?;
            Some((path.to_string(), format!("{} {blob}", mode_class(mode))))
        })
        .collect())
}

/// Git's modes as the work tree can show them: a link, an executable file,
/// a plain file (or something else).
fn mode_class(mode: &str) -> &'static str {
    match mode {
        "120000" => "link",
        "100755" => "exec",
        "100644" => "file",
        _ => "other",
    }
}

/// What the work tree holds at `path`, as `tree` lists it; `None` if
/// nothing is there.
fn content(dir: &Path, path: &str) -> Result<Option<String>> {
    use std::os::unix::fs::PermissionsExt;
    let full = dir.join(path);
    let Ok(meta) = std::fs::symlink_metadata(&full) else {
        return Ok(None);
    };
    let (class, bytes) = if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&full)
            .with_context(|| format!("cannot read link `{}`", full.display()))?;
        ("link", target.into_os_string().into_encoded_bytes())
    } else if meta.is_file() {
        let class = if meta.permissions().mode() & 0o111 != 0 {
            "exec"
        } else {
            "file"
        };
        (
            class,
            std::fs::read(&full).with_context(|| format!("cannot read `{}`", full.display()))?,
        )
    } else {
        return Ok(Some("something else".to_string()));
    };
    // As git would store the file: through its attributes (line endings,
    // filters) for that path.
    let path_flag = format!("--path={path}");
    let args: &[&str] = if class == "link" {
        &["hash-object", "--no-filters", "--stdin"]
    } else {
        &["hash-object", "--stdin", &path_flag]
    };
    let blob = git_with_input(dir, args, Some(&bytes))?;
    Ok(Some(format!("{class} {blob}")))
}

/// Removes a file the pull added, and the folders it leaves empty.
fn remove_file(dir: &Path, path: &str) -> Result<()> {
    let full = dir.join(path);
    std::fs::remove_file(&full).with_context(|| format!("cannot remove `{}`", full.display()))?;
    let mut folder = full.parent();
    while let Some(current) = folder {
        if current == dir || std::fs::remove_dir(current).is_err() {
            break;
        }
        folder = current.parent();
    }
    Ok(())
}

/// Removes the `*.lock` files of the repository's git folder and refs that
/// no process has open: what a killed git leaves, and what would make every
/// later git command fail. A lock some process has open is a git at work:
/// refused, with its PID.
fn remove_stale_locks(dir: &Path) -> Result<Vec<String>> {
    let git_dir = PathBuf::from(git(dir, &["rev-parse", "--absolute-git-dir"])?);
    let refs = git_dir.join("refs");
    let mut locks = Vec::new();
    let mut folders = vec![git_dir.clone()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            // The git folder's own files, and its refs, recursively.
            if kind.is_dir() {
                if path.starts_with(&refs) {
                    folders.push(path);
                }
            } else if kind.is_file() && path.extension().is_some_and(|ext| ext == "lock") {
                locks.push(path);
            }
        }
    }
    if locks.is_empty() {
        return Ok(Vec::new());
    }
    let open = open_files();
    let mut removed = Vec::new();
    for lock in locks {
        let real = std::fs::canonicalize(&lock).unwrap_or_else(|_| lock.clone());
        if let Some(pid) = open.get(&real) {
            bail!(
                "`{}` is held by process {pid}{}: a git is still at work in `{}`; wait for it to end, then `upkeep recover`",
                lock.display(),
                crate::process::describe(*pid),
                dir.display()
            );
        }
        std::fs::remove_file(&lock)
            .with_context(|| format!("cannot remove the stale `{}`", lock.display()))?;
        removed.push(
            lock.strip_prefix(&git_dir)
                .unwrap_or(&lock)
                .display()
                .to_string(),
        );
    }
    crate::fsx::sync_parent(&git_dir.join("index"))?;
    Ok(removed)
}

/// Every file some process has open, with one such process (from /proc).
fn open_files() -> BTreeMap<PathBuf, u32> {
    let mut open = BTreeMap::new();
    for process in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        for fd in std::fs::read_dir(process.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                open.entry(target).or_insert(pid);
            }
        }
    }
    open
}
