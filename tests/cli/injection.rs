//! Hostile values never become shell code, options or paths out of the
//! project: `${NAME}` in commands is refused, variables reach commands as
//! environment, and values are checked once substituted.

use crate::support::*;

/// Values that run `touch X` if they are ever pasted into shell text.
const HOSTILE: &[&str] = &[
    "$(touch X)",
    "`touch X`",
    "x; touch X",
    "x && touch X",
    "x | touch X",
    "x\ntouch X",
    "${IFS}touch${IFS}X",
    "\"; touch X; \"",
];

#[test]
fn a_variable_in_a_health_command_is_refused_at_load() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n- uses: health\n  with: { cmd: \"test -n \\\"${PROBE}\\\"\", timeout: 2s }\n",
    );
    for hostile in HOSTILE {
        let var = format!("PROBE={hostile}");
        for dry_run in [false, true] {
            let mut args = vec!["run", "p", "--var", &var];
            if dry_run {
                args.push("--dry-run");
            }
            sandbox
                .upkeep(&args)
                .code(2)
                .stderr_has("p.yaml:4:16: `cmd` is run by the shell")
                .stderr_has("write `\"$PROBE\"` instead");
            assert!(!sandbox.path("X").exists(), "{hostile:?} ran as shell code");
        }
    }
    sandbox
        .upkeep(&["validate", "p"])
        .code(2)
        .stderr_has("p.yaml:4:16:");
    // A rollback's `with:` is the same.
    sandbox.pipeline(
        "q",
        "env: production\nsteps:\n- run: \"true\"\n  rollback: { uses: health, with: { cmd: \"${PROBE}\" } }\n",
    );
    sandbox
        .upkeep(&["validate", "q"])
        .code(2)
        .stderr_has("q.yaml:4:42: `cmd` is run by the shell");
}

#[test]
fn a_health_command_gets_variables_as_environment() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n- uses: health\n  with: { cmd: 'printf \"%s|%s\" \"$PROBE\" \"$UPKEEP_ENV\" > probe.txt', timeout: 5s }\n",
    );
    for hostile in HOSTILE {
        let var = format!("PROBE={hostile}");
        for dry_run in [false, true] {
            let _ = std::fs::remove_file(sandbox.path("probe.txt"));
            let mut args = vec!["run", "p", "--var", &var];
            if dry_run {
                args.push("--dry-run");
            }
            sandbox.upkeep(&args).code(0);
            assert!(!sandbox.path("X").exists(), "{hostile:?} ran as shell code");
            let seen = std::fs::read_to_string(sandbox.path("probe.txt")).unwrap();
            assert_eq!(seen, format!("{hostile}|production"));
        }
    }
}

#[test]
fn a_command_starting_with_a_dash_is_not_options_of_sh() {
    let sandbox = Sandbox::new();
    let path = sandbox.bin("-probe", "#!/bin/sh\ntouch ran\n");
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n- run: -probe\n- uses: health\n  with: { cmd: -probe, timeout: 2s }\n",
    );
    sandbox
        .upkeep_with(&["run", "p"], &[("PATH", &path)])
        .code(0);
    assert!(sandbox.path("ran").exists());
}

#[test]
fn a_migrations_folder_from_a_variable_stays_in_the_project() {
    let sandbox = Sandbox::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("0001_drop.sql"), "DROP TABLE orders;").unwrap();
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n- run: touch ran\n- uses: migrate\n  with: { dir: \"${DIR}\" }\n",
    );
    let before = counts(&sandbox.db("prod"));
    for dir in [
        outside.path().to_str().unwrap(),
        "../..",
        "migrations/../../x",
    ] {
        let var = format!("DIR={dir}");
        for dry_run in [false, true] {
            let mut args = vec!["run", "p", "--var", &var];
            if dry_run {
                args.push("--dry-run");
            }
            sandbox
                .upkeep(&args)
                .code(2)
                .stderr_has("p.yaml:4:3: step `uses migrate with dir=${DIR}`")
                .stderr_has("must be a folder inside the project");
        }
    }
    assert!(!sandbox.path("ran").exists(), "nothing runs");
    assert_eq!(counts(&sandbox.db("prod")), before);
    // Written in the file, the same.
    sandbox.pipeline(
        "q",
        "env: production\nsteps:\n- uses: migrate\n  with: { dir: /etc }\n",
    );
    sandbox
        .upkeep(&["validate", "q"])
        .code(2)
        .stderr_has("must be a folder inside the project");
}

#[test]
fn a_url_from_a_variable_cannot_add_request_headers() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n- run: touch ran\n- uses: health\n  with: { url: \"${URL}\", timeout: 1s }\n",
    );
    sandbox
        .upkeep(&[
            "run",
            "p",
            "--var",
            "URL=http://127.0.0.1:1/health HTTP/1.1\r\nX-Injected: 1\r\n",
        ])
        .code(2)
        .stderr_has("cannot hold blanks or control characters");
    assert!(!sandbox.path("ran").exists(), "nothing runs");
}

#[test]
fn an_environment_name_cannot_read_as_an_option() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "upkeep.yaml",
        "databases:\n  production: data/prod.duckdb\n  \"--help\": data/x.duckdb\n",
    );
    sandbox
        .upkeep(&["check", "production"])
        .code(2)
        .stderr_has("must not start with `-`");
}
