//! `uses: health`: waits until the app answers. `with:` one of `url`
//! (HTTP 2xx; plain `http://` only, as the app listens on this machine),
//! `tcp` (`host:port` accepts a connection) or `cmd` (a shell command exits
//! 0; variables reach it as environment, `$NAME`, never pasted in), and `timeout` (default 60s) and `interval` (default 1s: the longest
//! pause between two looks; the first ones come sooner). A timeout
//! fails the step, which rolls the update back; a look is held to what is
//! left of it (a `cmd` still running then is killed with its process
//! group). Every value is checked when the pipeline loads (a `${NAME}` in
//! `url` or `tcp`, once substituted, before the step runs). The HTTP
//! client is `crate::http`: no TLS or proxy stack for 127.0.0.1.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

use super::{Ctx, Plan, Ran, StepType, Undo, With, later};
use crate::probe::Probe;

pub struct Health;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
fn probe(with: &With) -> Result<Probe, String> {
    let given = |key: &str| with.get(key).map(String::as_str);
    let (url, tcp, cmd) = (given("url"), given("tcp"), given("cmd"));
    // A `${NAME}` is known at run time, where the step is checked again
    // once it is substituted. A command is the pipeline's own text
    // (`${NAME}` is refused in it): variables reach it as environment only.
    if url.into_iter().chain(tcp).any(later) {
        return match [url, tcp, cmd].into_iter().flatten().count() {
            1 => Ok(Probe::Tcp(String::new())),
            _ => Probe::of(url, tcp, cmd),
        };
    }
    Probe::of(url, tcp, cmd)
}

/// One look within `limit`, with the run's variables as a command's
/// environment.
fn look(probe: &Probe, ctx: &Ctx, limit: Duration) -> Result<(), String> {
    probe.check(
        &ctx.config.root,
        ctx.vars.iter().map(|(name, value)| (name, value)),
        limit,
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

    fn may_change(&self) -> bool {
        false
    }

    fn plan(&self, ctx: &Ctx, with: &With) -> Plan {
        let probe = match probe(with) {
            Ok(probe) => probe,
            Err(error) => return Plan::blocked("wait until healthy", &anyhow!(error)),
        };
        let timeout = duration(with, "timeout", DEFAULT_TIMEOUT).unwrap_or(DEFAULT_TIMEOUT);
        let now = match look(&probe, ctx, timeout) {
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
            let left = timeout.saturating_sub(started.elapsed());
            let last = match look(&probe, ctx, left) {
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
