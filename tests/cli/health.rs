//! `uses: health` against a real HTTP endpoint on 127.0.0.1.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::*;

/// An HTTP server on 127.0.0.1 that answers 503 to the first `sick`
/// requests and 200 after; it stops after `limit` requests.
fn server(sick: usize, limit: usize) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&served);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(limit) {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let status = if n < sick {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    (port, served)
}

#[test]
fn waits_until_the_endpoint_answers_2xx() {
    let sandbox = Sandbox::new();
    let (port, served) = server(2, 50);
    sandbox.pipeline(
        "p",
        "env: production\nvars:\n  APP_URL: http://127.0.0.1:0\nsteps:\n\
         - uses: health\n  with: { url: \"${APP_URL}/health\", timeout: 20s, interval: 100ms }\n",
    );
    sandbox
        .upkeep(&[
            "run",
            "p",
            "--var",
            &format!("APP_URL=http://127.0.0.1:{port}"),
        ])
        .code(0)
        .stdout_has("healthy after");
    assert_eq!(served.load(Ordering::SeqCst), 3);
}

#[test]
fn a_timeout_fails_the_step_and_rolls_back() {
    let sandbox = Sandbox::new();
    let (port, _) = server(usize::MAX, 1_000);
    sandbox.pipeline(
        "p",
        &format!(
            "env: production\nsteps:\n\
             - run: echo started >> trace\n  rollback: echo stopped >> trace\n\
             - uses: health\n  with: {{ url: \"http://127.0.0.1:{port}/health\", timeout: 1s, interval: 100ms }}\n"
        ),
    );
    sandbox
        .upkeep(&["run", "p"])
        .code(1)
        .stdout_has("not healthy after 1s")
        .stdout_has("HTTP 503");
    assert_eq!(sandbox.lines("trace"), ["started", "stopped"]);
}

#[test]
fn tcp_and_command_probes() {
    let sandbox = Sandbox::new();
    let (port, _) = server(0, 10);
    sandbox.pipeline(
        "p",
        &format!(
            "env: production\nsteps:\n\
             - uses: health\n  with: {{ tcp: \"127.0.0.1:{port}\", timeout: 5s }}\n\
             - uses: health\n  with: {{ cmd: \"test -e ready\", timeout: 5s, interval: 100ms }}\n"
        ),
    );
    let writer = {
        let ready = sandbox.path("ready");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            std::fs::write(ready, "").unwrap();
        })
    };
    sandbox.upkeep(&["run", "p"]).code(0);
    writer.join().unwrap();
    sandbox.pipeline(
        "bad",
        "env: production\nsteps:\n- uses: health\n  with: { url: \"https://example.com\" }\n",
    );
    sandbox
        .upkeep(&["validate", "bad"])
        .code(2)
        .stderr_has("only plain http://");
    sandbox.pipeline(
        "none",
        "env: production\nsteps:\n- uses: health\n  with: { timeout: 5s }\n",
    );
    sandbox
        .upkeep(&["validate", "none"])
        .code(2)
        .stderr_has("exactly one of `url`, `tcp` or `cmd`");
}

/// The processes whose PIDs a probe or hook wrote to `file` (one a line).
fn pids_in(file: &std::path::Path) -> Vec<i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// Whether `pid` still runs after a moment for a signal sent to it to
/// arrive (a zombie waiting for its reaper does not).
pub fn running(pid: i32) -> bool {
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.starts_with(" Z"))
        })
    };
    let started = std::time::Instant::now();
    while alive() && started.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    alive()
}

/// A command that records its shell's PID and a background child's in
/// `probe.pids`, then hangs.
const HANGS: &str = "echo $$ >> probe.pids; sleep 41 & echo $! >> probe.pids; sleep 40";

#[test]
fn a_command_probe_is_held_to_its_timeout_and_its_process_group_killed() {
    let sandbox = Sandbox::new();
    // The `health` step.
    sandbox.pipeline(
        "p",
        &format!(
            "env: production\nsteps:\n\
             - run: echo started >> trace\n  rollback: echo stopped >> trace\n\
             - uses: health\n  with: {{ cmd: '{HANGS}', timeout: 2s, interval: 100ms }}\n"
        ),
    );
    let started = std::time::Instant::now();
    let run = sandbox.upkeep(&["run", "p"]);
    let took = started.elapsed();
    run.code(1)
        .stdout_has("not healthy after 2s")
        .stdout_has("process group was killed");
    assert!(took < Duration::from_secs(12), "took {took:?}\n{run}");
    assert_eq!(sandbox.lines("trace"), ["started", "stopped"]);
    let pids = pids_in(&sandbox.path("probe.pids"));
    assert_eq!(pids.len(), 2, "{run}");
    for pid in pids {
        assert!(!running(pid), "PID {pid} of the probe outlived it\n{run}");
    }

    // The app's health probe, waited for by start-app: an overrun is not
    // healthy (it used to be, 40 s later).
    std::fs::remove_file(sandbox.path("probe.pids")).unwrap();
    sandbox.write(
        "upkeep.yaml",
        &format!(
            "{CONFIG}app:\n  stop: echo stop >> trace\n  start: echo start >> trace\n  \
             health: {{ cmd: '{HANGS}', timeout: 2s }}\n"
        ),
    );
    sandbox.pipeline("s", "env: production\nsteps:\n- uses: start-app\n");
    let started = std::time::Instant::now();
    let run = sandbox.upkeep(&["run", "s"]);
    let took = started.elapsed();
    run.code(1)
        .stdout_has("is not healthy after 2s")
        .stdout_has("process group was killed");
    assert!(took < Duration::from_secs(12), "took {took:?}\n{run}");
    let pids = pids_in(&sandbox.path("probe.pids"));
    assert_eq!(pids.len(), 2, "{run}");
    for pid in pids {
        assert!(!running(pid), "PID {pid} of the probe outlived it\n{run}");
    }
}

/// The line of upkeep.yaml that `app:` starts on, with CONFIG above it.
fn app_line() -> usize {
    CONFIG.lines().count() + 1
}

#[test]
fn bad_probe_and_hook_values_are_refused_at_load_with_their_line_before_anything_runs() {
    let sandbox = Sandbox::new();
    // Each bad value, as `app.health`, and (when it is a probe's) as the
    // `with:` of a health step.
    let bad: &[(&str, &str, &str)] = &[
        ("url", "https://127.0.0.1:8000/health", "only plain http://"),
        ("url", "http://127.0.0.1:99999/health", "not a port"),
        ("url", "http://127.0.0.1:0/health", "not a port"),
        ("url", "127.0.0.1:8000/health", "only plain http://"),
        ("url", "http://:8000/health", "no host"),
        ("url", "http://127.0.0.1:8000/a b", "blanks"),
        ("tcp", "no-port-here", "has no port"),
        ("tcp", "127.0.0.1:65536", "not a port"),
        ("tcp", ":8000", "no host"),
        ("tcp", "http://127.0.0.1:8000", "not a host and port"),
        ("cmd", "", "no command given"),
        ("cmd", "   ", "no command given"),
    ];
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n- uses: stop-app\n- uses: start-app\n",
    );
    let good_app = "app:\n  stop: echo stop >> trace\n  start: echo start >> trace\n";
    let refused = |run: &Run, file: &str, line: usize, expected: &str| {
        run.code(2)
            .stderr_has(&format!("{file}:{line}:"))
            .stderr_has(expected);
        assert!(!sandbox.path("trace").exists(), "a hook ran\n{run}");
    };
    for (key, value, expected) in bad {
        let line = app_line() + 4;
        sandbox.write(
            "upkeep.yaml",
            &format!("{CONFIG}{good_app}  health:\n    {key}: \"{value}\"\n"),
        );
        for args in [
            &["validate", "p"][..],
            &["run", "p", "--dry-run"],
            &["run", "p"],
            &["check", "production"],
        ] {
            refused(&sandbox.upkeep(args), "upkeep.yaml", line, expected);
        }
        sandbox.write("upkeep.yaml", &format!("{CONFIG}{good_app}"));
        sandbox.pipeline(
            "h",
            &format!(
                "env: production\nsteps:\n- uses: stop-app\n- uses: health\n  with:\n    {key}: \"{value}\"\n"
            ),
        );
        for args in [
            &["validate", "h"][..],
            &["run", "h", "--dry-run"],
            &["run", "h"],
        ] {
            // Blank values are refused where they are; the others with the
            // step's `with:`.
            let run = sandbox.upkeep(args);
            run.code(2).stderr_has("h.yaml:");
            assert!(
                run.stderr.contains(expected) || run.stderr.contains("is empty"),
                "{key}: {value:?}\n{run}"
            );
            assert!(!sandbox.path("trace").exists(), "a hook ran\n{run}");
        }
    }
    // The rest of the class in `app:`: timeouts, and commands that are
    // blank or could never be run, in `environments:` too.
    for (app, line, expected) in [
        (
            format!("{good_app}  health: {{ tcp: '127.0.0.1:8000', timeout: 0s }}\n"),
            3,
            "leaves no time",
        ),
        (
            format!("{good_app}  health: {{ tcp: '127.0.0.1:8000', timeout: 5 }}\n"),
            3,
            "not a duration",
        ),
        (
            format!("{good_app}  hook_timeout: 0s\n"),
            3,
            "leaves no time",
        ),
        (
            format!("{good_app}  hook_timeout: never\n"),
            3,
            "not a duration",
        ),
        (
            format!("{good_app}  snapshot: '  '\n"),
            3,
            "no command given",
        ),
        (
            "app:\n  stop: \"\\0\"\n  start: ./start.sh\n".to_string(),
            1,
            "NUL",
        ),
        (
            format!(
                "{good_app}  environments:\n    staging:\n      health: {{ url: 'https://127.0.0.1/' }}\n"
            ),
            5,
            "only plain http://",
        ),
        (
            format!("{good_app}  environments:\n    staging:\n      hook_timeout: 0s\n"),
            5,
            "leaves no time",
        ),
        (
            format!("{good_app}  health: {{ cmd: ~ }}\n"),
            3,
            "no value given",
        ),
        // Through an alias, the value is checked at its key's line.
        (
            format!("{good_app}  notify: &u 'https://127.0.0.1/hook'\n  health: {{ url: *u }}\n"),
            4,
            "only plain http://",
        ),
    ] {
        sandbox.write("upkeep.yaml", &format!("{CONFIG}{app}"));
        for args in [
            &["validate", "p"][..],
            &["run", "p", "--dry-run"],
            &["run", "p"],
        ] {
            refused(
                &sandbox.upkeep(args),
                "upkeep.yaml",
                app_line() + line,
                expected,
            );
        }
    }
}

#[test]
fn credentials_in_probes_and_hooks_are_never_shown_or_logged() {
    const SECRET: &str = "hunter2";
    let sandbox = Sandbox::new();
    let (port, _) = server(usize::MAX, 1_000);
    let url = format!("http://admin:{SECRET}@127.0.0.1:{port}/health");
    sandbox.write(
        "upkeep.yaml",
        &format!(
            "{CONFIG}app:\n  stop: test -n '{url}/stop'\n  start: test -n '{url}/start'\n  \
             health: {{ cmd: \"test -e up && test -n '{url}'\", timeout: 1s }}\n  \
             snapshot: test -n '{url}/snapshot'\n"
        ),
    );
    // stop-app comes last: never run, but planned (and shown) by dry-runs.
    sandbox.pipeline(
        "p",
        &format!(
            "env: production\nsteps:\n- uses: start-app\n\
             - uses: health\n  with: {{ cmd: \"test -e up && test -n '{url}'\", timeout: 1s }}\n\
             - uses: health\n  with: {{ url: '{url}', timeout: 1s }}\n- uses: stop-app\n"
        ),
    );
    let mut runs = Vec::new();
    for args in [
        &["validate", "p"][..],
        &["run", "p", "--dry-run"],
        &["--format", "json", "run", "p", "--dry-run"],
        &["--verbose", "run", "p"],
        &["--format", "json", "run", "p"],
    ] {
        runs.push(sandbox.upkeep(args));
    }
    // The app comes up; the health step's URL still answers 503.
    sandbox.write("up", "");
    runs.push(sandbox.upkeep(&["--verbose", "run", "p"]));
    runs.push(sandbox.upkeep(&["--format", "json", "run", "p"]));
    runs[1].code(0).stdout_has("exits 0");
    runs[3].code(1).stdout_has("is not healthy after 1s");
    runs[5].code(1).stdout_has("HTTP 503");
    for run in &runs {
        assert!(
            !run.stdout.contains(SECRET) && !run.stderr.contains(SECRET),
            "the password is shown\n{run}"
        );
        if run.args[1] != "validate" {
            run.stdout_has("***@127.0.0.1");
        }
    }
    let state = walk(&sandbox.path(".upkeep"));
    assert!(!state.is_empty());
    for file in state {
        let text = String::from_utf8_lossy(&bytes(&file)).into_owned();
        assert!(
            !text.contains(SECRET),
            "the password is in {}:\n{text}",
            file.display()
        );
    }
}
