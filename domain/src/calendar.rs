//! Business calendars: working hours in a time zone, minus holidays, and the business time
//! between two instants or after one.
//!
//! Working time is computed as a list of open intervals in UTC, built per local date from the
//! weekly hours (an overnight range belongs to the date it starts on) and cut by holidays. Local
//! times that do not exist (the hour skipped when clocks go forward) move to the first instant
//! after the gap; local times that happen twice (clocks going back) open at the first and close
//! at the last, so a range covers every instant the wall clock shows inside it.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone,
    Timelike, Utc, Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::{DomainError, FieldError};

/// One range of working hours on a weekday; `end` at or before `start` runs past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkingRange {
    pub day: Weekday,
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl WorkingRange {
    fn overnight(&self) -> bool {
        self.end <= self.start
    }
}

/// A closed day, or with `start`/`end` the closed part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holiday {
    pub date: NaiveDate,
    pub start: Option<NaiveTime>,
    pub end: Option<NaiveTime>,
}

/// A validated business calendar.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    pub time_zone: Tz,
    pub working_hours: Vec<WorkingRange>,
    pub holidays: Vec<Holiday>,
}

/// How far ahead a due time is looked for: a calendar with working hours reaches any target
/// long before this; the bound keeps a pathological one from looping.
const SEARCH_DAYS: i64 = 3_660;

/// The time zone names `Calendar::parse` accepts: the IANA names compiled in.
pub fn time_zone_names() -> impl Iterator<Item = &'static str> {
    chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())
}

impl Calendar {
    /// Every hour of every day, in UTC.
    pub fn always_open() -> Calendar {
        let midnight = NaiveTime::MIN;
        Calendar {
            time_zone: Tz::UTC,
            working_hours: [
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
                Weekday::Sat,
                Weekday::Sun,
            ]
            .into_iter()
            .map(|day| WorkingRange {
                day,
                start: midnight,
                end: midnight,
            })
            .collect(),
            holidays: Vec::new(),
        }
    }

    /// Checks a calendar as a client wrote it: a known IANA time zone, at least one working
    /// range, ranges of one day that do not overlap (an overnight range counts into the next
    /// day), and partial holidays whose end follows their start.
    pub fn parse(
        time_zone: &str,
        working_hours: Vec<WorkingRange>,
        holidays: Vec<Holiday>,
    ) -> Result<Calendar, DomainError> {
        let mut errors = Vec::new();
        let tz = time_zone.parse::<Tz>().map_err(|_| {
            FieldError::new(
                "time_zone",
                format!("{time_zone:?} is not an IANA time zone"),
            )
        });
        if working_hours.is_empty() {
            errors.push(FieldError::new("working_hours", "needs at least one range"));
        }
        // Each range as minutes of the week, overnight ranges running into the next day.
        let minutes = |day: Weekday, time: NaiveTime| {
            i64::from(day.num_days_from_monday()) * 1440
                + i64::from(time.hour() * 60 + time.minute())
        };
        let mut spans: Vec<(i64, i64, usize)> = Vec::new();
        for (index, range) in working_hours.iter().enumerate() {
            let start = minutes(range.day, range.start);
            let mut end = minutes(range.day, range.end);
            if range.overnight() {
                end += 1440;
            }
            spans.push((start, end, index));
            // A range of Sunday night wraps into Monday of the same week.
            if end > 7 * 1440 {
                spans.push((start - 7 * 1440, end - 7 * 1440, index));
            }
        }
        spans.sort();
        for pair in spans.windows(2) {
            if pair[1].0 < pair[0].1 {
                errors.push(FieldError::new(
                    format!("working_hours[{}]", pair[1].2.max(pair[0].2)),
                    "overlaps another range",
                ));
            }
        }
        for (index, holiday) in holidays.iter().enumerate() {
            match (holiday.start, holiday.end) {
                (Some(start), Some(end)) if end <= start => errors.push(FieldError::new(
                    format!("holidays[{index}].end"),
                    "must be after start",
                )),
                (Some(_), None) | (None, Some(_)) => errors.push(FieldError::new(
                    format!("holidays[{index}]"),
                    "a partial holiday needs both start and end",
                )),
                _ => {}
            }
        }
        match tz {
            Ok(time_zone) if errors.is_empty() => Ok(Calendar {
                time_zone,
                working_hours,
                holidays,
            }),
            Ok(_) => Err(DomainError::Invalid(errors)),
            Err(error) => {
                errors.insert(0, error);
                Err(DomainError::Invalid(errors))
            }
        }
    }

    /// The instant a local wall-clock time stands for: the first after a skipped hour, the
    /// first (`opening`) or last of a repeated one.
    fn instant(&self, local: NaiveDateTime, opening: bool) -> DateTime<Utc> {
        let mut probe = local;
        for _ in 0..48 {
            match self.time_zone.from_local_datetime(&probe) {
                LocalResult::Single(at) => return at.with_timezone(&Utc),
                LocalResult::Ambiguous(first, last) => {
                    return if opening { first } else { last }.with_timezone(&Utc)
                }
                // Inside a gap: the wall clock jumps past it; move to the minute after.
                LocalResult::None => {
                    probe = (probe + Duration::minutes(1))
                        .with_second(0)
                        .unwrap_or(probe + Duration::minutes(1))
                }
            }
        }
        self.time_zone.from_utc_datetime(&local).with_timezone(&Utc)
    }

    /// The working intervals that begin on local date `date`, minus holidays, in UTC.
    fn open_on(&self, date: NaiveDate) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let mut open: Vec<(DateTime<Utc>, DateTime<Utc>)> = self
            .working_hours
            .iter()
            .filter(|range| range.day == date.weekday())
            .map(|range| {
                let end_date = if range.overnight() {
                    date.succ_opt().unwrap_or(date)
                } else {
                    date
                };
                (
                    self.instant(date.and_time(range.start), true),
                    self.instant(end_date.and_time(range.end), false),
                )
            })
            .filter(|(start, end)| start < end)
            .collect();
        for holiday in &self.holidays {
            // A holiday can close the tail of yesterday's overnight range too.
            if (holiday.date - date).num_days().abs() > 1 {
                continue;
            }
            let closed = self.closed_by(holiday);
            open = open
                .into_iter()
                .flat_map(|interval| subtract(interval, closed))
                .collect();
        }
        open.sort();
        open
    }

    fn closed_by(&self, holiday: &Holiday) -> (DateTime<Utc>, DateTime<Utc>) {
        let (start, end) = match (holiday.start, holiday.end) {
            (Some(start), Some(end)) => (holiday.date.and_time(start), holiday.date.and_time(end)),
            _ => (
                holiday.date.and_time(NaiveTime::MIN),
                holiday
                    .date
                    .succ_opt()
                    .unwrap_or(holiday.date)
                    .and_time(NaiveTime::MIN),
            ),
        };
        (self.instant(start, true), self.instant(end, false))
    }

    fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.time_zone).date_naive()
    }

    /// Business seconds in `[from, to)`.
    pub fn business_seconds(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        if to <= from {
            return 0;
        }
        let mut total = 0;
        // Yesterday's overnight range may still be open at `from`.
        let mut date = self
            .local_date(from)
            .pred_opt()
            .unwrap_or(self.local_date(from));
        let last = self.local_date(to);
        while date <= last {
            for (start, end) in self.open_on(date) {
                let (start, end) = (start.max(from), end.min(to));
                if start < end {
                    total += (end - start).num_seconds();
                }
            }
            date = match date.succ_opt() {
                Some(next) => next,
                None => break,
            };
        }
        total
    }

    /// The instant at which `seconds` of business time after `from` have passed; `None` when
    /// the calendar has no working time within ten years.
    pub fn add_business_seconds(&self, from: DateTime<Utc>, seconds: i64) -> Option<DateTime<Utc>> {
        let mut left = seconds.max(0);
        let mut date = self.local_date(from).pred_opt()?;
        for _ in 0..SEARCH_DAYS {
            for (start, end) in self.open_on(date) {
                let start = start.max(from);
                if start >= end {
                    continue;
                }
                let available = (end - start).num_seconds();
                if left <= available {
                    return Some(start + Duration::seconds(left));
                }
                left -= available;
            }
            date = date.succ_opt()?;
        }
        None
    }
}

/// `interval` without `closed`: none, one or two pieces.
fn subtract(
    interval: (DateTime<Utc>, DateTime<Utc>),
    closed: (DateTime<Utc>, DateTime<Utc>),
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let (start, end) = interval;
    let (cut_start, cut_end) = closed;
    if cut_end <= start || cut_start >= end {
        return vec![interval];
    }
    let mut pieces = Vec::new();
    if cut_start > start {
        pieces.push((start, cut_start));
    }
    if cut_end < end {
        pieces.push((cut_end, end));
    }
    pieces
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn at(tz: Tz, text: &str) -> DateTime<Utc> {
        let local = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").expect("a local time");
        tz.from_local_datetime(&local)
            .earliest()
            .expect("an existing local time")
            .with_timezone(&Utc)
    }

    fn time(text: &str) -> NaiveTime {
        NaiveTime::parse_from_str(text, "%H:%M").expect("a time")
    }

    pub(crate) fn weekdays(start: &str, end: &str) -> Vec<WorkingRange> {
        [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
        ]
        .into_iter()
        .map(|day| WorkingRange {
            day,
            start: time(start),
            end: time(end),
        })
        .collect()
    }

    pub(crate) fn berlin_office() -> Calendar {
        Calendar::parse("Europe/Berlin", weekdays("09:00", "17:00"), Vec::new()).unwrap()
    }

    const HOUR: i64 = 3600;

    #[test]
    fn weekends_are_closed() {
        let cal = berlin_office();
        let tz = cal.time_zone;
        // 2026-11-27 is a Friday.
        let friday_four = at(tz, "2026-11-27 16:00");
        let monday_ten = at(tz, "2026-11-30 10:00");
        assert_eq!(cal.business_seconds(friday_four, monday_ten), 2 * HOUR);
        assert_eq!(
            cal.add_business_seconds(friday_four, 8 * HOUR),
            Some(at(tz, "2026-11-30 16:00"))
        );
        // Exactly at the end of a day: the target is met at 17:00, not next morning.
        assert_eq!(
            cal.add_business_seconds(friday_four, HOUR),
            Some(at(tz, "2026-11-27 17:00"))
        );
    }

    #[test]
    fn holidays_close_whole_or_part_of_a_day() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let date = NaiveDate::from_ymd_opt(2026, 12, 24).unwrap();
        let cal = Calendar::parse(
            "Europe/Berlin",
            weekdays("09:00", "17:00"),
            vec![
                Holiday {
                    date,
                    start: Some(time("12:00")),
                    end: Some(time("17:00")),
                },
                Holiday {
                    date: date.succ_opt().unwrap(),
                    start: None,
                    end: None,
                },
            ],
        )
        .unwrap();
        // Thursday 24th: 09-12 only; Friday 25th closed; Monday 28th open.
        let from = at(tz, "2026-12-24 09:00");
        assert_eq!(
            cal.business_seconds(from, at(tz, "2026-12-28 10:00")),
            4 * HOUR
        );
        assert_eq!(
            cal.add_business_seconds(from, 4 * HOUR),
            Some(at(tz, "2026-12-28 10:00"))
        );
    }

    #[test]
    fn overnight_ranges_run_past_midnight_and_wrap_the_week() {
        let cal = Calendar::parse(
            "UTC",
            vec![WorkingRange {
                day: Weekday::Sun,
                start: time("22:00"),
                end: time("06:00"),
            }],
            Vec::new(),
        )
        .unwrap();
        let tz = cal.time_zone;
        // Sunday 2026-11-29 22:00 to Monday 06:00.
        assert_eq!(
            cal.business_seconds(at(tz, "2026-11-29 00:00"), at(tz, "2026-12-01 00:00")),
            8 * HOUR
        );
        assert_eq!(
            cal.business_seconds(at(tz, "2026-11-30 01:00"), at(tz, "2026-11-30 12:00")),
            5 * HOUR
        );
        assert_eq!(
            cal.add_business_seconds(at(tz, "2026-11-30 05:00"), 2 * HOUR),
            Some(at(tz, "2026-12-06 23:00"))
        );
    }

    #[test]
    fn daylight_saving_changes_in_both_directions() {
        // A night shift 00:00-06:00 in Berlin: 5 real hours on 2026-03-29 (clocks skip 02-03),
        // 7 on 2026-10-25 (02-03 happens twice).
        let every_day = [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ]
        .into_iter()
        .map(|day| WorkingRange {
            day,
            start: time("00:00"),
            end: time("06:00"),
        })
        .collect();
        let cal = Calendar::parse("Europe/Berlin", every_day, Vec::new()).unwrap();
        let tz = cal.time_zone;
        let night = |date: &str| {
            cal.business_seconds(
                at(tz, &format!("{date} 00:00")),
                at(tz, &format!("{date} 12:00")),
            )
        };
        assert_eq!(night("2026-03-29"), 5 * HOUR);
        assert_eq!(night("2026-10-25"), 7 * HOUR);
        assert_eq!(night("2026-10-26"), 6 * HOUR);
        // A range starting inside the skipped hour starts when the clock resumes.
        let gap = Calendar::parse(
            "Europe/Berlin",
            vec![WorkingRange {
                day: Weekday::Sun,
                start: time("02:30"),
                end: time("04:00"),
            }],
            Vec::new(),
        )
        .unwrap();
        assert_eq!(
            gap.business_seconds(at(tz, "2026-03-29 00:00"), at(tz, "2026-03-29 12:00")),
            HOUR
        );
    }

    #[test]
    fn bad_calendars_name_the_field() {
        let Err(DomainError::Invalid(errors)) =
            Calendar::parse("Mars/Olympus", Vec::new(), Vec::new())
        else {
            panic!("accepted")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["time_zone", "working_hours"]);
        let mut overlapping = weekdays("09:00", "17:00");
        overlapping.push(WorkingRange {
            day: Weekday::Mon,
            start: time("16:00"),
            end: time("18:00"),
        });
        assert!(Calendar::parse("UTC", overlapping, Vec::new()).is_err());
        // Sunday night into Monday morning overlaps Monday's own early range.
        let wrapping = vec![
            WorkingRange {
                day: Weekday::Sun,
                start: time("22:00"),
                end: time("06:00"),
            },
            WorkingRange {
                day: Weekday::Mon,
                start: time("05:00"),
                end: time("09:00"),
            },
        ];
        assert!(Calendar::parse("UTC", wrapping, Vec::new()).is_err());
        let bad_holiday = vec![Holiday {
            date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            start: Some(time("12:00")),
            end: Some(time("09:00")),
        }];
        assert!(Calendar::parse("UTC", weekdays("09:00", "17:00"), bad_holiday).is_err());
    }

    #[test]
    fn always_open_counts_wall_time() {
        let cal = Calendar::always_open();
        let from = at(Tz::UTC, "2026-11-27 16:00");
        assert_eq!(
            cal.business_seconds(from, at(Tz::UTC, "2026-11-30 16:00")),
            72 * HOUR
        );
        assert_eq!(
            cal.add_business_seconds(from, 72 * HOUR),
            Some(at(Tz::UTC, "2026-11-30 16:00"))
        );
    }
}
