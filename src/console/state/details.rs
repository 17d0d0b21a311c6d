//! The text of the detail popups (Enter): every field of the selected row, so narrow
//! tables can leave columns out.

use crate::console::msg::View;
use crate::console::state::app::App;
use crate::console::text;

impl App {
    pub(super) fn upstream_detail(&self) -> Option<(String, Vec<String>)> {
        let app = self;
        let rows = app.upstream_rows();
        let row = rows.get(app.selected(View::Upstreams))?;
        let mut lines = vec![format!(
            "uri            {}",
            app.config.upstreams.get(row.name).map_or(String::new(), |u| crate::config::display_uri(&u.uri))
        )];
        if let Some(s) = row.status {
            lines.push(format!("latest version {}", text::opt(s.latest_version)));
            lines.push(format!("change feed    {}", if s.cdf_enabled { "enabled" } else { "NOT enabled" }));
            lines.push(format!(
                "last commit    {} {}",
                s.last_commit_ts.as_deref().map_or("-".into(), text::utc_text),
                s.last_operation.as_deref().unwrap_or("")
            ));
            if let Some(e) = &s.error {
                lines.push("error:".into());
                lines.extend(e.lines().map(|l| format!("  {l}")));
            }
        }
        lines.push(String::new());
        lines.push("pipeline                   processed  lag  lag time  pending run".into());
        for (p, r) in &row.readers {
            lines.push(format!(
                "{:<26} {:>9} {:>4}  {:>8}  {}",
                p,
                text::opt(r.processed_version),
                text::opt(r.lag_versions),
                r.lag_seconds.map_or("-".into(), text::age),
                text::opt(r.pending_run_id)
            ));
        }
        Some((format!("Upstream {}", row.name), lines))
    }

    pub(super) fn link_detail(&self) -> Option<(String, Vec<String>)> {
        let app = self;
        let row = app.link_rows().get(app.selected(View::Link))?;
        let Some(Ok(page)) = &app.link.page.value else { return None };
        let lines = page.columns.iter().zip(row).map(|(c, v)| format!("{c:<16} {v}")).collect();
        Some((format!("Link row of {}", app.link.pipeline), lines))
    }

    pub(super) fn tracker_detail(&self) -> Option<(String, Vec<String>)> {
        let app = self;
        let r = *app.tracker_rows().get(app.selected(View::Tracker))?;
        let ts = |v: Option<i64>| v.map_or("-".into(), text::utc_ms);
        let lines = vec![
            format!("pipeline               {}", r.pipeline_name),
            format!("upstream               {}", r.upstream),
            format!("last processed version {}", text::opt(r.last_processed_version)),
            format!("  committed at (UTC)   {}", ts(r.last_processed_ts)),
            format!("run id                 {}", text::opt(r.run_id)),
            format!("pending version        {}", text::opt(r.pending_version)),
            format!("pending run id         {}", text::opt(r.pending_run_id)),
            format!("updated at (UTC)       {}", ts(r.updated_at)),
            format!("updated by             {}", r.updated_by.as_deref().unwrap_or("-")),
            format!("note                   {}", r.note.as_deref().unwrap_or("-")),
        ];
        Some(("Tracker row".into(), lines))
    }

    pub(super) fn activity_detail(&self) -> Option<(String, Vec<String>)> {
        let app = self;
        let e = *app.activity_rows().get(app.selected(View::Activity))?;
        Some((format!("Activity at {}", text::clock(&e.at)), e.text.lines().map(String::from).collect()))
    }
}
