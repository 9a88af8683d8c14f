//! One look at whether the app is up: `GET` answers 2xx (plain `http://`,
//! the app listens on this machine), `host:port` accepts a connection, or a
//! shell command exits 0. Shared by the `health` step and the app's
//! lifecycle (`app:` in upkeep.yaml). A command gets values only as
//! environment, never pasted into its text.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::http;

/// How long one look may take.
const TIMEOUT: Duration = Duration::from_secs(5);

pub enum Probe {
    Http(http::Url),
    Tcp(String),
    Cmd(String),
}

impl Probe {
    /// A probe of `url`, checked.
    pub fn url(url: &str) -> Result<Probe, String> {
        http::parse(
            url,
            "the app answers on this machine; use `cmd:` for anything else",
        )
        .map(Probe::Http)
    }

    /// What the probe waits for, in words (a URL without its credentials).
    pub fn describe(&self) -> String {
        match self {
            Probe::Http(url) => format!("GET {url} answers 2xx"),
            Probe::Tcp(address) => format!("{address} accepts a connection"),
            Probe::Cmd(command) => format!("`{command}` exits 0"),
        }
    }

    /// One look: healthy, or why not. A command runs in `dir`, with `envs`.
    pub fn check<K, V>(
        &self,
        dir: &Path,
        envs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(), String>
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        match self {
            Probe::Http(url) => match http::request(url, "GET", None, TIMEOUT)? {
                200..=299 => Ok(()),
                status => Err(format!("HTTP {status}")),
            },
            Probe::Tcp(address) => http::connect(address, TIMEOUT).map(drop),
            Probe::Cmd(command) => {
                let status = Command::new("/bin/sh")
                    .args(["-c", "--", command])
                    .envs(envs)
                    .current_dir(dir)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map_err(|error| format!("cannot run `{command}`: {error}"))?;
                if status.success() {
                    Ok(())
                } else {
                    Err(format!("`{command}` {status}"))
                }
            }
        }
    }
}
