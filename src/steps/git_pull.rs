//! `uses: git-pull` (`with: remote, branch`; default: the current branch's
//! upstream): brings the app's code up to date, fast-forward only.
//!
//! It refuses before doing anything when tracked files have uncommitted
//! changes, fetches, then fast-forwards (a diverged branch is an error, never
//! a merge). It records the commit it left; its undo puts the work tree back
//! on that commit (`git reset --keep`, which refuses rather than lose local
//! changes). Git runs in the folder of upkeep.yaml. A dry-run writes nothing
//! into `.git`: it asks the remote with `git ls-remote`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::{Ctx, Plan, StepType, Undo, With};

pub struct GitPull;

/// Runs git in `dir`; its trimmed stdout, or an error with its stderr.
fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot run git: is it installed?")?;
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

/// The remote and branch to pull: `with:`, else the upstream of the current
/// branch.
fn source(dir: &Path, with: &With) -> Result<(String, String)> {
    if let (Some(remote), Some(branch)) = (with.get("remote"), with.get("branch")) {
        return Ok((remote.clone(), branch.clone()));
    }
    let upstream = git(
        dir,
        &[
            "rev-parse",
            "--abbrev-ref",
            "--symbolic-full-name",
            "@{upstream}",
        ],
    )
    .context("the current branch has no upstream: set one, or give `with: { remote, branch }`")?;
    let (remote, branch) = upstream
        .split_once('/')
        .with_context(|| format!("cannot read the upstream `{upstream}`"))?;
    Ok((
        with.get("remote")
            .cloned()
            .unwrap_or_else(|| remote.to_string()),
        with.get("branch")
            .cloned()
            .unwrap_or_else(|| branch.to_string()),
    ))
}

/// Refuses when tracked files have uncommitted changes.
fn clean(dir: &Path) -> Result<()> {
    let changes = git(dir, &["status", "--porcelain", "--untracked-files=no"])?;
    if !changes.is_empty() {
        bail!(
            "uncommitted changes to tracked files in `{}`: commit or stash them first, nothing was pulled:\n{changes}",
            dir.display()
        );
    }
    Ok(())
}

impl StepType for GitPull {
    fn name(&self) -> &'static str {
        "git-pull"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["remote", "branch"]
    }

    fn plan(&self, ctx: &Ctx, with: &With) -> Plan {
        let dir = &ctx.config.root;
        let blocked = |error: anyhow::Error| Plan::blocked("pull the app's code", &error);
        if let Err(error) = clean(dir) {
            return blocked(error);
        }
        let (remote, branch) = match source(dir, with) {
            Ok(source) => source,
            Err(error) => return blocked(error),
        };
        let head = git(dir, &["rev-parse", "HEAD"]).unwrap_or_default();
        let remote_head = match git(
            dir,
            &["ls-remote", &remote, &format!("refs/heads/{branch}")],
        ) {
            Ok(listing) => listing.split_whitespace().next().unwrap_or("").to_string(),
            Err(error) => return blocked(error),
        };
        let what = if remote_head.is_empty() {
            return blocked(anyhow::anyhow!("branch `{branch}` is not on `{remote}`"));
        } else if remote_head == head {
            "up to date: nothing to pull".to_string()
        } else if git(
            dir,
            &["cat-file", "-e", &format!("{remote_head}^{{commit}}")],
        )
        .is_ok()
        {
            let count = git(
                dir,
                &["rev-list", "--count", &format!("HEAD..{remote_head}")],
            )
            .unwrap_or_default();
            format!(
                "{count} incoming commit(s), up to {}",
                &remote_head[..remote_head.len().min(12)]
            )
        } else {
            format!(
                "`{remote}/{branch}` is at {}, which is not fetched yet: how many commits, only a fetch can tell (the real run fetches)",
                &remote_head[..remote_head.len().min(12)]
            )
        };
        Plan {
            summary: format!("fast-forward to `{remote}/{branch}`: {what}"),
            ..Plan::default()
        }
    }

    fn run(&self, ctx: &Ctx, with: &With) -> Result<(String, Undo)> {
        let dir = &ctx.config.root;
        clean(dir)?;
        let (remote, branch) = source(dir, with)?;
        let before = git(dir, &["rev-parse", "HEAD"])?;
        git(dir, &["fetch", "--quiet", &remote, &branch])?;
        git(dir, &["merge", "--ff-only", "--quiet", "FETCH_HEAD"]).with_context(|| {
            format!(
                "`{remote}/{branch}` cannot be fast-forwarded to (diverged?): nothing was merged"
            )
        })?;
        let after = git(dir, &["rev-parse", "HEAD"])?;
        let undo = if after == before {
            Undo::nothing()
        } else {
            Undo(json!({ "dir": dir, "commit": before }))
        };
        let short = |commit: &str| commit[..commit.len().min(12)].to_string();
        let detail = if after == before {
            format!("`{remote}/{branch}`: up to date")
        } else {
            format!(
                "{} -> {} from `{remote}/{branch}`",
                short(&before),
                short(&after)
            )
        };
        Ok((detail, undo))
    }

    fn undo(&self, _ctx: &Ctx, undo: &Undo) -> Result<String> {
        let (Some(dir), Some(commit)) = (
            undo.0.get("dir").and_then(|v| v.as_str()),
            undo.0.get("commit").and_then(|v| v.as_str()),
        ) else {
            bail!("the journal does not say which commit to go back to");
        };
        git(Path::new(dir), &["reset", "--keep", commit])?;
        Ok(format!(
            "the code is back on {}",
            &commit[..commit.len().min(12)]
        ))
    }
}
