//! upkeep on a real pseudo-terminal (under util-linux `script`) against a
//! pipe: progress bars, colour, the production confirmation; and --quiet,
//! --verbose.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::{Sandbox, UPKEEP, corrupt_block_of};

/// Runs upkeep on a pseudo-terminal in the sandbox, typing `input`;
/// returns the exit code and everything the terminal showed.
fn on_terminal(
    sandbox: &Sandbox,
    args: &[&str],
    input: &str,
    env: &[(&str, &str)],
) -> (i32, String) {
    let quoted: Vec<String> = std::iter::once(UPKEEP)
        .chain(args.iter().copied())
        .map(|arg| format!("'{}'", arg.replace('\'', "'\\''")))
        .collect();
    shell_on_terminal(sandbox, &quoted.join(" "), input, env)
}

/// Runs a shell command line on a pseudo-terminal, as `on_terminal`.
fn shell_on_terminal(
    sandbox: &Sandbox,
    line: &str,
    input: &str,
    env: &[(&str, &str)],
) -> (i32, String) {
    let mut command = Command::new("script");
    command
        .args(["-qec", line, "/dev/null"])
        .current_dir(sandbox.dir.path())
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .env_remove("GITHUB_ACTIONS")
        // CI services set CI, and upkeep then never asks.
        .env_remove("CI")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("util-linux `script` runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let shown = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code().unwrap_or(-1), shown)
}

const BAR: &str = " eta ";
const COLOUR: &str = "\u{1b}[3";

#[test]
fn the_progress_bar_shows_on_a_terminal_and_never_on_a_pipe() {
    let sandbox = Sandbox::new();
    let (code, shown) = on_terminal(&sandbox, &["backup", "production"], "", &[]);
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains(BAR) && shown.contains("backup ["),
        "no bar on the terminal:\n{shown:?}"
    );
    assert!(
        shown.contains(COLOUR),
        "no colour on the terminal:\n{shown:?}"
    );

    let piped = sandbox.upkeep(&["backup", "production"]);
    piped.code(0);
    for text in [&piped.stdout, &piped.stderr] {
        assert!(
            !text.contains(BAR) && !text.contains('\u{1b}'),
            "escape codes on a pipe:\n{text:?}"
        );
    }
    // Restore shows one too.
    let (code, shown) = on_terminal(&sandbox, &["restore", "production", "--latest"], "", &[]);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("restore ["), "{shown:?}");
    // And salvage, table by table (staging has no backup).
    corrupt_block_of(&sandbox.db("staging"), "orders");
    let (code, shown) = on_terminal(&sandbox, &["repair", "staging"], "", &[]);
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains("salvage [") && shown.contains(" tables "),
        "{shown:?}"
    );
}

#[test]
fn no_color_term_dumb_and_color_never_are_honoured() {
    let sandbox = Sandbox::new();
    let (_, shown) = on_terminal(&sandbox, &["check", "production"], "", &[]);
    assert!(
        shown.contains(COLOUR),
        "the check is coloured on a terminal:\n{shown:?}"
    );
    for (args, env) in [
        (vec!["check", "production"], vec![("NO_COLOR", "1")]),
        (vec!["--color", "never", "check", "production"], vec![]),
        (vec!["check", "production"], vec![("TERM", "dumb")]),
    ] {
        let (code, shown) = on_terminal(&sandbox, &args, "", &env);
        assert_eq!(code, 0, "{shown}");
        assert!(
            !shown.contains(COLOUR),
            "{args:?} {env:?} coloured:\n{shown:?}"
        );
    }
    let (_, shown) = on_terminal(&sandbox, &["backup", "production"], "", &[("TERM", "dumb")]);
    assert!(!shown.contains(BAR), "a bar on a dumb terminal:\n{shown:?}");
    // `always` colours a pipe too.
    let piped = sandbox.upkeep(&["--color", "always", "check", "production"]);
    assert!(piped.stdout.contains(COLOUR), "{}", piped.stdout);
}

const PRODUCTION: &str = "env: production\nsteps:\n  - name: mark\n    run: touch ran\n";

#[test]
fn production_on_a_terminal_shows_the_plan_and_asks_once() {
    let sandbox = Sandbox::new();
    sandbox.pipeline("p", PRODUCTION);
    let (code, shown) = on_terminal(&sandbox, &["run", "p"], "n\n", &[]);
    assert_eq!(code, 1, "{shown}");
    assert!(shown.contains("would run `touch ran`"), "no plan:\n{shown}");
    assert_eq!(shown.matches("[y/N]").count(), 1, "{shown}");
    assert!(shown.contains("Not run"), "{shown}");
    assert!(!sandbox.path("ran").exists(), "ran without a yes");

    // Output to a pipe (`| tee log`): the person at the keyboard is asked.
    let line = format!("'{UPKEEP}' run p 2>&1 | cat");
    let (code, shown) = shell_on_terminal(&sandbox, &line, "n\n", &[]);
    assert_eq!(code, 0, "{shown}"); // cat's
    assert!(
        shown.contains("[y/N]") && shown.contains("Not run"),
        "{shown}"
    );
    assert!(!sandbox.path("ran").exists(), "ran without a yes");

    let (code, shown) = on_terminal(&sandbox, &["run", "p"], "y\n", &[]);
    assert_eq!(code, 0, "{shown}");
    assert!(sandbox.path("ran").exists());
}

#[test]
fn a_busy_run_is_refused_before_any_question() {
    let sandbox = Sandbox::new();
    sandbox.pipeline("p", PRODUCTION);
    sandbox.pipeline(
        "long",
        "env: staging\nsteps:\n  - run: touch started; sleep 5\n",
    );
    let mut long = Command::new(UPKEEP)
        .args(["run", "long"])
        .current_dir(sandbox.dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    while !sandbox.path("started").exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (code, shown) = on_terminal(&sandbox, &["run", "p"], "y\n", &[]);
    let _ = long.kill();
    let _ = long.wait();
    assert_eq!(code, 4, "{shown}");
    assert!(!shown.contains("[y/N]"), "asked, then refused:\n{shown}");
    assert!(!sandbox.path("ran").exists());
}

#[test]
fn yes_a_pipe_or_another_env_never_ask() {
    let sandbox = Sandbox::new();
    sandbox.pipeline("p", PRODUCTION);
    let (code, shown) = on_terminal(&sandbox, &["run", "p", "--yes"], "", &[]);
    assert_eq!(code, 0, "{shown}");
    assert!(!shown.contains("[y/N]"), "{shown}");
    std::fs::remove_file(sandbox.path("ran")).unwrap();

    let (code, shown) = on_terminal(&sandbox, &["run", "p", "--env", "staging"], "", &[]);
    assert_eq!(code, 0, "{shown}");
    assert!(!shown.contains("[y/N]"), "{shown}");
    std::fs::remove_file(sandbox.path("ran")).unwrap();

    // A CI job with a terminal (CI set): no question.
    let (code, shown) = on_terminal(&sandbox, &["run", "p"], "", &[("CI", "true")]);
    assert_eq!(code, 0, "{shown}");
    assert!(!shown.contains("[y/N]"), "{shown}");
    std::fs::remove_file(sandbox.path("ran")).unwrap();

    // Cron and CI: no terminal, no question, the run goes on.
    let run = sandbox.upkeep(&["run", "p"]);
    run.code(0);
    assert!(!run.stderr.contains("[y/N]"));
    assert!(sandbox.path("ran").exists());
}

#[test]
fn quiet_prints_only_errors_and_verbose_adds_commands_and_timing() {
    let sandbox = Sandbox::new();
    let quiet = sandbox.upkeep(&["--quiet", "backup", "staging"]);
    quiet.code(0);
    assert_eq!((quiet.stdout.as_str(), quiet.stderr.as_str()), ("", ""));
    sandbox
        .upkeep(&["--quiet", "check", "nowhere"])
        .code(2)
        .stderr_has("nowhere");

    sandbox.pipeline(
        "v",
        "env: staging\nsteps:\n  - name: hello\n    run: echo hi\n",
    );
    sandbox
        .upkeep(&["--verbose", "run", "v"])
        .code(0)
        .stdout_has("1. hello: run `echo hi`")
        .stderr_has("upkeep: exit 0 after ");
    let plain = sandbox.upkeep(&["run", "v"]);
    assert!(!plain.stdout.contains("run `echo hi`") && !plain.stderr.contains("after"));
}
