//! One look at whether the app is up: `GET` answers 2xx (plain `http://`,
//! the app listens on this machine), `host:port` accepts a connection, or a
//! shell command exits 0. Shared by the `health` step and the app's
//! lifecycle (`app:` in upkeep.yaml). A command gets values only as
//! environment, never pasted into its text.
//!
//! Each look is held to a limit (what is left of the wait): a command
//! still running then is a failed look, and its whole process group is
//! killed (`crate::process`), so a probe never outlives its timeout. The
//! constructors check a probe's value, so that config and pipeline loading
//! refuse a probe that could never pass before anything runs; what a probe
//! says (described, or why it failed) goes through `crate::redact`, as a
//! command or URL may carry credentials.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::http;
use crate::process::{self, Ended};
use crate::redact;

/// The longest one HTTP or TCP look may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest limit a look gets: a connection needs a few milliseconds.
const LEAST: Duration = Duration::from_millis(10);

pub enum Probe {
    Http(http::Url),
    Tcp(String),
    Cmd(String),
}

impl Probe {
    /// The probe that exactly one of `url`, `tcp` or `cmd` gives, checked.
    pub fn of(url: Option<&str>, tcp: Option<&str>, cmd: Option<&str>) -> Result<Probe, String> {
        match (url, tcp, cmd) {
            (Some(url), None, None) => Probe::url(url),
            (None, Some(address), None) => Probe::tcp(address),
            (None, None, Some(command)) => Probe::cmd(command),
            _ => Err("give exactly one of `url`, `tcp` or `cmd`".to_string()),
        }
    }

    /// A probe of `url`, checked.
    pub fn url(url: &str) -> Result<Probe, String> {
        http::parse(
            url,
            "the app answers on this machine (use `http://127.0.0.1:PORT/...`), or use `cmd:` for anything else",
        )
        .map(Probe::Http)
    }

    /// A probe of `address` (`host:port`, `[v6]:port`), checked. Names are
    /// resolved at each look, not here: DNS may be down at load time.
    pub fn tcp(address: &str) -> Result<Probe, String> {
        let shown = redact::urls(address);
        let expected = "expected `host:port`, e.g. `127.0.0.1:8000` (`[::1]:8000` for IPv6)";
        if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "`{}` holds blanks or control characters: {expected}",
                shown.escape_debug()
            ));
        }
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(format!("`{shown}` has no port: {expected}"));
        };
        let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
        if host.is_empty() || host == "[]" {
            return Err(format!("`{shown}` has no host: {expected}"));
        }
        if !bracketed && host.contains(['/', '@', '[', ']', ':']) {
            return Err(format!("`{shown}` is not a host and port: {expected}"));
        }
        match port.parse::<u16>() {
            Ok(1..) => Ok(Probe::Tcp(address.to_string())),
            _ => Err(format!(
                "`{port}` is not a port (1 to 65535) in `{shown}`: {expected}"
            )),
        }
    }

    /// A probe that runs `command`, checked.
    pub fn cmd(command: &str) -> Result<Probe, String> {
        process::check_command(command)?;
        Ok(Probe::Cmd(command.to_string()))
    }

    /// What the probe waits for, in words (credentials masked).
    pub fn describe(&self) -> String {
        match self {
            Probe::Http(url) => format!("GET {url} answers 2xx"),
            Probe::Tcp(address) => format!("{} accepts a connection", redact::urls(address)),
            Probe::Cmd(command) => format!("`{}` exits 0", redact::urls(command)),
        }
    }

    /// One look, within `limit`: healthy, or why not (credentials masked).
    /// A command runs in `dir`, with `envs`.
    pub fn check<K, V>(
        &self,
        dir: &Path,
        envs: impl IntoIterator<Item = (K, V)>,
        limit: Duration,
    ) -> Result<(), String>
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let within = limit.clamp(LEAST, TIMEOUT);
        match self {
            Probe::Http(url) => match http::request(url, "GET", None, within)? {
                200..=299 => Ok(()),
                status => Err(format!("HTTP {status}")),
            },
            Probe::Tcp(address) => http::connect(address, within)
                .map(drop)
                .map_err(|why| redact::urls(&why)),
            Probe::Cmd(command) => {
                let shown = redact::urls(command);
                let mut shell = Command::new("/bin/sh");
                shell
                    .args(["-c", "--", command])
                    .envs(envs)
                    .current_dir(dir)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                // A look has nothing to clean up: no grace.
                match process::run(shell, limit.max(LEAST), Duration::ZERO) {
                    Err(error) => Err(format!("cannot run `{shown}`: {error}")),
                    Ok(Ended::Exited(status)) if status.success() => Ok(()),
                    Ok(Ended::Exited(status)) => Err(format!("`{shown}` {status}")),
                    Ok(Ended::Overran) => Err(format!(
                        "`{shown}` was still running when its time was up: its process group was killed"
                    )),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Probe;

    #[test]
    fn probes_that_could_never_pass_are_refused() {
        for bad in [
            "no-port-here",
            "host:",
            ":80",
            "host:0",
            "host:65536",
            "host:99999",
            "host:http",
            "::1:80",
            "[]:80",
            "a b:80",
            "http://host:80",
            "user:pw@host:80",
        ] {
            assert!(Probe::tcp(bad).is_err(), "{bad}");
        }
        for good in [
            "127.0.0.1:8000",
            "localhost:1",
            "[::1]:65535",
            "app.internal:80",
        ] {
            assert!(Probe::tcp(good).is_ok(), "{good}");
        }
        for bad in [
            "https://127.0.0.1:8000/health",
            "127.0.0.1:8000/health",
            "http://127.0.0.1:99999/health",
            "http://127.0.0.1:0/health",
            "http://:8000/health",
            "http:///health",
            "ftp://host/",
        ] {
            assert!(Probe::url(bad).is_err(), "{bad}");
        }
        for good in [
            "http://127.0.0.1:8000/health",
            "http://[::1]/",
            "http://localhost",
        ] {
            assert!(Probe::url(good).is_ok(), "{good}");
        }
        for bad in ["", "   ", "\n"] {
            assert!(Probe::cmd(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn what_a_probe_says_masks_credentials() {
        let probe = Probe::cmd("curl -fsS http://admin:hunter2@127.0.0.1:9/health").unwrap();
        assert!(!probe.describe().contains("hunter2"));
        let why = probe
            .check(
                std::path::Path::new("/"),
                [("PATH", "/nonexistent")],
                std::time::Duration::from_secs(5),
            )
            .unwrap_err();
        assert!(!why.contains("hunter2"), "{why}");
        let probe = Probe::tcp("127.0.0.1:1").unwrap();
        assert!(probe.describe().contains("127.0.0.1:1"));
    }
}
