//! CI reports of a run: `--junit`, GitHub Actions annotations and step
//! summary, and the `notify:` webhook, against a real HTTP server.

use std::net::TcpListener;

use crate::support::{Sandbox, accept_within, webhook};

/// Four steps: one ok (with a rollback), one skipped by `when`, one
/// failing with output, one never reached.
const FAILING: &str = "\
env: staging
steps:
  - id: first
    name: first step
    run: echo first-output
    rollback: echo undo-first
  - name: only when first failed
    run: echo never
    when: first.failed
  - name: breaks
    run: echo boom-line; exit 3
  - name: after
    run: echo not-reached
";

#[test]
fn junit_has_a_case_per_step_and_rollback_with_the_right_counts() {
    let sandbox = Sandbox::new();
    sandbox.pipeline("p", FAILING);
    let report = sandbox.path("report.xml");
    sandbox
        .upkeep(&["run", "p", "--junit", report.to_str().unwrap()])
        .code(1);
    let xml = std::fs::read_to_string(&report).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    let count = |name: &str| suite.attribute(name).unwrap().parse::<usize>().unwrap();
    assert_eq!(
        (count("tests"), count("failures"), count("skipped")),
        (5, 1, 2),
        "{xml}"
    );
    let cases: Vec<_> = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    let names: Vec<_> = cases.iter().map(|c| c.attribute("name").unwrap()).collect();
    assert_eq!(
        names,
        [
            "01. first step",
            "02. only when first failed",
            "03. breaks",
            "04. after",
            "rollback of 01. first step"
        ]
    );
    let failure = cases[2]
        .children()
        .find(|n| n.has_tag_name("failure"))
        .expect("the failed step is a failure");
    assert!(failure.attribute("message").unwrap().contains("exit"));
    assert!(failure.text().unwrap().contains("boom-line"), "{xml}");
    // A rollback's output is the rollback's, not its step's.
    let out = |case: &roxmltree::Node| {
        case.descendants()
            .filter(|n| n.has_tag_name("system-out"))
            .filter_map(|n| n.text())
            .collect::<String>()
    };
    assert!(out(&cases[4]).contains("undo-first"), "{xml}");
    assert!(!out(&cases[0]).contains("undo-first"), "{xml}");
    assert!(cases[1].children().any(|n| n.has_tag_name("skipped")));
    assert!(cases[3].children().any(|n| n.has_tag_name("skipped")));
}

#[test]
fn a_run_refused_as_busy_still_reports_and_notifies() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "long",
        "env: staging\nsteps:\n  - run: touch started; sleep 5\n",
    );
    let (url, server) = webhook();
    sandbox.pipeline(
        "p",
        &format!("env: staging\nnotify: {{ url: \"{url}\" }}\nsteps:\n  - run: echo never\n"),
    );
    let mut long = std::process::Command::new(crate::support::UPKEEP)
        .args(["run", "long"])
        .current_dir(sandbox.dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while !sandbox.path("started").exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let report = sandbox.path("report.xml");
    sandbox
        .upkeep(&["run", "p", "--junit", report.to_str().unwrap()])
        .code(4);
    let _ = long.kill();
    let _ = long.wait();
    let xml = std::fs::read_to_string(&report).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let failure = doc
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .unwrap_or_else(|| panic!("a refused run has a failure:\n{xml}"));
    assert!(
        failure
            .attribute("message")
            .unwrap()
            .starts_with("exit 4: not run"),
        "{xml}"
    );
    let (_, body) = server.join().unwrap().expect("the webhook heard of it");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (body["outcome"].as_str(), body["exit_code"].as_i64()),
        (Some("failed"), Some(4))
    );
}

#[test]
fn a_step_that_passes_on_retry_is_a_warning_not_an_error_on_github() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: staging\nsteps:\n  - name: flaky\n    run: test -f again || { touch again; exit 1; }\n    retries: 1\n",
    );
    let run = sandbox.upkeep_with(&["run", "p"], &[("GITHUB_ACTIONS", "true")]);
    run.code(0).stdout_has("::warning::flaky: ");
    assert!(!run.stdout.contains("::error"), "{}", run.stdout);
}

#[test]
fn junit_to_a_missing_folder_is_refused_before_anything_runs() {
    let sandbox = Sandbox::new();
    sandbox.pipeline("p", "env: staging\nsteps:\n  - run: touch ran\n");
    sandbox
        .upkeep(&["run", "p", "--junit", "no/such/folder/r.xml"])
        .code(2)
        .stderr_has("--junit");
    assert!(!sandbox.path("ran").exists());
}

#[test]
fn github_actions_gets_groups_an_error_and_a_step_summary() {
    let sandbox = Sandbox::new();
    sandbox.pipeline("p", FAILING);
    let summary = sandbox.path("summary.md");
    std::fs::write(&summary, "earlier job content\n").unwrap();
    let run = sandbox.upkeep_with(
        &["run", "p"],
        &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
        ],
    );
    run.code(1)
        .stdout_has("::group::1. first step\n")
        .stdout_has("::endgroup::")
        .stdout_has("::error title=upkeep p%3A step 3 failed::breaks: `echo boom-line; exit 3`");
    // The step's output is inside its group.
    let out = &run.stdout;
    let group = out.find("::group::3. breaks").unwrap();
    let line = out.find("boom-line").unwrap();
    let end = group + out[group..].find("::endgroup::").unwrap();
    assert!(group < line && line < end, "{out}");
    let markdown = std::fs::read_to_string(&summary).unwrap();
    assert!(
        markdown.starts_with("earlier job content\n"),
        "appended, not replaced"
    );
    assert!(
        markdown.contains("`p` on `staging`: rolled back (exit 1)"),
        "{markdown}"
    );
    assert!(
        markdown.contains("| 3 | breaks | **failed** |"),
        "{markdown}"
    );
    assert!(
        markdown.contains("| 4 | after | not reached |"),
        "{markdown}"
    );
    assert!(
        markdown.contains("| 1. first step | undone |"),
        "{markdown}"
    );

    // Outside GitHub Actions: none of it.
    let plain = sandbox.upkeep(&["run", "p"]);
    assert!(!plain.stdout.contains("::group::"), "{}", plain.stdout);
}

#[test]
fn a_failed_run_posts_its_summary_to_the_webhook() {
    let sandbox = Sandbox::new();
    let (url, server) = webhook();
    sandbox.pipeline("p", &format!("notify:\n  url: {url}\n{FAILING}"));
    sandbox.upkeep(&["run", "p"]).code(1);
    let (head, body) = server.join().unwrap().expect("the webhook got the summary");
    assert!(head.starts_with("POST /hooks/upkeep HTTP/1.1"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json")
    );
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["pipeline"], "p");
    assert_eq!(body["env"], "staging");
    assert_eq!(body["outcome"], "rolled_back");
    assert_eq!(body["exit_code"], 1);
    assert_eq!(body["failed_step"], "breaks");
    assert!(body["duration_ms"].is_u64());
    assert!(!body["host"].as_str().unwrap().is_empty());
}

#[test]
fn success_is_posted_only_when_asked() {
    let sandbox = Sandbox::new();
    // By default (failure, rollback), a success posts nothing.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/x", silent.local_addr().unwrap());
    sandbox.pipeline(
        "quiet",
        &format!("env: staging\nnotify: {{ url: \"{silent_url}\" }}\nsteps:\n  - run: echo fine\n"),
    );
    sandbox.upkeep(&["run", "quiet"]).code(0);
    // upkeep has exited: a POST would be waiting in the backlog.
    assert!(
        accept_within(&silent, std::time::Duration::ZERO).is_none(),
        "a success was posted"
    );

    let (url, server) = webhook();
    sandbox.pipeline(
        "p",
        &format!("env: staging\nnotify: {{ url: \"{url}\", on: [success] }}\nsteps:\n  - run: echo fine\n"),
    );
    sandbox.upkeep(&["run", "p"]).code(0);
    let (_, body) = server.join().unwrap().expect("the webhook got the summary");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["outcome"], "success");
    assert_eq!(body["failed_step"], serde_json::Value::Null);
}

#[test]
fn a_dead_webhook_only_warns() {
    let sandbox = Sandbox::new();
    // A port nobody listens on any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    sandbox.pipeline(
        "p",
        &format!("env: staging\nnotify: {{ url: \"http://127.0.0.1:{port}/x\", on: [success, failure] }}\nsteps:\n  - run: echo fine\n"),
    );
    sandbox
        .upkeep(&["run", "p"])
        .code(0)
        .stderr_has("warning:")
        .stderr_has("notify webhook");
    // And a failed run keeps its own exit code.
    sandbox.pipeline(
        "q",
        &format!("env: staging\nnotify: {{ url: \"http://127.0.0.1:{port}/x\" }}\nsteps:\n  - run: exit 1\n"),
    );
    sandbox
        .upkeep(&["run", "q"])
        .code(1)
        .stderr_has("notify webhook");
}

#[test]
fn a_bad_notify_section_names_the_line() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: staging\nnotify:\n  url: ftp://x\n  on: [sometimes]\nsteps:\n  - run: echo\n",
    );
    sandbox
        .upkeep(&["validate", "p"])
        .code(2)
        .stderr_has("p.yaml:3:8:")
        .stderr_has("must start with http:// or https://")
        .stderr_has("p.yaml:4:8: `on` takes failure, rollback and success, found `sometimes`");
}

/// A pipeline whose URLs carry credentials: a health step that fails
/// (its URL is shown in the step's failure), and a webhook with a password.
fn with_credentials(hook: &str, dead_port: u16) -> String {
    let hook = hook.replace("http://", "http://user:secret@");
    format!(
        "env: staging\nnotify: {{ url: \"{hook}?x=1&token=secret\" }}\nsteps:\n  \
         - run: echo started\n    rollback: echo undone\n  \
         - name: health\n    uses: health\n    with: {{ url: \"http://user:secret@127.0.0.1:{dead_port}/health?api_key=secret\", timeout: 1s, interval: 100ms }}\n"
    )
}

fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every run log in the sandbox's state_dir.
fn run_logs(sandbox: &Sandbox) -> String {
    crate::support::walk(&sandbox.path(".upkeep/logs"))
        .iter()
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect()
}

#[test]
fn webhook_credentials_are_sent_as_basic_auth_and_shown_nowhere() {
    let sandbox = Sandbox::new();
    let report = sandbox.path("report.xml");
    let summary = sandbox.path("summary.md");
    let report_arg = report.to_str().unwrap();
    let github: &[(&str, &str)] = &[
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
    ];
    // Every way a run shows itself: --verbose and JUnit, JSON, GitHub.
    let runs = [
        (
            &["--verbose", "run", "p", "--junit", report_arg][..],
            &[][..],
        ),
        (&["--format", "json", "run", "p"], &[]),
        (&["run", "p"], github),
    ];
    for (args, env) in runs {
        let (url, server) = webhook();
        sandbox.pipeline("p", &with_credentials(&url, dead_port()));
        let run = sandbox.upkeep_with(args, env);
        run.code(1);
        let (head, body) = server.join().unwrap().expect("the webhook got the summary");
        assert!(
            head.starts_with("POST /hooks/upkeep?x=1&token=secret HTTP/1.1"),
            "{head}"
        );
        let authorization = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("authorization")
                    .then(|| value.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no Authorization header:\n{head}"));
        assert_eq!(authorization, "Basic dXNlcjpzZWNyZXQ=");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["failed_step"], "health");
        for (what, text) in [
            ("stdout", run.stdout.as_str()),
            ("stderr", run.stderr.as_str()),
            ("webhook body", &body.to_string()),
        ] {
            assert!(!text.contains("secret"), "{what} shows a secret\n{run}");
        }
        // The URL is shown, masked.
        assert!(
            run.stdout.contains("127.0.0.1") && run.stdout.contains("api_key=***"),
            "{run}"
        );
    }
    assert!(run_logs(&sandbox).contains("api_key=***"));
    for (what, text) in [
        ("run log", run_logs(&sandbox)),
        ("junit", std::fs::read_to_string(&report).unwrap()),
        ("step summary", std::fs::read_to_string(&summary).unwrap()),
    ] {
        assert!(!text.contains("secret"), "{what} shows a secret:\n{text}");
    }
}

#[test]
fn a_dead_webhook_with_credentials_is_shown_masked() {
    let sandbox = Sandbox::new();
    let port = dead_port();
    sandbox.pipeline(
        "p",
        &format!("env: staging\nnotify: {{ url: \"http://user:secret@127.0.0.1:{port}/x?sig=secret\" }}\nsteps:\n  - run: exit 1\n"),
    );
    let human = sandbox.upkeep(&["--verbose", "run", "p"]);
    human.code(1).stderr_has(&format!(
        "the notify webhook http://***@127.0.0.1:{port}/x?sig=*** did not take"
    ));
    let json = sandbox.upkeep(&["--format", "json", "run", "p"]);
    json.code(1);
    let warning = json
        .json()
        .into_iter()
        .find(|event| event["type"] == "warning")
        .unwrap_or_else(|| panic!("no warning event\n{json}"));
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("http://***@127.0.0.1"),
        "{warning}"
    );
    for run in [&human, &json] {
        assert!(
            !run.stdout.contains("secret") && !run.stderr.contains("secret"),
            "{run}"
        );
    }
    let logs = run_logs(&sandbox);
    assert!(logs.contains("notify webhook http://***@"), "{logs}");
    assert!(!logs.contains("secret"), "{logs}");
}

#[test]
fn an_https_webhook_gets_its_url_from_stdin_never_the_command_line() {
    let sandbox = Sandbox::new();
    // A stand-in for curl that keeps what it was given, and fails like
    // curl does, naming the URL.
    let path = sandbox.bin(
        "curl",
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > curl.args\ncat > curl.stdin\n\
         echo 'curl: (7) Failed to connect to https://user:secret@example.invalid/h?token=secret' >&2\nexit 7\n",
    );
    sandbox.pipeline(
        "p",
        "env: staging\nnotify: { url: \"https://user:secret@example.invalid/h?token=secret\" }\nsteps:\n  - run: exit 1\n",
    );
    let run = sandbox.upkeep_with(&["run", "p"], &[("PATH", &path)]);
    run.code(1)
        .stderr_has("the notify webhook https://***@example.invalid/h?token=*** did not take");
    assert!(
        !run.stdout.contains("secret") && !run.stderr.contains("secret"),
        "{run}"
    );
    let args = std::fs::read_to_string(sandbox.path("curl.args")).unwrap();
    assert!(
        !args.contains("secret") && !args.contains("example"),
        "{args}"
    );
    assert!(args.contains("--config\n-\n"), "{args}");
    let config = std::fs::read_to_string(sandbox.path("curl.stdin")).unwrap();
    assert!(
        config.contains("url = \"https://user:secret@example.invalid/h?token=secret\"\n"),
        "{config}"
    );
    assert!(config.contains("data-binary = \"{\\\""), "{config}");
    assert!(config.contains("\\\"pipeline\\\":\\\"p\\\""), "{config}");
}
