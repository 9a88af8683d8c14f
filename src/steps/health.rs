//! `uses: health`: waits until the app answers. `with:` one of `url`
//! (HTTP 2xx; plain `http://` only, as the app listens on this machine),
//! `tcp` (`host:port` accepts a connection) or `cmd` (a shell command exits
//! 0; variables reach it as environment, `$NAME`, never pasted in), and `timeout` (default 60s) and `interval` (default 1s: the longest
//! pause between two looks; the first ones come sooner). A timeout
//! fails the step, which rolls the update back. The HTTP client is
//! `crate::http`: no TLS or proxy stack for 127.0.0.1.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

use super::{Ctx, Plan, Ran, StepType, Undo, With, later};
use crate::probe::Probe;

pub struct Health;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
fn probe(with: &With) -> Result<Probe, String> {
    match (with.get("url"), with.get("tcp"), with.get("cmd")) {
        // Checked again once `${NAME}` is substituted, at run time.
        (Some(url), None, None) if later(url) => Ok(Probe::Tcp(String::new())),
        (Some(url), None, None) => Probe::url(url),
        (None, Some(address), None) => Ok(Probe::Tcp(address.clone())),
        // The command is the pipeline's own text (`${NAME}` is refused in
        // it): variables reach it as environment only.
        (None, None, Some(command)) => Ok(Probe::Cmd(command.clone())),
        _ => Err("give exactly one of `url`, `tcp` or `cmd`".to_string()),
    }
}

/// One look, with the run's variables as a command's environment.
fn look(probe: &Probe, ctx: &Ctx) -> Result<(), String> {
    probe.check(
        &ctx.config.root,
        ctx.vars.iter().map(|(name, value)| (name, value)),
    )
}

fn duration(with: &With, key: &str, default: Duration) -> Result<Duration, String> {
    match with.get(key) {
        None => Ok(default),
        Some(text) if later(text) => Ok(default),
        Some(text) => match humantime::parse_duration(text) {
            Ok(value) if !value.is_zero() => Ok(value),
            _ => Err(format!(
                "`{key}: {text}` is not a duration: expected e.g. 60s or 2m"
            )),
        },
    }
}

impl StepType for Health {
    fn needs_env(&self) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        "health"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["url", "tcp", "cmd", "timeout", "interval"]
    }

    fn commands(&self) -> &'static [&'static str] {
        &["cmd"]
    }

    fn check(&self, with: &With) -> Result<(), String> {
        probe(with)?;
        duration(with, "timeout", DEFAULT_TIMEOUT)?;
        duration(with, "interval", DEFAULT_INTERVAL)?;
        Ok(())
    }

    fn plan(&self, ctx: &Ctx, with: &With) -> Plan {
        let probe = match probe(with) {
            Ok(probe) => probe,
            Err(error) => return Plan::blocked("wait until healthy", &anyhow!(error)),
        };
        let timeout = duration(with, "timeout", DEFAULT_TIMEOUT).unwrap_or(DEFAULT_TIMEOUT);
        let now = match look(&probe, ctx) {
            Ok(()) => "healthy now".to_string(),
            Err(why) => {
                format!("not healthy now ({why}); earlier steps start the app in a real run")
            }
        };
        Plan {
            summary: format!(
                "wait up to {} until {}: {now}",
                humantime::format_duration(timeout),
                probe.describe()
            ),
            ..Plan::default()
        }
    }

    fn run(&self, ctx: &Ctx, with: &With) -> Result<Ran> {
        let probe = probe(with).map_err(anyhow::Error::msg)?;
        let timeout = duration(with, "timeout", DEFAULT_TIMEOUT).map_err(anyhow::Error::msg)?;
        let interval = duration(with, "interval", DEFAULT_INTERVAL).map_err(anyhow::Error::msg)?;
        let started = Instant::now();
        // An app is often up within milliseconds: look again soon, then
        // less often, up to `interval`.
        let mut pause = Duration::from_millis(20).min(interval);
        loop {
            let last = match look(&probe, ctx) {
                Ok(()) => {
                    return Ok(Ran::unchanged(
                        format!("healthy after {:.1}s", started.elapsed().as_secs_f64()),
                        Undo::nothing(),
                    ));
                }
                Err(why) => why,
            };
            if started.elapsed() + pause > timeout {
                bail!(
                    "not healthy after {}: {} (last: {last})",
                    humantime::format_duration(timeout),
                    probe.describe()
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(interval);
        }
    }
}
