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
