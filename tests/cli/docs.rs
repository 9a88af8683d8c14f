//! The README and docs/ hold together: every relative link reaches a file
//! (and a heading, when it names one), every page of docs/ is linked from the
//! README, the pages that `--help` names exist, and the README's pipeline is
//! the shipped `pipelines/update.yaml`.

use std::path::{Path, PathBuf};

use crate::support::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages
}

/// The targets of the Markdown links `[text](target)` in `text`.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            found.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    found
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            found.push(slug(line.trim_start_matches('#')));
        }
    }
    found
}

#[test]
fn every_link_between_the_readme_and_the_docs_reaches_its_page_and_heading() {
    let mut files = vec![root().join("README.md")];
    files.extend(pages());
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            let (path, anchor) = match link.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (link.as_str(), None),
            };
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let Ok(target_text) = std::fs::read_to_string(&target) else {
                if !target.is_dir() {
                    broken.push(format!("{}: {link}: no such file", file.display()));
                }
                continue;
            };
            if let Some(anchor) = anchor
                && !anchors(&target_text).iter().any(|a| a == anchor)
            {
                broken.push(format!(
                    "{}: {link}: no heading with that anchor in {} (it has {:?})",
                    file.display(),
                    target.display(),
                    anchors(&target_text)
                ));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_links_every_page_of_the_docs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let linked = links(&readme);
    let pages = pages();
    assert!(pages.len() >= 8, "{pages:?}");
    for page in pages {
        let name = format!("docs/{}", page.file_name().unwrap().to_string_lossy());
        assert!(
            linked.iter().any(|l| l == &name),
            "the README does not link {name}"
        );
    }
}

#[test]
fn the_pages_that_help_names_exist() {
    let sandbox = Sandbox::empty();
    let mut named = Vec::new();
    for command in [
        "", "check", "backup", "restore", "repair", "run", "validate", "recover", "schedule",
    ] {
        let mut args: Vec<&str> = command.split_whitespace().collect();
        args.push("--help");
        let run = sandbox.upkeep(&args);
        run.code(0);
        let pages: Vec<String> = run
            .stdout
            .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
            .map(|w| w.trim_end_matches(['.', ':', ';']))
            .filter(|w| w.starts_with("docs/") && w.ends_with(".md"))
            .map(str::to_string)
            .collect();
        assert!(
            !pages.is_empty() || command.is_empty(),
            "`upkeep {command} --help` names no page of docs/\n{run}"
        );
        named.extend(pages);
    }
    assert!(
        named.contains(&"docs/pipelines.md".to_string()),
        "{named:?}"
    );
    for page in named {
        assert!(root().join(&page).is_file(), "--help names {page}");
    }
}

#[test]
fn the_readme_shows_the_shipped_update_pipeline() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let shipped = std::fs::read_to_string(root().join("pipelines/update.yaml")).unwrap();
    let section = readme
        .split("\n## A pipeline\n")
        .nth(1)
        .expect("a section `## A pipeline` in the README");
    let block = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a yaml block in `## A pipeline`");
    assert_eq!(block, shipped, "README's pipeline vs pipelines/update.yaml");
}

/// The README opens with two commands, and the second is the whole suite on
/// a new machine: the one `.ci/run` runs, which installs the tools the
/// end-to-end tests drive before `cargo test` (a bare `cargo test` there
/// fails every off-site, Ansible and workflow test).
#[test]
fn the_readme_test_command_is_the_one_ci_runs_and_installs_the_tools() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a sh block at the top of the README");
    let commands: Vec<&str> = block
        .lines()
        .map(|line| line.split(" #").next().unwrap().trim())
        .filter(|line| !line.is_empty())
        .collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert_eq!(commands[1], "bash scripts/test.sh");

    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|line| line.trim() == commands[1]),
        ".ci/run does not run the README's test command\n{ci}"
    );
    let script = std::fs::read_to_string(root().join("scripts/test.sh")).unwrap();
    let install = script
        .find("scripts/test_tools.sh)")
        .expect("scripts/test.sh installs the tools");
    let test = script
        .find("exec cargo test")
        .expect("scripts/test.sh runs cargo test");
    assert!(install < test, "tools first, then the tests\n{script}");
}
