//! Retention of continuous copies: which points stay, which moments
//! between them stay restorable, and which packs can go.
//!
//! - **Every moment within `wal_retention`** stays restorable. Every point
//!   taken since `now - wal_retention` stays with all its segments, and so
//!   does the newest point before that, the base of the first moments.
//! - **Older points**: those that the off-site retention keeps (calendar
//!   rules, restic's semantics, or the newest N) stay, but without their
//!   `.wal` segments after segment 0. Segment 0 is the `.wal` the live
//!   copy kept, part of the point itself. The others are deleted, with
//!   their segments.
//! - **The newest point** always stays, whatever the rules say.
//! - **A pack** is deleted only when no point that stays uses any of its
//!   blocks, and only when it is older than `grace`: younger, it may belong
//!   to a point whose manifest is not written yet.
//!
//! The order makes a crash harmless. Each point's manifest goes first
//! (no manifest, no point), then its segments, then the packs that no
//! point names any more. A crash leaves only objects that nothing names,
//! and the next prune removes them.
//!
//! Prune runs inside the replicator, which holds the environment's lock:
//! no point can be written meanwhile that names a pack being deleted. The
//! replicator's own map of known blocks forgets the deleted packs, so that
//! no later point names them.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use anyhow::{Context, Result};
use jiff::Timestamp;
use serde::Serialize;

use super::{Points, numbers, point_stem};
use crate::db::retention::Rotation;

/// What retention keeps of continuous copies.
#[derive(Debug, Clone)]
pub struct Keep {
    /// The off-site retention, applied to points.
    pub rotation: Rotation,
    /// How long every moment stays restorable.
    pub wal_retention: Duration,
    /// Packs younger than this are never deleted.
    pub grace: Duration,
}

/// What a prune deleted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pruned {
    /// Manifests of points deleted.
    pub points: Vec<String>,
    /// Segments deleted (of deleted points, and of older points kept
    /// without their moments).
    pub segments: u64,
    pub packs: u64,
    /// Bytes of the packs deleted.
    pub bytes: u64,
    /// Requests made: listings and deletions.
    pub requests: u64,
}

impl Pruned {
    pub fn is_empty(&self) -> bool {
        self.points.is_empty() && self.segments == 0 && self.packs == 0
    }
}

/// For points taken at `taken` (Unix ms, oldest first), which stay and
/// which of those keep all their segments, at `now`: see the module docs.
fn plan(keep: &Keep, taken: &[i64], now: Timestamp) -> Vec<(bool, bool)> {
    let base = base(taken, keep.wal_retention, now);
    let stamps: Vec<String> = taken.iter().map(|&ms| stamp(ms)).collect();
    let backups: Vec<(&str, bool)> = stamps.iter().map(|stamp| (stamp.as_str(), true)).collect();
    let by_rules = keep.rotation.kept_by(&backups);
    (0..taken.len())
        .map(|index| {
            let history = index >= base;
            (history || !by_rules[index].is_empty(), history)
        })
        .collect()
}

/// Of points taken at `taken` (Unix ms, oldest first), the first whose
/// moments stay restorable at `now`: the newest taken at or before
/// `now - wal_retention`, the base of the moments after it (0 when none).
pub fn base(taken: &[i64], wal_retention: Duration, now: Timestamp) -> usize {
    let cutoff = now.as_millisecond() - wal_retention.as_millis() as i64;
    taken.iter().rposition(|&ms| ms <= cutoff).unwrap_or(0)
}

/// A point's moment as a backup's stamp (`YYYYMMDD_HHMMSS`, UTC), which
/// the retention rules read.
fn stamp(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .strftime("%Y%m%d_%H%M%S")
        .to_string()
}

impl Points {
    /// Applies `keep` at `now` (see the module docs): one LIST of the
    /// points, one of the packs, and one of the segments of each point
    /// trimmed or deleted. Every manifest must be readable: a prune that
    /// cannot know what every point names deletes no pack.
    pub fn prune(&mut self, keep: &Keep, now: Timestamp) -> Result<Pruned> {
        let keys = self.keys()?;
        let mut pruned = Pruned {
            requests: 1,
            ..Pruned::default()
        };
        let taken: Vec<i64> = keys
            .iter()
            .map(|key| numbers(key).map_or(0, |(ms, _)| ms))
            .collect();
        let plan = plan(keep, &taken, now);
        let mut named = HashSet::new();
        for (key, (stays, history)) in keys.iter().zip(plan) {
            if stays {
                let packs = self.packs_of(key, &mut pruned)?;
                named.extend(packs.iter().cloned());
                if !history {
                    self.delete_segments(key, 1, &mut pruned)?;
                }
                continue;
            }
            self.store.delete(key)?;
            self.packs.remove(key);
            pruned.points.push(key.clone());
            pruned.requests += 1;
            self.delete_segments(key, 0, &mut pruned)?;
        }
        let mut gone = HashSet::new();
        pruned.requests += 1;
        for pack in self.store.list(&format!("{}/packs/", self.env))? {
            let young = now.duration_since(pack.modified).unsigned_abs() < keep.grace
                || pack.modified > now;
            if named.contains(&pack.key) || young {
                continue;
            }
            self.store.delete(&pack.key)?;
            pruned.requests += 1;
            pruned.packs += 1;
            pruned.bytes += pack.size;
            gone.insert(pack.key);
        }
        self.known
            .retain(|_, located| !gone.contains(&located.pack));
        Ok(pruned)
    }

    /// The packs point `key` uses: learned, or read from its manifest.
    fn packs_of(&mut self, key: &str, pruned: &mut Pruned) -> Result<&BTreeSet<String>> {
        if !self.packs.contains_key(key) {
            pruned.requests += 1;
            let point = self
                .manifest(key)
                .with_context(|| format!("prune deletes nothing while `{key}` cannot be read"))?;
            self.learn_point(key, &point);
        }
        Ok(&self.packs[key])
    }

    /// Deletes the segments of point `key` from number `from` on.
    fn delete_segments(&self, key: &str, from: i64, pruned: &mut Pruned) -> Result<()> {
        let folder = format!("{}/segments/{}/", self.env, point_stem(key)?);
        pruned.requests += 1;
        for object in self.store.list(&folder)? {
            if numbers(&object.key).is_none_or(|(seq, _)| seq >= from) {
                self.store.delete(&object.key)?;
                pruned.requests += 1;
                pruned.segments += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::retention::Policy;

    const HOUR: i64 = 3_600_000;

    fn keep(rotation: Rotation) -> Keep {
        Keep {
            rotation,
            wal_retention: Duration::from_secs(48 * 3600),
            grace: Duration::from_secs(3600),
        }
    }

    #[test]
    fn moments_within_wal_retention_and_the_base_before_them_keep_their_segments() {
        let now = Timestamp::from_millisecond(1_000 * HOUR).unwrap();
        // A point every 12 hours over 5 days, the newest 1 hour ago.
        let taken: Vec<i64> = (0..10)
            .map(|n| 1_000 * HOUR - HOUR - (9 - n) * 12 * HOUR)
            .collect();
        let plan = plan(&keep(Rotation::Newest(1)), &taken, now);
        // Within 48 h: taken 1, 13, 25, 37 hours ago; the base: 49 hours ago.
        let history: Vec<bool> = plan.iter().map(|(_, history)| *history).collect();
        assert_eq!(
            history,
            [
                false, false, false, false, false, true, true, true, true, true
            ]
        );
        // Keep 1 newest: nothing older stays.
        assert!(plan.iter().all(|(stays, history)| stays == history));
    }

    #[test]
    fn older_points_stay_by_the_calendar_rules_without_their_moments() {
        let now = Timestamp::from_millisecond(1_000 * HOUR).unwrap();
        // Every 6 hours for 10 days.
        let taken: Vec<i64> = (0..40)
            .map(|n| 1_000 * HOUR - (39 - n) * 6 * HOUR)
            .collect();
        let daily = Rotation::Calendar(Policy {
            daily: Some(7),
            ..Policy::default()
        });
        let plan = plan(&keep(daily), &taken, now);
        let stays = plan.iter().filter(|(stays, _)| *stays).count();
        let history = plan.iter().filter(|(_, history)| *history).count();
        // 48 h of points every 6 h, and the base before: 9.
        assert_eq!(history, 9);
        // 7 daily, of which 2 or 3 are within 48 h; the oldest day's too.
        assert!(stays > history && stays <= history + 7, "{plan:?}");
        // The newest always stays.
        assert!(plan.last().unwrap().0);
        // Nothing within wal_retention goes, whatever the rules.
        let none = Keep {
            rotation: Rotation::Newest(1),
            ..keep(Rotation::Newest(1))
        };
        let plan = super::plan(&none, &taken, now);
        assert_eq!(plan.iter().filter(|(stays, _)| *stays).count(), 9);
    }

    #[test]
    fn a_clock_behind_the_points_keeps_everything() {
        let taken = [10 * HOUR, 20 * HOUR];
        let plan = plan(
            &keep(Rotation::Newest(1)),
            &taken,
            Timestamp::from_millisecond(HOUR).unwrap(),
        );
        assert_eq!(plan, [(true, true), (true, true)]);
    }
}
