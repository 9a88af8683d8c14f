//! upkeep.yaml: discovery and every kind of bad input (exit 2, with file,
//! line and column).

use crate::support::*;

#[test]
fn found_in_a_parent_folder() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path("deep/er")).unwrap();
    let run = std::process::Command::new(UPKEEP)
        .args(["check", "production"])
        .current_dir(sandbox.path("deep/er"))
        .env("NO_COLOR", "1")
        .env_remove("UPKEEP_CONFIG")
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn given_by_flag_or_environment_variable() {
    let sandbox = Sandbox::new();
    std::fs::rename(sandbox.path("upkeep.yaml"), sandbox.path("other.yaml")).unwrap();
    sandbox
        .upkeep(&["check", "production"])
        .code(2)
        .stderr_has("no upkeep.yaml");
    sandbox
        .upkeep(&["--config", "other.yaml", "check", "production"])
        .code(0);
    sandbox
        .upkeep_with(&["check", "staging"], &[("UPKEEP_CONFIG", "other.yaml")])
        .code(0);
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let sandbox = Sandbox::new();
    sandbox.write("upkeep.yaml", "databases:\n  production: [unclosed\n");
    let run = sandbox.upkeep(&["check", "production"]);
    run.code(2).stderr_has("upkeep.yaml:");
    assert!(
        run.stderr.contains(":3:") || run.stderr.contains(":2:"),
        "{run}"
    );
}

#[test]
fn unknown_key_names_line_and_the_expected_keys() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "upkeep.yaml",
        "databases:\n  production: data/prod.duckdb\nbackup:\n  keep: 3\n",
    );
    sandbox
        .upkeep(&["check", "production"])
        .code(2)
        .stderr_has("upkeep.yaml:3:1: unknown field `backup`")
        .stderr_has("expected one of");
}

#[test]
fn bad_values_are_refused_with_their_position() {
    let sandbox = Sandbox::new();
    for (text, expected) in [
        (
            "databases:\n  production: data/prod.duckdb\nbackups:\n  keep: 0\n",
            "upkeep.yaml:4:",
        ),
        (
            "databases:\n  production: data/prod.duckdb\nbackups:\n  keep: lots\n",
            "upkeep.yaml:4:",
        ),
        ("databases:\n  all: data/prod.duckdb\n", "reserved word"),
        (
            "databases:\n  production: data/prod.duckdb\nstorage_version: v9.9.9\n",
            "unknown storage version `v9.9.9`",
        ),
        ("databases: {}\n", "`databases` names no environment"),
    ] {
        sandbox.write("upkeep.yaml", text);
        sandbox
            .upkeep(&["check", "production"])
            .code(2)
            .stderr_has(expected);
    }
}

#[test]
fn unknown_environment_lists_the_known_ones() {
    let sandbox = Sandbox::new();
    sandbox
        .upkeep(&["check", "prod"])
        .code(2)
        .stderr_has("unknown environment `prod`")
        .stderr_has("`production`, `staging`");
}

#[test]
fn bad_flags_exit_2_and_help_lists_exit_codes() {
    let sandbox = Sandbox::new();
    sandbox.upkeep(&["check"]).code(2);
    sandbox
        .upkeep(&["backup", "production", "--keep", "0"])
        .code(2)
        // The flag named once, then what it must be.
        .stderr_has("error: --keep must be a whole number of at least 1, not 0");
    sandbox
        .upkeep(&["--help"])
        .code(0)
        .stdout_has("Exit codes:")
        .stdout_has("4  busy");
}
