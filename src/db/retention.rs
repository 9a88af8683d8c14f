//! Which backups rotation keeps: the newest N, or a calendar policy.
//!
//! The calendar policy follows restic's `forget`: going from the newest
//! backup to the oldest, each rule keeps a backup when it is the newest of
//! a day (week, month, year) that rule has not kept one for yet, until the
//! rule has kept its count; `last` keeps the N newest. A backup is kept
//! when any rule keeps it, and the rules that did are its reasons. When a
//! calendar rule finds fewer periods than its count, the oldest backup is
//! kept too, as restic does since 0.16.0 (it names that reason "oldest"
//! since 0.18.0, and so do we). Days, ISO weeks (Monday to Sunday), months
//! and years are those of the backups' UTC stamps.

use serde::{Deserialize, Serialize};

/// `retention:`: how many of each to keep. A missing rule keeps none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub last: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
}

/// How rotation chooses what to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// `keep: N` (or `--keep N`): the N newest.
    Newest(u32),
    /// `retention:`: by calendar.
    Calendar(Policy),
}

impl Rotation {
    /// Says what is kept, for plans and help: "the 30 newest",
    /// "last 3, 7 daily, 4 weekly".
    pub fn describe(&self) -> String {
        match self {
            Rotation::Newest(keep) => format!("the {keep} newest"),
            Rotation::Calendar(policy) => policy.describe(),
        }
    }

    /// For each backup, given as its stamp and whether it is verified
    /// (oldest first), the rules that keep it; empty when rotation may
    /// delete it. The newest verified backup is never deleted, whatever
    /// the rules say: it is kept as `newest verified`.
    pub fn kept_by(&self, backups: &[(&str, bool)]) -> Vec<Vec<&'static str>> {
        self.kept_after(backups, None)
    }

    /// [`Rotation::kept_by`], right after `just_made` (an index into
    /// `backups`) was made: it is the newest backup whatever its stamp says
    /// (a clock set back), so it is one of `keep: N`'s or `last: N`'s N,
    /// and, verified, the newest verified one. N then remain, counting it.
    pub fn kept_after(
        &self,
        backups: &[(&str, bool)],
        just_made: Option<usize>,
    ) -> Vec<Vec<&'static str>> {
        let stamps: Vec<&str> = backups.iter().map(|(stamp, _)| *stamp).collect();
        let order = newest_first(&stamps, just_made);
        let mut reasons = match self {
            Rotation::Newest(keep) => Policy {
                last: Some(*keep),
                ..Policy::default()
            }
            .reasons_in(&stamps, &order),
            Rotation::Calendar(policy) => policy.reasons_in(&stamps, &order),
        };
        if let Some(&newest) = order.iter().find(|&&index| backups[index].1) {
            reasons[newest].push("newest verified");
        }
        reasons
    }

    /// For each backup stamp (`YYYYMMDD_HHMMSS`, any order), the rules
    /// that keep it; empty when rotation may delete it.
    pub fn reasons(&self, stamps: &[&str]) -> Vec<Vec<&'static str>> {
        let unverified: Vec<(&str, bool)> = stamps.iter().map(|stamp| (*stamp, false)).collect();
        self.kept_after(&unverified, None)
    }
}

/// The indexes of `stamps`, newest first; `just_made` first of all.
fn newest_first(stamps: &[&str], just_made: Option<usize>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..stamps.len()).collect();
    order.sort_by(|a, b| {
        let made = |index: &usize| Some(*index) == just_made;
        made(b)
            .cmp(&made(a))
            .then_with(|| stamps[*b].cmp(stamps[*a]))
    });
    order
}

/// A rule: its name, its count, and the period a stamp falls in.
type Rule = (&'static str, Option<u32>, fn(&str) -> String);

impl Policy {
    fn rules(&self) -> [Rule; 5] {
        [
            ("last", self.last, |stamp| stamp.to_string()),
            ("daily", self.daily, |stamp| stamp[..8].to_string()),
            ("weekly", self.weekly, iso_week),
            ("monthly", self.monthly, |stamp| stamp[..6].to_string()),
            ("yearly", self.yearly, |stamp| stamp[..4].to_string()),
        ]
    }

    /// Refuses a policy that keeps nothing: rotation would then rest on
    /// the newest-verified guard alone.
    pub fn check(&self) -> Result<(), String> {
        if self
            .rules()
            .iter()
            .all(|(_, count, _)| count.unwrap_or(0) == 0)
        {
            return Err(
                "retention keeps nothing: give at least one of last, daily, weekly, monthly, yearly a count of 1 or more"
                    .to_string(),
            );
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .rules()
            .iter()
            .filter_map(|(name, count, _)| count.filter(|n| *n > 0).map(|n| format!("{n} {name}")))
            .collect();
        format!("by calendar ({})", parts.join(", "))
    }

    /// See [`Rotation::reasons`].
    pub fn reasons(&self, stamps: &[&str]) -> Vec<Vec<&'static str>> {
        self.reasons_in(stamps, &newest_first(stamps, None))
    }

    /// The rules that keep each of `stamps`, taken in `order` (newest
    /// first).
    fn reasons_in(&self, stamps: &[&str], order: &[usize]) -> Vec<Vec<&'static str>> {
        let mut reasons = vec![Vec::new(); stamps.len()];
        let mut unfilled = false;
        for (name, count, bucket_of) in self.rules() {
            let mut left = count.unwrap_or(0);
            let mut last_bucket: Option<String> = None;
            for &index in order {
                if left == 0 {
                    break;
                }
                let bucket = bucket_of(stamps[index]);
                if last_bucket.as_ref() != Some(&bucket) {
                    reasons[index].push(name);
                    last_bucket = Some(bucket);
                    left -= 1;
                }
            }
            unfilled |= left > 0 && name != "last";
        }
        if let Some(&oldest) = order.last()
            && unfilled
            && !reasons[oldest].contains(&"oldest")
        {
            reasons[oldest].push("oldest");
        }
        reasons
    }
}

/// The ISO year and week of a stamp, `2024-W03`: weeks start on Monday,
/// and the first days of January may belong to the last year's week.
fn iso_week(stamp: &str) -> String {
    let date = (|| {
        let year: i16 = stamp[..4].parse().ok()?;
        let month: i8 = stamp[4..6].parse().ok()?;
        let day: i8 = stamp[6..8].parse().ok()?;
        jiff::civil::Date::new(year, month, day).ok()
    })();
    match date {
        Some(date) => {
            let week = date.iso_week_date();
            format!("{}-W{:02}", week.year(), week.week())
        }
        // Stamps are checked when backups are listed; a bad one is its own week.
        None => stamp.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stamps every day at 02:00 from `start` for `days` days, newest last.
    fn dailies(start: jiff::civil::Date, days: i64) -> Vec<String> {
        (0..days)
            .map(|n| {
                let date = start.checked_add(jiff::Span::new().days(n)).unwrap();
                date.strftime("%Y%m%d_020000").to_string()
            })
            .collect()
    }

    fn kept<'a>(policy: &Policy, stamps: &'a [String]) -> Vec<(&'a str, Vec<&'static str>)> {
        let refs: Vec<&str> = stamps.iter().map(String::as_str).collect();
        let reasons = policy.reasons(&refs);
        stamps
            .iter()
            .zip(reasons)
            .filter(|(_, why)| !why.is_empty())
            .map(|(stamp, why)| (stamp.as_str(), why))
            .collect()
    }

    fn date(y: i16, m: i8, d: i8) -> jiff::civil::Date {
        jiff::civil::Date::new(y, m, d).unwrap()
    }

    #[test]
    fn a_year_and_a_month_of_dailies_keeps_one_per_period() {
        // 400 days of dailies, from 2023-01-01 to 2024-02-04 (a Sunday).
        let stamps = dailies(date(2023, 1, 1), 400);
        assert_eq!(stamps.last().unwrap(), "20240204_020000");
        let policy = Policy {
            daily: Some(7),
            weekly: Some(4),
            monthly: Some(12),
            yearly: Some(2),
            ..Policy::default()
        };
        let kept = kept(&policy, &stamps);
        let by = |rule: &str| -> Vec<&str> {
            kept.iter()
                .filter(|(_, why)| why.contains(&rule))
                .map(|(stamp, _)| *stamp)
                .collect()
        };
        // The 7 newest days.
        assert_eq!(
            by("daily"),
            [
                "20240129_020000",
                "20240130_020000",
                "20240131_020000",
                "20240201_020000",
                "20240202_020000",
                "20240203_020000",
                "20240204_020000"
            ]
        );
        // The newest of each of the last 4 ISO weeks: Sundays.
        assert_eq!(
            by("weekly"),
            [
                "20240114_020000",
                "20240121_020000",
                "20240128_020000",
                "20240204_020000"
            ]
        );
        // The newest of each of the last 12 months: month ends, and today.
        let monthly = by("monthly");
        assert_eq!(monthly.len(), 12);
        assert_eq!(monthly[0], "20230331_020000");
        assert_eq!(monthly[10], "20240131_020000");
        assert_eq!(monthly[11], "20240204_020000");
        // Each year's newest: 2023-12-31 and today.
        assert_eq!(by("yearly"), ["20231231_020000", "20240204_020000"]);
        // The union: 7 daily + 3 older weeklies + 10 older monthlies
        // (2023-03 .. 2023-12) + nothing new from yearly (2023-12-31 is
        // December's monthly).
        assert_eq!(kept.len(), 7 + 3 + 10);
    }

    #[test]
    fn restic_docs_twelve_sundays_keep_daily_4_keeps_the_last_four() {
        // restic's forget documentation: one backup every Sunday for 12
        // weeks, `--keep-daily 4` keeps the last four Sundays.
        let stamps: Vec<String> = (0..12)
            .map(|week| {
                let day = date(2019, 9, 1)
                    .checked_add(jiff::Span::new().weeks(week))
                    .unwrap();
                day.strftime("%Y%m%d_110000").to_string()
            })
            .collect();
        let policy = Policy {
            daily: Some(4),
            ..Policy::default()
        };
        let names: Vec<&str> = kept(&policy, &stamps).iter().map(|(s, _)| *s).collect();
        assert_eq!(
            names,
            [
                "20191027_110000",
                "20191103_110000",
                "20191110_110000",
                "20191117_110000"
            ]
        );
    }

    #[test]
    fn restic_docs_a_century_of_dailies() {
        // restic's forget documentation: a backup every day for 100 years
        // and `--keep-daily 7 --keep-weekly 5 --keep-monthly 12
        // --keep-yearly 75` keep 7 dailies, 4 weeklies more (the dailies
        // include one), 12 or 11 monthlies more (one may be a daily or
        // weekly), and each rule its full count.
        // Ending on a Sunday mid-month: the 7 dailies are one ISO week.
        let end = date(2024, 3, 17);
        let stamps = dailies(
            end.checked_sub(jiff::Span::new().days(36_524)).unwrap(),
            36_525,
        );
        assert_eq!(stamps.last().unwrap(), "20240317_020000");
        let policy = Policy {
            daily: Some(7),
            weekly: Some(5),
            monthly: Some(12),
            yearly: Some(75),
            ..Policy::default()
        };
        let kept = kept(&policy, &stamps);
        let by = |rule: &str| kept.iter().filter(|(_, why)| why.contains(&rule)).count();
        let first = |rule: &str| kept.iter().filter(|(_, why)| why[0] == rule).count();
        assert_eq!(
            [by("daily"), by("weekly"), by("monthly"), by("yearly")],
            [7, 5, 12, 75]
        );
        assert_eq!(first("daily"), 7);
        assert_eq!(first("weekly"), 4);
        assert!(
            (11..=12).contains(&first("monthly")),
            "{}",
            first("monthly")
        );
        // Every kept day is the newest of some period, nothing else.
        assert_eq!(
            kept.len(),
            first("daily") + first("weekly") + first("monthly") + first("yearly")
        );
        assert!(kept.iter().all(|(_, why)| !why.contains(&"oldest")));
    }

    #[test]
    fn several_backups_a_day_count_once_per_day_and_last_counts_each() {
        let stamps: Vec<String> = [
            "20240101_010000",
            "20240101_120000",
            "20240102_010000",
            "20240102_120000",
            "20240103_010000",
            "20240103_120000",
        ]
        .map(String::from)
        .to_vec();
        let both = Policy {
            last: Some(2),
            daily: Some(2),
            ..Policy::default()
        };
        let kept = kept(&both, &stamps);
        assert_eq!(
            kept,
            [
                ("20240102_120000", vec!["daily"]),
                ("20240103_010000", vec!["last"]),
                ("20240103_120000", vec!["last", "daily"]),
            ]
        );
    }

    #[test]
    fn a_rule_with_fewer_periods_than_its_count_keeps_the_oldest_too() {
        // Three months of dailies and `monthly: 12`: the newest of each
        // month, and the very first backup.
        let stamps = dailies(date(2024, 1, 10), 80);
        let policy = Policy {
            monthly: Some(12),
            ..Policy::default()
        };
        let kept = kept(&policy, &stamps);
        assert_eq!(
            kept,
            [
                ("20240110_020000", vec!["oldest"]),
                ("20240131_020000", vec!["monthly"]),
                ("20240229_020000", vec!["monthly"]),
                ("20240329_020000", vec!["monthly"]),
            ]
        );
    }

    #[test]
    fn days_without_a_backup_do_not_use_up_the_count() {
        // Backups on the 1st, 5th and 20th: `daily: 3` keeps all three.
        let stamps: Vec<String> = ["20240101_020000", "20240105_020000", "20240120_020000"]
            .map(String::from)
            .to_vec();
        let policy = Policy {
            daily: Some(3),
            ..Policy::default()
        };
        assert_eq!(kept(&policy, &stamps).len(), 3);
    }

    #[test]
    fn the_first_days_of_january_belong_to_the_last_iso_week() {
        // 2021-01-03 is a Sunday of 2020's week 53.
        assert_eq!(iso_week("20210103_020000"), "2020-W53");
        assert_eq!(iso_week("20210104_020000"), "2021-W01");
        // Weekly across the new year: 2020-12-31 and 2021-01-03 share a week.
        let stamps: Vec<String> = ["20201231_020000", "20210103_020000", "20210104_020000"]
            .map(String::from)
            .to_vec();
        let policy = Policy {
            weekly: Some(2),
            ..Policy::default()
        };
        let names: Vec<&str> = kept(&policy, &stamps).iter().map(|(s, _)| *s).collect();
        assert_eq!(names, ["20210103_020000", "20210104_020000"]);
    }

    #[test]
    fn newest_n_is_last_n_and_order_of_input_does_not_matter() {
        let stamps = ["20240103_020000", "20240101_020000", "20240102_020000"];
        let reasons = Rotation::Newest(2).reasons(&stamps);
        assert_eq!(reasons, vec![vec!["last"], vec![], vec!["last"]]);
    }

    #[test]
    fn the_backup_just_made_is_one_of_the_n_and_the_newest_verified() {
        let stamps = ["20240101_020000", "20240102_020000", "20240103_020000"];
        let all_verified: Vec<(&str, bool)> = stamps.iter().map(|s| (*s, true)).collect();
        let kept = |rotation: &Rotation, listed: &[(&str, bool)], made: usize| -> Vec<usize> {
            rotation
                .kept_after(listed, Some(made))
                .iter()
                .enumerate()
                .filter(|(_, why)| !why.is_empty())
                .map(|(index, _)| index)
                .collect()
        };
        for n in 1..=3u32 {
            let newest = Rotation::Newest(n);
            let last = Rotation::Calendar(Policy {
                last: Some(n),
                ..Policy::default()
            });
            for rotation in [&newest, &last] {
                let expected: Vec<usize> = (3 - n as usize..3).collect();
                assert_eq!(kept(rotation, &all_verified, 2), expected, "{rotation:?}");
            }
        }
        // A clock set back: the backup just made has the oldest stamp, and
        // is still the one `keep: 1` keeps, as the newest verified.
        let reasons = Rotation::Newest(1).kept_after(&all_verified, Some(0));
        assert_eq!(reasons[0], ["last", "newest verified"]);
        assert!(
            reasons[1].is_empty() && reasons[2].is_empty(),
            "{reasons:?}"
        );
        // An unverified backup just made: the newest verified one stays.
        let listed = [
            ("20240101_020000", true),
            ("20240102_020000", true),
            ("20240103_020000", false),
        ];
        assert_eq!(kept(&Rotation::Newest(1), &listed, 2), [1, 2]);
    }

    #[test]
    fn a_policy_that_keeps_nothing_is_refused() {
        assert!(Policy::default().check().is_err());
        assert!(
            Policy {
                monthly: Some(0),
                ..Policy::default()
            }
            .check()
            .is_err()
        );
        assert!(
            Policy {
                monthly: Some(1),
                ..Policy::default()
            }
            .check()
            .is_ok()
        );
    }
}
