//! Which backups rotation keeps: the newest N, or a calendar policy.
//!
//! The calendar policy follows restic's `forget`: going from the newest
//! backup to the oldest, each rule keeps a backup when it is the newest of
//! a day (week, month, year) that rule has not kept one for yet, until the
//! rule has kept its count; `last` keeps the N newest. A backup is kept
//! when any rule keeps it, and the rules that did are its reasons. When a
//! calendar rule finds fewer periods than its count, the oldest backup is
//! kept too, as restic does since 0.16.0 (it names that reason "oldest"
//! since 0.18.0, and so do we). Hours, days, ISO weeks (Monday to Sunday),
//! months and years are those of the backups' UTC stamps.
//!
//! `within: 2y5m7d3h` (restic's `--keep-within`) keeps every backup newer
//! than that long before the newest one not in the future: years and
//! months counted on the calendar as Go's `AddDate` does (a day past the
//! month's end runs into the next month), then days, then hours.

use serde::{Deserialize, Serialize};

/// `retention:`: how many of each to keep. A missing rule keeps none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    pub within: Option<Within>,
}

/// `within:`, restic's duration: `6y5m234d37h`, each unit at most once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Within {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl TryFrom<String> for Within {
    type Error = String;

    fn try_from(text: String) -> Result<Within, String> {
        let bad = |why: &str| {
            format!(
                "`within: {text}` {why}: write a duration as restic does, a number and a unit each, \
                 y (years), m (months), d (days), h (hours), e.g. `7d` or `1y6m`"
            )
        };
        let mut within = Within::default();
        let mut seen = String::new();
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(bad("is empty"));
        }
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad("needs a number before each unit"));
            }
            let number: u32 = rest[..digits]
                .parse()
                .map_err(|_| bad("has a number too large"))?;
            let Some(unit) = rest[digits..].chars().next() else {
                return Err(bad("ends without a unit"));
            };
            let slot = match unit {
                'y' => &mut within.years,
                'm' => &mut within.months,
                'd' => &mut within.days,
                'h' => &mut within.hours,
                _ => return Err(bad(&format!("has an unknown unit `{unit}`"))),
            };
            if seen.contains(unit) {
                return Err(bad(&format!("gives `{unit}` twice")));
            }
            seen.push(unit);
            *slot = number;
            rest = &rest[digits + unit.len_utf8()..];
        }
        if within == Within::default() {
            return Err(bad("is zero"));
        }
        Ok(within)
    }
}

impl From<Within> for String {
    fn from(within: Within) -> String {
        within.to_string()
    }
}

impl std::fmt::Display for Within {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (count, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if count > 0 {
                write!(f, "{count}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Within {
    /// The moment `self` before `newest`, as restic computes it (Go's
    /// `AddDate(-y, -m, -d)`, then `Add(-h hours)`).
    fn before(self, newest: jiff::civil::DateTime) -> Option<jiff::civil::DateTime> {
        let months = i64::from(newest.year()) * 12 + i64::from(newest.month())
            - 1
            - i64::from(self.years) * 12
            - i64::from(self.months);
        let first = jiff::civil::Date::new(
            i16::try_from(months.div_euclid(12)).ok()?,
            i8::try_from(months.rem_euclid(12) + 1).ok()?,
            1,
        )
        .ok()?;
        let days = i64::from(newest.day()) - 1 - i64::from(self.days);
        first
            .checked_add(jiff::Span::new().days(days))
            .ok()?
            .to_datetime(newest.time())
            .checked_sub(jiff::Span::new().hours(i64::from(self.hours)))
            .ok()
    }
}

/// A stamp `YYYYMMDD_HHMMSS` as a UTC date and time.
fn stamp_time(stamp: &str) -> Option<jiff::civil::DateTime> {
    jiff::civil::DateTime::strptime("%Y%m%d_%H%M%S", stamp).ok()
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
    fn rules(&self) -> [Rule; 6] {
        [
            ("last", self.last, |stamp| stamp.to_string()),
            ("hourly", self.hourly, |stamp| {
                stamp.get(..11).unwrap_or(stamp).to_string()
            }),
            ("daily", self.daily, |stamp| stamp[..8].to_string()),
            ("weekly", self.weekly, iso_week),
            ("monthly", self.monthly, |stamp| stamp[..6].to_string()),
            ("yearly", self.yearly, |stamp| stamp[..4].to_string()),
        ]
    }

    /// Refuses a policy that keeps nothing: rotation would then rest on
    /// the newest-verified guard alone.
    pub fn check(&self) -> Result<(), String> {
        if self.within.is_none()
            && self
                .rules()
                .iter()
                .all(|(_, count, _)| count.unwrap_or(0) == 0)
        {
            return Err(
                "retention keeps nothing: give at least one of last, hourly, daily, weekly, monthly, yearly a count \
                 of 1 or more, or `within` a duration"
                    .to_string(),
            );
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .rules()
            .iter()
            .filter_map(|(name, count, _)| count.filter(|n| *n > 0).map(|n| format!("{n} {name}")))
            .collect();
        if let Some(within) = self.within {
            parts.push(format!("all within {within} of the newest"));
        }
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
        if let Some(within) = self.within {
            // The newest not in the future, as restic finds it.
            let now = jiff::Timestamp::now()
                .to_zoned(jiff::tz::TimeZone::UTC)
                .datetime();
            let times: Vec<Option<jiff::civil::DateTime>> =
                stamps.iter().map(|stamp| stamp_time(stamp)).collect();
            let newest = times.iter().flatten().filter(|time| **time < now).max();
            if let Some(newest) = newest {
                // Before the calendar's start: everything is within.
                let cutoff = within.before(*newest);
                for (index, time) in times.iter().enumerate() {
                    if time.is_some_and(|time| cutoff.is_none_or(|cutoff| time > cutoff)) {
                        reasons[index].push("within");
                    }
                }
            }
        }
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

    fn within(text: &str) -> Result<Within, String> {
        Within::try_from(text.to_string())
    }

    #[test]
    fn hourly_keeps_the_newest_of_each_hour() {
        // Every 20 minutes from 10:00 to 14:40.
        let stamps: Vec<String> = (10..15)
            .flat_map(|hour| {
                (0..3).map(move |third| format!("20240105_{hour:02}{:02}00", third * 20))
            })
            .collect();
        let policy = Policy {
            hourly: Some(3),
            ..Policy::default()
        };
        let kept: Vec<&str> = kept(&policy, &stamps)
            .into_iter()
            .filter(|(_, why)| why.contains(&"hourly"))
            .map(|(stamp, _)| stamp)
            .collect();
        assert_eq!(
            kept,
            ["20240105_124000", "20240105_134000", "20240105_144000"]
        );
        assert_eq!(policy.describe(), "by calendar (3 hourly)");
    }

    #[test]
    fn within_is_read_as_restic_reads_it_and_bad_ones_are_refused() {
        assert_eq!(
            within("2y5m7d3h"),
            Ok(Within {
                years: 2,
                months: 5,
                days: 7,
                hours: 3
            })
        );
        assert_eq!(
            within("3h1y").map(|w| w.to_string()),
            Ok("1y3h".to_string())
        );
        for bad in [
            "",
            " ",
            "7",
            "d",
            "7x",
            "1d1d",
            "0d",
            "-1d",
            "1.5d",
            "99999999999d",
            "7 d",
        ] {
            let error = within(bad).unwrap_err();
            assert!(error.contains("e.g. `7d`"), "{bad}: {error}");
        }
        let policy: Policy = serde_json::from_str(r#"{"within": "7d"}"#).unwrap();
        assert_eq!(policy.check(), Ok(()));
        assert_eq!(
            policy.describe(),
            "by calendar (all within 7d of the newest)"
        );
    }

    #[test]
    fn within_keeps_what_is_newer_than_that_long_before_the_newest() {
        let stamps = dailies(date(2024, 1, 1), 30);
        let policy = Policy {
            within: Some(within("7d").unwrap()),
            ..Policy::default()
        };
        let kept = kept(&policy, &stamps);
        // Strictly after 7 days before the newest: the newest and the six
        // days before it; the one exactly 7 days before is not kept.
        assert_eq!(kept.len(), 7, "{kept:?}");
        assert_eq!(kept[0].0, "20240124_020000");
        assert!(kept.iter().all(|(_, why)| why == &["within"]));
    }

    #[test]
    fn within_counts_months_as_go_does() {
        // 2024-03-31 less one month is "February 31st": March 2nd (2024 is
        // a leap year), as Go's AddDate makes it.
        let stamps: Vec<String> = [
            "20240301_120000",
            "20240302_120000",
            "20240302_120001",
            "20240331_120000",
        ]
        .map(String::from)
        .to_vec();
        let policy = Policy {
            within: Some(within("1m").unwrap()),
            ..Policy::default()
        };
        let kept: Vec<&str> = kept(&policy, &stamps)
            .into_iter()
            .map(|(stamp, _)| stamp)
            .collect();
        assert_eq!(kept, ["20240302_120001", "20240331_120000"]);
        // Hours come after the calendar: 1d2h before 2024-03-01 00:30 is
        // 2024-02-28 22:30.
        let newest = jiff::civil::date(2024, 3, 1).at(0, 30, 0, 0);
        assert_eq!(
            within("1d2h").unwrap().before(newest),
            Some(jiff::civil::date(2024, 2, 28).at(22, 30, 0, 0))
        );
    }

    #[test]
    fn within_measures_from_the_newest_backup_not_in_the_future() {
        let stamps: Vec<String> = ["20240101_000000", "20240105_000000", "29990101_000000"]
            .map(String::from)
            .to_vec();
        let policy = Policy {
            within: Some(within("2d").unwrap()),
            ..Policy::default()
        };
        let kept: Vec<&str> = kept(&policy, &stamps)
            .into_iter()
            .map(|(stamp, _)| stamp)
            .collect();
        // From 2024-01-05, not from 2999: the one of the future is newer
        // than the cutoff and kept too.
        assert_eq!(kept, ["20240105_000000", "29990101_000000"]);
        // Longer than the calendar goes back: everything.
        let policy = Policy {
            within: Some(within("4000000000y").unwrap()),
            ..Policy::default()
        };
        assert_eq!(super::tests::kept(&policy, &stamps).len(), 3);
    }
}
