//! `upkeep replicate ENV`: continuous off-site copies of a running app's
//! database. Every `interval` it ships the commits added to the `.wal`
//! since the last round as one segment ([`crate::db::segment`]); it takes
//! a new point ([`super::points`], a live copy of which only the blocks the
//! store lacks go up) at the start, when the `.wal` it follows ends (a
//! checkpoint, or upkeep's own restore, repair or update replaced the
//! file), and at least every `point_every`. A round with nothing new makes
//! no request. On SIGTERM or SIGINT it ships what is pending, then stops.
//! One replicator per environment: a lock in the state folder.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use serde::Serialize;

use super::Site;
use super::points::Points;
use crate::db::Env;
use crate::db::live::{self, Refused};
use crate::db::segment::{self, Cursor, Next};
use crate::error::{Busy, bad_input};

/// The shortest interval: the `.wal` is read at most 10 times a second.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// How often the `.wal` is read, and when points are taken again.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub interval: Duration,
    pub point_every: Duration,
}

/// What one round shipped (a round that shipped nothing is not reported).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Shipment {
    /// A new point: why, its blocks, and what went up.
    Point {
        key: String,
        why: String,
        blocks: u64,
        new_blocks: u64,
        bytes: u64,
        puts: u64,
    },
    /// Commits of the `.wal`: those committed before `read_at`.
    Segment {
        key: String,
        read_at: String,
        commits: u64,
        bytes: u64,
        puts: u64,
    },
    /// No point could be taken this round (a checkpoint kept moving).
    Retry { why: String },
}

/// The point being followed.
struct Current {
    key: String,
    iteration: u64,
    cursor: Option<Cursor>,
    seq: u64,
    taken: Instant,
}

/// Runs until `stop` is set (then one last round), reporting each
/// shipment to `report`.
pub fn run(
    site: &Site,
    env: &Env,
    options: Options,
    stop: &Arc<AtomicBool>,
    report: &mut dyn FnMut(&Shipment),
) -> Result<()> {
    if options.interval < MIN_INTERVAL || options.point_every < options.interval {
        bail!(bad_input(format!(
            "--interval must be at least {} and --point-every at least --interval (given {} and {})",
            humantime::format_duration(MIN_INTERVAL),
            humantime::format_duration(options.interval),
            humantime::format_duration(options.point_every)
        )));
    }
    if !env.db.exists() {
        bail!(bad_input(format!(
            "no database file at `{}` for `{}`: check `databases` in upkeep.yaml",
            env.db.display(),
            env.name
        )));
    }
    let _lock = lock(site, env)?;
    let mut points = Points::open(site, &env.name)?;
    points.learn()?;
    points.naming_key(site.state_dir)?;
    crate::fsx::create_private_dir(site.backups_dir)?;
    // The live copies a killed replicator left.
    crate::fsx::sweep_partials(site.backups_dir);
    let wal = crate::db::wal::path_of(&env.db);
    let mut current: Option<Current> = None;
    let mut why = "the replicator started".to_string();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let started = Instant::now();
        if let Some(point) = current
            .as_ref()
            .filter(|point| point.taken.elapsed() >= options.point_every)
        {
            why = format!(
                "{} since point {}",
                humantime::format_duration(options.point_every),
                point.key
            );
            current = None;
        }
        match current.as_mut() {
            None => match take_point(&mut points, env, &wal, site, &why)? {
                Ok((point, shipment)) => {
                    report(&shipment);
                    current = Some(point);
                }
                Err(retry) => report(&retry),
            },
            Some(point) => match segment::next(&wal, point.cursor.as_ref())? {
                Next::Commits {
                    bytes,
                    commits,
                    cursor,
                    ..
                } if cursor.iteration == Some(point.iteration) => {
                    let read_at = Timestamp::now();
                    let key = points.ship_segment(&point.key, point.seq, read_at, &bytes)?;
                    point.seq += 1;
                    point.cursor = Some(cursor);
                    report(&Shipment::Segment {
                        key,
                        read_at: read_at.to_string(),
                        commits,
                        bytes: bytes.len() as u64,
                        puts: 1,
                    });
                    // More may have come meanwhile: look again at once.
                    continue;
                }
                Next::Commits { .. } => {
                    why = "the .wal is of a later checkpoint".to_string();
                    current = None;
                    continue;
                }
                Next::Ended(reason) => {
                    why = reason;
                    current = None;
                    continue;
                }
                Next::Nothing => {}
            },
        }
        if stopping {
            return Ok(());
        }
        while started.elapsed() < options.interval && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20).min(options.interval));
        }
    }
}

/// A live copy of `env`'s database shipped as a point, with the `.wal` it
/// kept as segment 0; `Err` is a round to retry.
fn take_point(
    points: &mut Points,
    env: &Env,
    wal: &std::path::Path,
    site: &Site,
    why: &str,
) -> Result<Result<(Current, Shipment), Shipment>> {
    let folder = crate::fsx::partial_dir(site.backups_dir)?;
    let copied = match live::copy(&env.db, wal, folder.path()) {
        Ok(copied) => copied,
        Err(Refused::Unsettled { last, .. }) => {
            return Ok(Err(Shipment::Retry {
                why: format!("no consistent copy this round ({last})"),
            }));
        }
        Err(error) => return Err(error.into()),
    };
    let taken_at = Timestamp::now();
    let shipped = points.ship(&copied.db, copied.iteration, taken_at)?;
    let mut cursor = None;
    let mut puts = shipped.puts;
    if let (Some(kept), Some(file)) = (&copied.wal, copied.wal_file)
        && let Next::Commits {
            bytes, cursor: at, ..
        } = segment::next(kept, None)?
    {
        points.ship_segment(&shipped.key, 0, taken_at, &bytes)?;
        puts += 1;
        cursor = Some(at.following(file));
    }
    Ok(Ok((
        Current {
            key: shipped.key.clone(),
            iteration: copied.iteration,
            cursor,
            seq: 1,
            taken: Instant::now(),
        },
        Shipment::Point {
            key: shipped.key,
            why: why.to_string(),
            blocks: shipped.blocks,
            new_blocks: shipped.new_blocks,
            bytes: shipped.new_bytes,
            puts,
        },
    )))
}

/// The replicator's lock of `env`: `replicate-ENV.lock` in the state
/// folder, held while it runs.
fn lock(site: &Site, env: &Env) -> Result<std::fs::File> {
    crate::fsx::create_private_dir(site.state_dir)?;
    let path: PathBuf = site.state_dir.join(format!("replicate-{}.lock", env.name));
    let file = crate::fsx::private_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open `{}`", path.display()))?;
    // SAFETY: a valid descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!(Busy(format!(
                "another `upkeep replicate {}` runs (it holds `{}`): one replicator per environment",
                env.name,
                path.display()
            )));
        }
        return Err(error).with_context(|| format!("cannot lock `{}`", path.display()));
    }
    Ok(file)
}
