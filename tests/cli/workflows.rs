//! The GitHub workflows: actionlint finds nothing in them, and the release
//! workflow's `package` step, run here on the binaries of this build, makes
//! exactly the assets that Cargo.toml's `[package.metadata.binstall]` sends
//! `cargo binstall` to, so the two cannot drift apart.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn workflows() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(".github/workflows"))
        .expect(".github/workflows")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    files
}

/// actionlint on `files`, run from `dir`, with shellcheck for the scripts.
fn actionlint(dir: &Path, files: &[PathBuf]) -> std::process::Output {
    Command::new(tool("actionlint"))
        .arg(format!("-shellcheck={}", tool("shellcheck").display()))
        .arg("-no-color")
        .args(files)
        .current_dir(dir)
        .output()
        .expect("run actionlint")
}

#[test]
fn actionlint_finds_nothing_in_the_workflows() {
    let files = workflows();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"ci.yml".to_string()) && names.contains(&"release.yml".to_string()),
        "{names:?}"
    );
    let output = actionlint(root(), &files);
    assert!(
        output.status.success(),
        "actionlint:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // The same linter does find a mistake: a runner that does not exist,
    // and a script that shellcheck refuses.
    let broken = tempfile::tempdir().unwrap();
    let dir = broken.path().join(".github/workflows");
    std::fs::create_dir_all(&dir).unwrap();
    let release = std::fs::read_to_string(root().join(".github/workflows/release.yml")).unwrap();
    let release = release
        .replace("runner: ubuntu-22.04-arm", "runner: ubuntu-22.04-armm")
        .replace("\"try/$name/upkeep\" --version", "try/*/upkeep --version");
    std::fs::write(dir.join("release.yml"), release).unwrap();
    std::fs::copy(root().join(".github/workflows/ci.yml"), dir.join("ci.yml")).unwrap();
    let output = actionlint(broken.path(), &[dir.join("release.yml")]);
    let said = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains("ubuntu-22.04-armm"), "{said}");
    assert!(said.contains("shellcheck"), "{said}");
}

/// The package of Cargo.toml, as cargo itself reads it.
fn package() -> Value {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(root().join("Cargo.toml"))
        .output()
        .expect("cargo metadata");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    metadata["packages"][0].clone()
}

/// A binstall template (`{ name }-{ version }`) with `vars` filled in; a
/// variable the release workflow does not fill fails the test.
fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = start
            + rest[start..]
                .find('}')
                .unwrap_or_else(|| panic!("unclosed `{{` in {template:?}"));
        let key = rest[start + 1..end].trim();
        let (_, value) = vars.iter().find(|(k, _)| *k == key).unwrap_or_else(|| {
            panic!("`{{ {key} }}` in {template:?}: the release does not fill it")
        });
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Copies the source tree (not .git, target or dist) into `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        if from == root() && [".git", "target", "dist"].iter().any(|n| name == *n) {
            continue;
        }
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

fn text(value: &Value, what: &str) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {value}"))
        .to_string()
}

#[test]
fn release_assets_are_named_as_cargo_binstall_looks_for_them() {
    let package = package();
    let name = text(&package["name"], "name");
    let version = text(&package["version"], "version");
    let binstall = &package["metadata"]["binstall"];
    let pkg_url = text(&binstall["pkg-url"], "binstall pkg-url");
    let bin_dir = text(&binstall["bin-dir"], "binstall bin-dir");
    assert_eq!(binstall["pkg-fmt"], "tgz");
    let bins: Vec<String> = package["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| text(&t["name"], "bin name"))
        .collect();
    assert!(bins.contains(&"upkeep".to_string()), "{bins:?}");

    let text_of = std::fs::read_to_string(root().join(".github/workflows/release.yml")).unwrap();
    let release: Value = serde_yaml::from_str(&text_of).expect("release.yml");
    // binstall asks for `v{ version }`: the workflow runs on such tags and
    // its `version` job refuses a tag that does not name Cargo.toml's.
    assert_eq!(release["on"]["push"]["tags"], serde_json::json!(["v*"]));
    let build = &release["jobs"]["build"];
    assert_eq!(build["env"]["TARGET"], "${{ matrix.target }}");
    assert_eq!(
        build["env"]["VERSION"],
        "${{ needs.version.outputs.version }}"
    );
    let targets: Vec<String> = build["strategy"]["matrix"]["include"]
        .as_array()
        .expect("build.strategy.matrix.include")
        .iter()
        .map(|entry| text(&entry["target"], "matrix target"))
        .collect();
    assert_eq!(
        targets,
        ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"]
    );
    let script = build["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["id"] == "package")
        .map(|step| text(&step["run"], "package run"))
        .expect("a step with `id: package` in jobs.build");
    assert!(
        build["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|step| step["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact"))
                && step["with"]["path"] == "dist/*"),
        "the build job uploads dist/*"
    );

    // This build's binaries stand in for each target's.
    let built = Path::new(UPKEEP).parent().unwrap();
    let repo = "https://github.com/OWNER/upkeep";
    for target in &targets {
        let work = tempfile::tempdir().unwrap();
        copy_tree(root(), work.path());
        let release_dir = work.path().join("target").join(target).join("release");
        std::fs::create_dir_all(&release_dir).unwrap();
        for bin in &bins {
            std::os::unix::fs::symlink(built.join(bin), release_dir.join(bin)).unwrap();
        }
        std::fs::write(work.path().join("package.sh"), &script).unwrap();
        // As GitHub runs a `run:` script with the default shell.
        let output = Command::new("bash")
            .args(["--noprofile", "--norc", "-eo", "pipefail", "package.sh"])
            .current_dir(work.path())
            .env("TARGET", target)
            .env("VERSION", &version)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "the package step for {target}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );

        let vars = [
            ("repo", repo),
            ("name", name.as_str()),
            ("version", version.as_str()),
            ("target", target.as_str()),
            ("binary-ext", ""),
        ];
        let url = render(&pkg_url, &vars);
        let prefix = format!("{repo}/releases/download/v{version}/");
        let file = url
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("binstall's pkg-url {url} is not under {prefix}"));
        let dist = work.path().join("dist");
        let mut made: Vec<String> = std::fs::read_dir(&dist)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        made.sort();
        assert_eq!(
            made,
            [file.to_string(), format!("{file}.sha256")],
            "what the release uploads for {target}, and what binstall downloads"
        );
        let tarball = dist.join(file);
        assert_eq!(bytes(&tarball)[..2], [0x1f, 0x8b], "pkg-fmt tgz: gzip");
        let check = Command::new("sha256sum")
            .args(["-c", &format!("{file}.sha256")])
            .current_dir(&dist)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );

        let unpacked = work.path().join("unpacked");
        std::fs::create_dir(&unpacked).unwrap();
        let untar = Command::new("tar")
            .arg("-xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(&unpacked)
            .status()
            .unwrap();
        assert!(untar.success());
        for bin in &bins {
            let vars = [
                ("name", name.as_str()),
                ("version", version.as_str()),
                ("target", target.as_str()),
                ("bin", bin.as_str()),
                ("binary-ext", ""),
            ];
            let inside = unpacked.join(render(&bin_dir, &vars));
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&inside)
                .unwrap_or_else(|_| {
                    panic!(
                        "binstall looks for {} in {file}, which holds:\n{}",
                        render(&bin_dir, &vars),
                        walk(&unpacked)
                            .iter()
                            .map(|p| p.strip_prefix(&unpacked).unwrap().display().to_string())
                            .collect::<Vec<_>>()
                            .join("\n")
                    )
                })
                .permissions()
                .mode();
            assert_eq!(mode & 0o111, 0o111, "{} is executable", inside.display());
            assert_eq!(
                std::fs::metadata(&inside).unwrap().len(),
                std::fs::metadata(built.join(bin)).unwrap().len()
            );
        }
        // On this machine's own architecture, the packed upkeep runs.
        if target.starts_with(std::env::consts::ARCH) {
            let vars = [
                ("name", name.as_str()),
                ("version", version.as_str()),
                ("target", target.as_str()),
                ("bin", "upkeep"),
                ("binary-ext", ""),
            ];
            let upkeep = unpacked.join(render(&bin_dir, &vars));
            let output = Command::new(&upkeep).arg("--version").output().unwrap();
            assert_eq!(
                String::from_utf8_lossy(&output.stdout).trim(),
                format!("upkeep {version}")
            );
        }
    }
}
