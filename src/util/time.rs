//! Wall-clock time as deltalink records and shows it (epoch milliseconds, RFC 3339 UTC), and
//! instants as operators type them.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Milliseconds since the epoch, as the tracker and the lease record them.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// An epoch-milliseconds instant as RFC 3339 UTC to the second; `None` when out of range.
pub fn format_ms(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// RFC 3339, or a date with an optional time, read as UTC (operators think in log timestamps).
/// The CLI's `--to-datetime` and the console's reset form both read instants with it.
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("`{s}` is not a date-time (try 2025-01-31 12:00)"))
}

/// A duration as people write it: a number and a unit — `500ms`, `90s`, `15m`, `2h`, `26h`,
/// `7d`, `1w`, also with long names (`7 days`, `36 hours`). The config's lag objectives,
/// `watch --interval` and Delta's interval properties all read durations with it.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("`{s}` is not a duration (try 90s, 15m, 2h or 7d)"))?;
    let secs_per = match unit.trim() {
        "" => return Err(format!("`{s}` has no unit (try 90s, 15m, 2h or 7d)")),
        "ms" => 0.001,
        "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hour" | "hours" => 3_600.0,
        "d" | "day" | "days" => 86_400.0,
        "w" | "week" | "weeks" => 604_800.0,
        other => return Err(format!("`{s}`: unknown unit `{other}` (use ms, s, m, h, d or w)")),
    };
    std::time::Duration::try_from_secs_f64(n * secs_per).map_err(|_| format!("`{s}` is out of range"))
}

/// A number of seconds for people: `45s`, `12m`, `3h 05m`, `2d 04h` (two units at most).
pub fn human_seconds(secs: f64) -> String {
    // Floored: a countdown never shows more time than is left.
    let s = secs.max(0.0).floor() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m", s / 60),
        3_600..86_400 => format!("{}h {:02}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3_600),
    }
}

#[cfg(test)]
mod duration_tests {
    use super::*;

    #[test]
    fn durations_read_as_written_and_print_for_people() {
        assert_eq!(parse_duration("90s"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(parse_duration("26h"), Ok(std::time::Duration::from_secs(26 * 3600)));
        assert_eq!(parse_duration(" 7d "), Ok(std::time::Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("2").unwrap_err().contains("no unit"));
        assert!(parse_duration("h").unwrap_err().contains("not a duration"));
        assert_eq!(parse_duration("500ms"), Ok(std::time::Duration::from_millis(500)));
        assert!(parse_duration("2 fortnights").unwrap_err().contains("unknown unit `fortnights`"));
        assert_eq!(human_seconds(59.4), "59s");
        assert_eq!(human_seconds(3_600.0 * 3.0 + 300.0), "3h 05m");
        assert_eq!(human_seconds(86_400.0 * 8.0 + 3_600.0), "8d 01h");
    }

    #[test]
    fn instants_read_as_rfc3339_or_as_a_plain_date_and_time_in_utc() {
        let at = |s: &str| parse_instant(s).map(|t| t.to_rfc3339());
        assert_eq!(at("2025-01-31T12:00:00+02:00"), Ok("2025-01-31T10:00:00+00:00".into()), "an offset is honoured");
        assert_eq!(at("2025-01-31T12:00:00Z"), Ok("2025-01-31T12:00:00+00:00".into()));
        assert_eq!(at("2025-01-31 12:00"), Ok("2025-01-31T12:00:00+00:00".into()), "no zone: UTC, as the log's timestamps");
        assert_eq!(at("2025-01-31 12:00:07"), Ok("2025-01-31T12:00:07+00:00".into()));
        assert_eq!(at("2025-01-31T12:00"), Ok("2025-01-31T12:00:00+00:00".into()));
        assert_eq!(at("2025-01-31"), Ok("2025-01-31T00:00:00+00:00".into()), "a plain date is its midnight");
        assert!(at("31/01/2025").unwrap_err().contains("try 2025-01-31 12:00"));
        assert!(at("2025-02-30").is_err(), "no such day");
    }
}
