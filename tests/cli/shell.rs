//! Shell integration: completion scripts and the man page.

use crate::support::*;

#[test]
fn completions_for_each_shell() {
    let sandbox = Sandbox::empty();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let run = sandbox.upkeep(&["completions", shell]);
        run.code(0).stdout_has("upkeep").stdout_has("backup");
    }
    // The bash script is valid bash.
    let script = sandbox.upkeep(&["completions", "bash"]).stdout.clone();
    sandbox.write("upkeep.bash", &script);
    let checked = std::process::Command::new("bash")
        .args(["-n", sandbox.path("upkeep.bash").to_str().unwrap()])
        .status()
        .unwrap();
    assert!(checked.success());
    sandbox.upkeep(&["completions", "tcsh"]).code(2);
}

#[test]
fn the_man_page_has_the_exit_codes() {
    let sandbox = Sandbox::empty();
    sandbox
        .upkeep(&["man"])
        .code(0)
        .stdout_has(".TH upkeep")
        .stdout_has("Exit codes")
        .stdout_has("busy");
}

#[test]
fn every_subcommand_help_has_an_example_and_the_main_help_the_exit_codes() {
    let sandbox = Sandbox::empty();
    let help = sandbox.upkeep(&["--help"]);
    help.code(0).stdout_has("Exit codes").stdout_has("3  ");
    // The subcommands, as `--help` lists them.
    let commands: Vec<String> = help
        .stdout
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .filter(|name| name != "help")
        .collect();
    assert!(commands.len() >= 12, "{commands:?}");
    for command in &commands {
        let run = sandbox.upkeep(&[command, "--help"]);
        run.code(0);
        assert!(
            run.stdout.contains("Example"),
            "`upkeep {command} --help` has no example:\n{}",
            run.stdout
        );
    }
}
