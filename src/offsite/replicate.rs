//! `upkeep replicate ENV`: continuous off-site copies of a running app's
//! database. Every `interval` it ships the commits added to the `.wal`
//! since the last round as one segment ([`crate::db::segment`]); it takes
//! a new point ([`super::points`], a live copy of which only the blocks the
//! store lacks go up) at the start, when the `.wal` it follows ends (a
//! checkpoint, or upkeep's own restore, repair or update replaced the
//! file), and at least every `point_every`. Each point is a live copy onto
//! the copy of the last one (`db::live::copy_onto`): it reads and names
//! only what changed. A round with nothing new makes no request. On
//! SIGTERM or SIGINT it ships what is pending, then stops. One replicator
//! per environment: a lock in the state folder.
//!
//! While an upkeep command that changes the database holds upkeep's lock
//! (a restore, a repair, an update), no point is taken (see
//! [`crate::lock::round`]); the current point's `.wal` is shipped until it
//! ends, and a new point is taken once the command ends. After its first
//! point, then at most hourly, it applies retention
//! ([`super::points::Keep`]).

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use serde::Serialize;

use super::Site;
use super::points::{Keep, Named, Points, Pruned};
use crate::db::Env;
use crate::db::live::{self, Refused};
use crate::db::segment::{self, Cursor, Next};
use crate::error::{Busy, bad_input};

/// The shortest interval: the `.wal` is read at most 10 times a second.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Retention is applied after the first point, then after a point at
/// most this often: it lists the store, which the rounds never do.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Packs younger than this are never pruned (another host's point may be
/// on its way): the age push gives data without a manifest.
const PACK_GRACE: Duration = Duration::from_secs(3600);

/// `backups.offsite.continuous` in upkeep.yaml (`--interval` and
/// `--point-every` override the first two): how often the `.wal` is read,
/// when points are taken again, and how long every commit stays
/// restorable (older moments keep only their points, as retention says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub interval: Duration,
    pub point_every: Duration,
    pub wal_retention: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            interval: Duration::from_secs(1),
            point_every: Duration::from_secs(15 * 60),
            wal_retention: Duration::from_secs(48 * 3600),
        }
    }
}

impl Options {
    /// Refuses settings that cannot work, naming them as upkeep.yaml does.
    pub fn check(&self) -> Result<(), String> {
        let show = |duration: Duration| humantime::format_duration(duration).to_string();
        if self.interval < MIN_INTERVAL {
            return Err(format!(
                "`interval: {}` is shorter than {}: the .wal is read at most 10 times a second",
                show(self.interval),
                show(MIN_INTERVAL)
            ));
        }
        if self.point_every < self.interval {
            return Err(format!(
                "`point_every: {}` is shorter than `interval: {}`: give point_every at least the interval",
                show(self.point_every),
                show(self.interval)
            ));
        }
        if self.wal_retention < self.point_every {
            return Err(format!(
                "`wal_retention: {}` is shorter than `point_every: {}`: every commit would not stay \
                 restorable from one point to the next; give wal_retention at least point_every",
                show(self.wal_retention),
                show(self.point_every)
            ));
        }
        Ok(())
    }
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
    /// An upkeep command that changes the database runs: no point until
    /// it ends.
    Paused { why: String },
    /// Retention applied (see [`super::points::Keep`]): what was deleted.
    Pruned(Pruned),
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
    if let Err(problem) = options.check() {
        bail!(bad_input(format!(
            "{problem} (from `backups.offsite.continuous` in upkeep.yaml, or --interval and --point-every)"
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
    // The copy each point is made on, kept from one to the next so that a
    // point reads and names only what changed.
    let scratch = crate::fsx::partial_dir(site.backups_dir)?;
    let mut copy = Copy {
        base: live::Base::new(&env.db, scratch.path())?,
        named: Named::default(),
    };
    let wal = crate::db::wal::path_of(&env.db);
    let mut current: Option<Current> = None;
    let mut why = "the replicator started".to_string();
    let mut pruned = None;
    let mut paused: Option<String> = None;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let started = Instant::now();
        // An upkeep command that changes the database holds the lock: the
        // current point's `.wal` is still shipped while it lasts (it ends
        // when the app stops or the file is replaced), but no point is
        // taken until the command ends; then one at once.
        let blocker = crate::lock::holder(site.state_dir).filter(crate::lock::changes);
        match (blocker, &paused) {
            (Some(holder), None) => {
                report(&Shipment::Paused {
                    why: format!("`{}` holds the lock", holder.what),
                });
                paused = Some(holder.what);
            }
            (None, Some(what)) => {
                why = format!("`{what}` ended");
                paused = None;
                current = None;
            }
            _ => {}
        }
        if let Some(point) = current
            .as_ref()
            .filter(|point| point.taken.elapsed() >= options.point_every && paused.is_none())
        {
            why = format!(
                "{} since point {}",
                humantime::format_duration(options.point_every),
                point.key
            );
            current = None;
        }
        match current.as_mut() {
            None if paused.is_some() => {}
            None => match take_point(&mut points, &mut copy, env, &wal, site, &why)? {
                Ok((point, shipment)) => {
                    report(&shipment);
                    current = Some(point);
                    if pruned.is_none_or(|at: Instant| at.elapsed() >= PRUNE_EVERY) {
                        report(&prune(&mut points, site, options)?);
                        pruned = Some(Instant::now());
                    }
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

/// The copy points are made on, and what its last point named.
struct Copy {
    base: live::Base,
    named: Named,
}

/// A live copy of `env`'s database onto `copy`, shipped as a point, with
/// the `.wal` it kept as segment 0; `Err` is a round to retry.
fn take_point(
    points: &mut Points,
    copy: &mut Copy,
    env: &Env,
    wal: &std::path::Path,
    site: &Site,
    why: &str,
) -> Result<Result<(Current, Shipment), Shipment>> {
    // Never while a command that changes the database runs (see
    // `lock::round`): it waits for this copy to end before it starts.
    let Some(round) = crate::lock::round(site.state_dir)? else {
        return Ok(Err(Shipment::Retry {
            why: "an upkeep command took the lock".to_string(),
        }));
    };
    let copied = live::copy_onto(&env.db, wal, &mut copy.base);
    drop(round);
    let copied = match copied {
        Ok(copied) => copied,
        Err(Refused::Unsettled { last, .. }) => {
            return Ok(Err(Shipment::Retry {
                why: format!("no consistent copy this round ({last})"),
            }));
        }
        Err(error) => return Err(error.into()),
    };
    let taken_at = Timestamp::now();
    let changed = copy.base.take_changed();
    let shipped = points.ship(
        &copied.db,
        copied.iteration,
        taken_at,
        &changed,
        &mut copy.named,
    )?;
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

/// Applies retention to the points of `points` now.
fn prune(points: &mut Points, site: &Site, options: Options) -> Result<Shipment> {
    let keep = Keep {
        rotation: site.rotation.clone(),
        wal_retention: options.wal_retention,
        grace: PACK_GRACE,
    };
    Ok(Shipment::Pruned(points.prune(&keep, Timestamp::now())?))
}

/// The replicator's lock of `env`: `replicate-ENV.lock` in the state
/// folder, held while it runs.
fn lock(site: &Site, env: &Env) -> Result<std::fs::File> {
    crate::fsx::create_private_dir(site.state_dir)?;
    let path: PathBuf = site.state_dir.join(format!("replicate-{}.lock", env.name));
    let file = crate::fsx::open_lock_file(&path)?;
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
