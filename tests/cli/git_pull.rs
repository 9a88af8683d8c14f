//! `uses: git-pull` with real git repositories: an origin, the app's work
//! tree (the sandbox), and a developer's clone that pushes a release.

use crate::support::*;

/// The sandbox as the app's work tree on `main` at "v1", tracking an origin;
/// a developer clone has pushed "v2". Returns (origin dir, dev dir).
fn repos(sandbox: &Sandbox) -> (tempfile::TempDir, tempfile::TempDir) {
    let root = sandbox.dir.path();
    sandbox.write(".gitignore", "data/\nbackups/\n.upkeep/\npipelines/\n");
    sandbox.write("app.txt", "v1\n");
    git(root, &["init", "-q", "-b", "main"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "v1"]);
    let origin = tempfile::tempdir().unwrap();
    git(origin.path(), &["init", "-q", "--bare", "-b", "main"]);
    git(
        root,
        &["remote", "add", "origin", origin.path().to_str().unwrap()],
    );
    git(root, &["push", "-q", "-u", "origin", "main"]);
    let dev = tempfile::tempdir().unwrap();
    git(
        dev.path(),
        &["clone", "-q", origin.path().to_str().unwrap(), "."],
    );
    std::fs::write(dev.path().join("app.txt"), "v2\n").unwrap();
    git(dev.path(), &["commit", "-q", "-am", "v2"]);
    git(dev.path(), &["push", "-q"]);
    (origin, dev)
}

#[test]
fn pulls_fast_forward_and_goes_back_on_rollback() {
    let sandbox = Sandbox::new();
    let (_origin, _dev) = repos(&sandbox);
    let root = sandbox.dir.path();
    let before = git(root, &["rev-parse", "HEAD"]);
    sandbox.pipeline(
        "fails",
        "env: production\nsteps:\n- uses: git-pull\n- run: \"grep -q v2 app.txt && exit 1\"\n",
    );
    sandbox
        .upkeep(&["run", "fails"])
        .code(1)
        .stdout_has("from `origin/main`")
        .stdout_has("the code is back on");
    assert_eq!(git(root, &["rev-parse", "HEAD"]), before);
    assert_eq!(
        std::fs::read_to_string(root.join("app.txt")).unwrap(),
        "v1\n"
    );
}

#[test]
fn a_dirty_work_tree_is_refused_before_anything() {
    let sandbox = Sandbox::new();
    let (_origin, _dev) = repos(&sandbox);
    let root = sandbox.dir.path();
    sandbox.pipeline("pull", "env: production\nsteps:\n- uses: git-pull\n");
    sandbox.write("app.txt", "edited on the server\n");
    let head = git(root, &["rev-parse", "HEAD"]);
    sandbox
        .upkeep(&["run", "pull"])
        .code(1)
        .stdout_has("uncommitted changes to tracked files");
    assert_eq!(git(root, &["rev-parse", "HEAD"]), head);
    assert!(
        !root.join(".git/FETCH_HEAD").exists(),
        "nothing may be fetched"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("app.txt")).unwrap(),
        "edited on the server\n"
    );
}

#[test]
fn a_diverged_branch_is_never_merged() {
    let sandbox = Sandbox::new();
    let (_origin, _dev) = repos(&sandbox);
    let root = sandbox.dir.path();
    sandbox.write("app.txt", "hotfix on the server\n");
    git(root, &["commit", "-q", "-am", "hotfix"]);
    let head = git(root, &["rev-parse", "HEAD"]);
    sandbox.pipeline("pull", "env: production\nsteps:\n- uses: git-pull\n");
    sandbox
        .upkeep(&["run", "pull"])
        .code(1)
        .stdout_has("cannot be fast-forwarded");
    assert_eq!(git(root, &["rev-parse", "HEAD"]), head);
}

#[test]
fn dry_run_asks_the_remote_without_writing_into_git() {
    let sandbox = Sandbox::new();
    let (_origin, _dev) = repos(&sandbox);
    let root = sandbox.dir.path();
    sandbox.pipeline("pull", "env: production\nsteps:\n- uses: git-pull\n");
    let before: Vec<_> = walk(root)
        .into_iter()
        .map(|p| (p.clone(), bytes(&p)))
        .collect();
    sandbox
        .upkeep(&["run", "pull", "--dry-run"])
        .code(0)
        .stdout_has("not fetched yet");
    let after: Vec<_> = walk(root)
        .into_iter()
        .map(|p| (p.clone(), bytes(&p)))
        .collect();
    assert!(before == after, "the dry-run changed the work tree or .git");
    sandbox
        .upkeep(&["run", "pull"])
        .code(0)
        .stdout_has("from `origin/main`");
    assert_eq!(
        std::fs::read_to_string(root.join("app.txt")).unwrap(),
        "v2\n"
    );
    sandbox
        .upkeep(&["run", "pull", "--dry-run"])
        .code(0)
        .stdout_has("up to date");
    sandbox
        .upkeep(&["run", "pull"])
        .code(0)
        .stdout_has("up to date");
}

/// A value given to git-pull never reaches git as an option: refused with
/// exit 2 and the step named, in a real run and in a dry-run, before any
/// git command sees it.
#[test]
fn a_remote_or_branch_that_reads_as_an_option_is_refused() {
    let sandbox = Sandbox::new();
    let (_origin, _dev) = repos(&sandbox);
    let root = sandbox.dir.path();
    let head = git(root, &["rev-parse", "HEAD"]);
    let evil = "V=--upload-pack=touch MARKER;git-upload-pack";
    sandbox.pipeline(
        "branch",
        "env: production\nsteps:\n- name: pull\n  uses: git-pull\n  with: { remote: origin, branch: \"${V}\" }\n",
    );
    sandbox.pipeline(
        "remote",
        "env: production\nsteps:\n- name: pull\n  uses: git-pull\n  with: { remote: \"${V}\", branch: main }\n",
    );
    for (pipeline, dry_run) in [
        ("branch", false),
        ("branch", true),
        ("remote", false),
        ("remote", true),
    ] {
        let mut args = vec!["run", pipeline, "--var", evil];
        if dry_run {
            args.push("--dry-run");
        }
        let run = sandbox.upkeep(&args);
        // Refused once the variables are in, before anything runs.
        run.code(2)
            .stderr_has("step `pull`")
            .stderr_has("starts with `-`");
        assert!(
            !root.join("MARKER").exists(),
            "git ran the value as a command\n{run}"
        );
    }
    // Literal values are refused when the file is loaded.
    sandbox.pipeline(
        "literal",
        "env: production\nsteps:\n- name: pull\n  uses: git-pull\n  with: { remote: origin, branch: \"main..x\" }\n",
    );
    sandbox
        .upkeep(&["validate", "literal"])
        .code(2)
        .stderr_has("literal.yaml:");
    assert_eq!(git(root, &["rev-parse", "HEAD"]), head);
}

/// Spawns `upkeep run NAME` in its own process group (a hook kills that
/// group) and waits for it.
fn run_killed(sandbox: &Sandbox, pipeline: &str) -> std::process::ExitStatus {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(UPKEEP)
        .args(["run", pipeline])
        .current_dir(sandbox.dir.path())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .status()
        .unwrap()
}

fn hook(root: &std::path::Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join(".git/hooks").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The release adds a file too: a killed merge may leave it behind.
fn release_with_new_file(dev: &std::path::Path) {
    std::fs::write(dev.join("app.txt"), "v3\n").unwrap();
    std::fs::create_dir_all(dev.join("lib")).unwrap();
    std::fs::write(dev.join("lib/new.txt"), "new in v3\n").unwrap();
    git(dev, &["add", "-A"]);
    git(dev, &["commit", "-q", "-m", "v3"]);
    git(dev, &["push", "-q"]);
}

/// After `recover`: the old commit, its files, nothing staged, no file of
/// the new release, no lock left; and the next run pulls.
fn assert_back_on(sandbox: &Sandbox, head: &str) {
    let root = sandbox.dir.path();
    assert_eq!(git(root, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(root, &["status", "--porcelain"]), "");
    assert_eq!(
        std::fs::read_to_string(root.join("app.txt")).unwrap(),
        "v1\n"
    );
    assert!(!root.join("lib/new.txt").exists());
    for lock in ["index.lock", "HEAD.lock", "refs/heads/main.lock"] {
        assert!(!root.join(".git").join(lock).exists(), "{lock} is left");
    }
    sandbox
        .upkeep(&["run", "pull"])
        .code(0)
        .stdout_has("from `origin/main`");
    assert_eq!(
        std::fs::read_to_string(root.join("app.txt")).unwrap(),
        "v3\n"
    );
}

/// Killed once the fast-forward is complete, before the step's end is
/// journaled: `recover` puts the code back on the commit it left.
#[test]
fn a_kill_after_the_fast_forward_is_undone_by_recover() {
    let sandbox = Sandbox::new();
    let (_origin, dev) = repos(&sandbox);
    release_with_new_file(dev.path());
    let root = sandbox.dir.path();
    let head = git(root, &["rev-parse", "HEAD"]);
    sandbox.pipeline("pull", "env: production\nsteps:\n- uses: git-pull\n");
    // git's parent is upkeep: the hook kills it, once the merge is done.
    hook(
        root,
        "post-merge",
        "kill -9 \"$(awk '{print $4}' /proc/$PPID/stat)\"",
    );
    assert!(!run_killed(&sandbox, "pull").success());
    assert_eq!(
        std::fs::read_to_string(root.join("app.txt")).unwrap(),
        "v3\n",
        "the hook should kill upkeep after the merge"
    );
    std::fs::remove_file(root.join(".git/hooks/post-merge")).unwrap();
    sandbox
        .upkeep(&["run", "pull"])
        .code(3)
        .stderr_has("upkeep recover");
    sandbox
        .upkeep(&["recover"])
        .code(0)
        .stdout_has("recovered run")
        .stdout_has("the code is back on");
    assert_back_on(&sandbox, &head);
}

/// git itself killed halfway through the merge (with upkeep: it runs in
/// upkeep's process group): the index and files are the new release's,
/// HEAD is not, and git's lock files are left. `recover` undoes all of it.
#[test]
fn a_merge_killed_halfway_is_undone_by_recover() {
    let sandbox = Sandbox::new();
    let (_origin, dev) = repos(&sandbox);
    release_with_new_file(dev.path());
    let root = sandbox.dir.path();
    let head = git(root, &["rev-parse", "HEAD"]);
    sandbox.pipeline("pull", "env: production\nsteps:\n- uses: git-pull\n");
    // When HEAD is about to move (index and work tree written already),
    // leave an index.lock as a git killed while writing would, and kill
    // the whole group: upkeep, git, the hook.
    hook(
        root,
        "reference-transaction",
        "[ \"$1\" = prepared ] || exit 0\n\
         grep -qE ' (HEAD|refs/heads/main)$' || exit 0\n\
         : > .git/index.lock\n\
         kill -9 -- -\"$(awk '{print $5}' /proc/$$/stat)\"",
    );
    assert!(!run_killed(&sandbox, "pull").success());
    std::fs::remove_file(root.join(".git/hooks/reference-transaction")).unwrap();
    assert_eq!(
        git(root, &["rev-parse", "HEAD"]),
        head,
        "HEAD must not have moved yet"
    );
    assert!(
        root.join("lib/new.txt").exists(),
        "the merge should be halfway"
    );
    sandbox
        .upkeep(&["recover"])
        .code(0)
        .stdout_has("recovered run")
        .stdout_has("lock file");
    assert_back_on(&sandbox, &head);
}

/// A file changed by hand after the pull is neither release's: the undo
/// keeps it, names it, and says a person must look (exit 3).
#[test]
fn a_file_changed_after_the_pull_is_kept_and_named() {
    let sandbox = Sandbox::new();
    let (_origin, _dev) = repos(&sandbox);
    let root = sandbox.dir.path();
    sandbox.pipeline(
        "fails",
        "env: production\nsteps:\n- uses: git-pull\n- run: \"echo by hand > app.txt; exit 1\"\n",
    );
    sandbox
        .upkeep(&["run", "fails"])
        .code(3)
        .stdout_has("`app.txt`")
        .stdout_has("left as they are");
    assert_eq!(
        std::fs::read_to_string(root.join("app.txt")).unwrap(),
        "by hand\n"
    );
}
