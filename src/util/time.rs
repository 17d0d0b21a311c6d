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
