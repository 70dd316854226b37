//! The SLA clock: given a business calendar, a target and a timer's timeline (start, pauses,
//! resumes, retargets, stop), how much business time has run, how long it was paused, when it
//! is due, and whether it warned or breached, each at its exact instant.
//!
//! Time is split three ways and always adds up: business time while running (`elapsed`), any
//! time while paused (`paused`), and time while running outside working hours (`outside`).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::calendar::Calendar;
use crate::enums::string_enum;

string_enum!(
    /// What a timer measures: until the first response, or until resolution.
    SlaMetric { Response => "response", Resolution => "resolution" }
);

string_enum!(
    TimerState {
        Running => "running",
        Paused => "paused",
        Achieved => "achieved",
        Breached => "breached",
        Canceled => "canceled",
    }
);

/// One change in a timer's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClockEvent {
    Start,
    Pause,
    Resume,
    /// The target became `target_seconds` (a policy or priority change); the time already run
    /// and paused is kept and counts against the new target.
    Retarget {
        target_seconds: i64,
    },
    /// The goal was met (first response given, ticket resolved).
    Stop,
    /// The timer no longer applies (ticket canceled, policy no longer matching).
    Cancel,
}

/// A clock event at its instant. Entries are applied in the order given, so two in the same
/// second keep their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub event: ClockEvent,
}

/// A timer read at some instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub state: TimerState,
    pub started_at: DateTime<Utc>,
    pub target_seconds: i64,
    pub elapsed_seconds: i64,
    pub paused_seconds: i64,
    pub outside_seconds: i64,
    /// `target - elapsed`; negative once breached.
    pub remaining_seconds: i64,
    /// When the target is (or was) reached while running; `None` while paused or after a stop
    /// or cancel before it.
    pub due_at: Option<DateTime<Utc>>,
    /// When the elapsed time crossed the warning threshold.
    pub warned_at: Option<DateTime<Utc>>,
    /// When the elapsed time crossed the target.
    pub breached_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
}

/// The share of the target at which a timer warns.
fn warning_seconds(target: i64, warning_percent: u8) -> i64 {
    target * i64::from(warning_percent.min(100)) / 100
}

/// Reads a timer at `now` from its timeline; entries after `now` are not seen yet. The first
/// entry must be the start.
pub fn read_clock(
    calendar: &Calendar,
    initial_target_seconds: i64,
    warning_percent: u8,
    timeline: &[TimelineEntry],
    now: DateTime<Utc>,
) -> Option<Reading> {
    let first = timeline.first()?;
    if first.event != ClockEvent::Start {
        return None;
    }
    let mut reading = Reading {
        state: TimerState::Running,
        started_at: first.at,
        target_seconds: initial_target_seconds,
        elapsed_seconds: 0,
        paused_seconds: 0,
        outside_seconds: 0,
        remaining_seconds: initial_target_seconds,
        due_at: None,
        warned_at: None,
        breached_at: None,
        stopped_at: None,
    };
    let mut position = first.at;
    let mut running = true;
    let mut ended = false;
    for entry in timeline[1..].iter().filter(|entry| entry.at <= now) {
        let at = entry.at.max(position);
        advance(
            calendar,
            warning_percent,
            &mut reading,
            running,
            position,
            at,
        );
        position = at;
        match entry.event {
            ClockEvent::Start => {}
            ClockEvent::Pause => running = false,
            ClockEvent::Resume => running = true,
            ClockEvent::Retarget { target_seconds } => {
                reading.target_seconds = target_seconds;
                // A lower target already run past is crossed at the retarget itself.
                let warning = warning_seconds(target_seconds, warning_percent);
                if reading.elapsed_seconds >= warning && reading.warned_at.is_none() {
                    reading.warned_at = Some(at);
                }
                if reading.elapsed_seconds >= target_seconds && reading.breached_at.is_none() {
                    reading.breached_at = Some(at);
                }
            }
            ClockEvent::Stop | ClockEvent::Cancel => {
                reading.stopped_at = Some(at);
                reading.state = match entry.event {
                    ClockEvent::Cancel => TimerState::Canceled,
                    _ if reading.breached_at.is_some() => TimerState::Breached,
                    _ => TimerState::Achieved,
                };
                ended = true;
                break;
            }
        }
    }
    if !ended {
        let until = now.max(position);
        advance(
            calendar,
            warning_percent,
            &mut reading,
            running,
            position,
            until,
        );
        position = until;
        reading.state = match (reading.breached_at, running) {
            (Some(_), _) => TimerState::Breached,
            (None, true) => TimerState::Running,
            (None, false) => TimerState::Paused,
        };
    }
    reading.remaining_seconds = reading.target_seconds - reading.elapsed_seconds;
    reading.due_at = match (reading.breached_at, running && !ended) {
        (Some(at), _) => Some(at),
        (None, true) => calendar.add_business_seconds(position, reading.remaining_seconds),
        (None, false) => None,
    };
    Some(reading)
}

/// Runs the clock over `[from, to)`: business time counts while running, wall time while
/// paused; the instants the warning and the target are crossed are found exactly.
fn advance(
    calendar: &Calendar,
    warning_percent: u8,
    reading: &mut Reading,
    running: bool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) {
    let wall = (to - from).num_seconds().max(0);
    if !running {
        reading.paused_seconds += wall;
        return;
    }
    let business = calendar.business_seconds(from, to);
    let before = reading.elapsed_seconds;
    let after = before + business;
    let crossed = |threshold: i64| {
        (before < threshold && threshold <= after)
            .then(|| calendar.add_business_seconds(from, threshold - before))
            .flatten()
    };
    if reading.warned_at.is_none() {
        reading.warned_at = crossed(warning_seconds(reading.target_seconds, warning_percent));
    }
    if reading.breached_at.is_none() {
        reading.breached_at = crossed(reading.target_seconds);
    }
    reading.elapsed_seconds = after;
    reading.outside_seconds += wall - business;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::tests::{at, berlin_office};

    const HOUR: i64 = 3600;

    fn entry(at: DateTime<Utc>, event: ClockEvent) -> TimelineEntry {
        TimelineEntry { at, event }
    }

    fn assert_adds_up(reading: &Reading, end: DateTime<Utc>) {
        assert_eq!(
            reading.elapsed_seconds + reading.paused_seconds + reading.outside_seconds,
            (end - reading.started_at).num_seconds(),
            "{reading:?}"
        );
    }

    /// The case: reported Friday 16:00 in Berlin, 9-17, 8 business hours; on hold
    /// Friday 16:30, resumed Monday 10:00, resolved Monday 15:00.
    #[test]
    fn a_pause_over_the_weekend() {
        let cal = berlin_office();
        let tz = cal.time_zone;
        let timeline = [
            entry(at(tz, "2026-11-27 16:00"), ClockEvent::Start),
            entry(at(tz, "2026-11-27 16:30"), ClockEvent::Pause),
            entry(at(tz, "2026-11-30 10:00"), ClockEvent::Resume),
            entry(at(tz, "2026-11-30 15:00"), ClockEvent::Stop),
        ];
        // Read while paused: no due time, half an hour run.
        let paused = read_clock(&cal, 8 * HOUR, 75, &timeline, at(tz, "2026-11-28 12:00")).unwrap();
        assert_eq!(paused.state, TimerState::Paused);
        assert_eq!((paused.elapsed_seconds, paused.due_at), (HOUR / 2, None));
        // Read after the resume: due Tuesday 09:30.
        let resumed =
            read_clock(&cal, 8 * HOUR, 75, &timeline, at(tz, "2026-11-30 11:00")).unwrap();
        assert_eq!(resumed.due_at, Some(at(tz, "2026-12-01 09:30")));
        assert_eq!(resumed.remaining_seconds, 8 * HOUR - 3 * HOUR / 2);
        // At the end: achieved with 5.5 hours run and the weekend paused.
        let done = read_clock(&cal, 8 * HOUR, 75, &timeline, at(tz, "2026-12-02 00:00")).unwrap();
        assert_eq!(done.state, TimerState::Achieved);
        assert_eq!(done.elapsed_seconds, 11 * HOUR / 2);
        assert_eq!(done.paused_seconds, 65 * HOUR + HOUR / 2);
        assert_eq!(done.warned_at, None);
        assert_eq!(done.stopped_at, Some(at(tz, "2026-11-30 15:00")));
        assert_adds_up(&done, at(tz, "2026-11-30 15:00"));
    }

    #[test]
    fn warning_and_breach_at_their_exact_instants() {
        let cal = berlin_office();
        let tz = cal.time_zone;
        let timeline = [entry(at(tz, "2026-11-27 09:00"), ClockEvent::Start)];
        let reading =
            read_clock(&cal, 10 * HOUR, 80, &timeline, at(tz, "2026-12-01 12:00")).unwrap();
        assert_eq!(reading.state, TimerState::Breached);
        // 8 hours Friday, then Monday 09:00 + 0 (80% of 10 h = 8 h reached at Friday 17:00).
        assert_eq!(reading.warned_at, Some(at(tz, "2026-11-27 17:00")));
        assert_eq!(reading.breached_at, Some(at(tz, "2026-11-30 11:00")));
        assert_eq!(reading.due_at, reading.breached_at);
        assert_eq!(reading.remaining_seconds, 10 * HOUR - 19 * HOUR);
        assert_adds_up(&reading, at(tz, "2026-12-01 12:00"));
        // A stop after the breach stays breached.
        let late = [
            timeline[0],
            entry(at(tz, "2026-11-30 12:00"), ClockEvent::Stop),
        ];
        let stopped = read_clock(&cal, 10 * HOUR, 80, &late, at(tz, "2026-12-05 00:00")).unwrap();
        assert_eq!(stopped.state, TimerState::Breached);
    }

    #[test]
    fn a_retarget_keeps_the_time_already_run() {
        let cal = berlin_office();
        let tz = cal.time_zone;
        let timeline = [
            entry(at(tz, "2026-11-30 09:00"), ClockEvent::Start),
            entry(
                at(tz, "2026-11-30 12:00"),
                ClockEvent::Retarget {
                    target_seconds: 4 * HOUR,
                },
            ),
        ];
        let reading =
            read_clock(&cal, 16 * HOUR, 50, &timeline, at(tz, "2026-11-30 12:30")).unwrap();
        assert_eq!(reading.elapsed_seconds, 7 * HOUR / 2);
        assert_eq!(reading.due_at, Some(at(tz, "2026-11-30 13:00")));
        // 50% of the new target (2 h) was already run: warned at the retarget.
        assert_eq!(reading.warned_at, Some(at(tz, "2026-11-30 12:00")));
        // Lowered below the time already run: breached at the retarget itself.
        let lowered = [
            timeline[0],
            entry(
                at(tz, "2026-11-30 12:00"),
                ClockEvent::Retarget {
                    target_seconds: 2 * HOUR,
                },
            ),
        ];
        let reading =
            read_clock(&cal, 16 * HOUR, 50, &lowered, at(tz, "2026-11-30 12:30")).unwrap();
        assert_eq!(reading.breached_at, Some(at(tz, "2026-11-30 12:00")));
        assert_eq!(reading.state, TimerState::Breached);
    }

    #[test]
    fn events_in_the_same_second_keep_their_order() {
        let cal = berlin_office();
        let tz = cal.time_zone;
        let t = at(tz, "2026-11-30 10:00");
        let timeline = [
            entry(at(tz, "2026-11-30 09:00"), ClockEvent::Start),
            entry(t, ClockEvent::Pause),
            entry(t, ClockEvent::Resume),
            entry(t, ClockEvent::Pause),
        ];
        let reading =
            read_clock(&cal, 8 * HOUR, 75, &timeline, at(tz, "2026-11-30 11:00")).unwrap();
        assert_eq!(reading.state, TimerState::Paused);
        assert_eq!(
            (reading.elapsed_seconds, reading.paused_seconds),
            (HOUR, HOUR)
        );
    }

    #[test]
    fn a_pause_across_closed_hours_counts_as_paused_only() {
        let cal = berlin_office();
        let tz = cal.time_zone;
        let timeline = [
            entry(at(tz, "2026-11-30 16:00"), ClockEvent::Start),
            entry(at(tz, "2026-11-30 16:30"), ClockEvent::Pause),
            entry(at(tz, "2026-12-01 08:00"), ClockEvent::Resume),
        ];
        let now = at(tz, "2026-12-01 10:00");
        let reading = read_clock(&cal, 8 * HOUR, 75, &timeline, now).unwrap();
        assert_eq!(reading.elapsed_seconds, HOUR / 2 + HOUR);
        assert_eq!(reading.paused_seconds, 15 * HOUR + HOUR / 2);
        assert_eq!(reading.outside_seconds, HOUR);
        assert_adds_up(&reading, now);
        let canceled = [
            timeline[0],
            entry(at(tz, "2026-11-30 16:10"), ClockEvent::Cancel),
        ];
        let reading = read_clock(&cal, 8 * HOUR, 75, &canceled, now).unwrap();
        assert_eq!(
            (reading.state, reading.due_at),
            (TimerState::Canceled, None)
        );
    }

    /// Over random timelines, elapsed + paused + outside hours is the wall time, and the
    /// elapsed time never exceeds the business time of the whole span.
    #[test]
    fn the_three_parts_always_add_up_to_the_wall_time() {
        let cal = berlin_office();
        let tz = cal.time_zone;
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |bound: i64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound as u64) as i64
        };
        for _ in 0..300 {
            let start = at(tz, "2026-03-20 00:00") + chrono::Duration::seconds(next(40 * 86_400));
            let mut timeline = vec![entry(start, ClockEvent::Start)];
            let mut t = start;
            for _ in 0..next(12) {
                t += chrono::Duration::seconds(next(3 * 86_400));
                let event = match next(5) {
                    0 => ClockEvent::Pause,
                    1 => ClockEvent::Resume,
                    2 => ClockEvent::Retarget {
                        target_seconds: next(40) * HOUR,
                    },
                    _ => ClockEvent::Pause,
                };
                timeline.push(entry(t, event));
            }
            let now = t + chrono::Duration::seconds(next(5 * 86_400));
            let reading = read_clock(&cal, 8 * HOUR, 75, &timeline, now).unwrap();
            assert_adds_up(&reading, now);
            assert!(reading.elapsed_seconds <= cal.business_seconds(start, now));
        }
    }
}
