//! How numbers, times and engine results read on screen. Data timestamps are shown in UTC
//! (as the Delta log and `deltalink status` show them); console events in local time.

use std::time::Duration;

use chrono::{DateTime, Local};

use crate::describe::thousands;
use crate::engine::{Outcome, RunReport};

pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// A lag in seconds as "45s", "12m05s", "3h20m", "2d04h".
pub fn age(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

pub fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// Milliseconds since the epoch as "2025-01-31 12:00:00" (UTC).
pub fn utc_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// An RFC 3339 UTC string from the engine, shortened to "2025-01-31 12:00:00".
pub fn utc_text(ts: &str) -> String {
    ts.replacen('T', " ", 1).trim_end_matches('Z').to_string()
}

pub fn clock(t: &DateTime<Local>) -> String {
    t.format("%H:%M:%S").to_string()
}

/// Short form for a table cell.
/// The Last run cell for a write made outside this console: `#12 4m10s ago, 2,401 keys`
/// (`replay #13 …` for a replay).
pub fn write_cell(w: &crate::store::link::LinkWrite, now: DateTime<Local>) -> String {
    let kind = if w.kind == "run" { String::new() } else { format!("{} ", w.kind) };
    let ago = w.at_ms.map(|ms| format!(" {} ago", age((now.timestamp_millis() - ms) as f64 / 1000.0))).unwrap_or_default();
    let keys = match (w.keys_inserted, w.keys_updated) {
        (Some(i), Some(u)) => format!(", {} keys", thousands(i + u)),
        _ => String::new(),
    };
    format!("{kind}#{}{ago}{keys}", w.run_id)
}

pub fn run_cell(r: &RunReport) -> String {
    match r.outcome {
        Outcome::NothingNew => "nothing new".into(),
        Outcome::Recovered => format!("#{} recovered", opt(r.run_id)),
        Outcome::Written => format!("#{} {} keys {}", opt(r.run_id), thousands(r.distinct_keys), seconds(r.duration)),
    }
}


/// The first line of a possibly multi-line message.
pub fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

