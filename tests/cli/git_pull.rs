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
