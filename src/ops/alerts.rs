//! Alerts on health transitions: `watch` posts one message to the `[alerts] webhook` when a
//! pipeline's health gets worse and one when it recovers — not on every poll. Delivery is
//! retried with a timeout per attempt; a webhook that keeps failing is logged and never stops
//! a run.

use std::collections::HashMap;
use std::time::Duration;

use color_eyre::eyre::{eyre, Result};
use serde::Serialize;

use crate::config::{AlertFormat, Alerts};
use crate::ops::health::HealthState;
use crate::ops::status::Status;
use crate::util::time::{format_ms, now_ms};

/// Attempts per message, and the wait before the second (doubled after each failure).
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// One attempt may take this long (connect, send, answer).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// A change of a pipeline's health that someone should hear about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    pub pipeline: String,
    /// `worse` or `recovered`.
    pub event: &'static str,
    pub state: HealthState,
    /// The state before (absent for the first verdict `watch` saw).
    pub previous: Option<HealthState>,
    pub reason: String,
    pub at: String,
}

/// The last verdict per pipeline, to tell transitions from repeats.
#[derive(Debug, Default)]
pub struct HealthMemory(HashMap<String, HealthState>);

impl HealthMemory {
    /// The transitions `st` shows against what was seen before: a worse state (the first
    /// verdict counts when it is not `ok`), or back to `ok`. Improving to another state that is
    /// not `ok` is remembered, not announced.
    pub fn transitions(&mut self, st: &Status) -> Vec<Transition> {
        let at = format_ms(now_ms()).unwrap_or_default();
        let mut out = Vec::new();
        for p in &st.pipelines {
            let state = p.health.state;
            let previous = self.0.insert(p.name.clone(), state);
            let event = match previous {
                Some(before) if state > before => "worse",
                Some(before) if state == HealthState::Ok && before != HealthState::Ok => "recovered",
                None if state != HealthState::Ok => "worse",
                _ => continue,
            };
            out.push(Transition {
                pipeline: p.name.clone(),
                event,
                state,
                previous,
                reason: p.health.reason.clone(),
                at: at.clone(),
            });
        }
        out
    }
}

/// Posts transitions to the configured webhook.
pub struct Alerter {
    client: reqwest::Client,
    alerts: Alerts,
}

impl Alerter {
    pub fn new(alerts: Alerts) -> Result<Alerter> {
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .build()
            .map_err(|e| eyre!("cannot set up the alert webhook client: {e}"))?;
        Ok(Alerter { client, alerts })
    }

    /// The request body for `t` in the configured format.
    pub fn body(&self, t: &Transition) -> String {
        match self.alerts.format {
            AlertFormat::Json => serde_json::to_string(t).unwrap_or_default(),
            AlertFormat::Slack => serde_json::json!({ "text": slack_text(t) }).to_string(),
        }
    }

    /// Deliver `t`, retrying; the error after the last attempt (the caller logs it and goes on).
    pub async fn send(&self, t: &Transition) -> Result<()> {
        let body = self.body(t);
        let mut wait = FIRST_BACKOFF;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match self.post(&body).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        let host = self.alerts.webhook.host_str().unwrap_or_default();
        Err(eyre!(
            "alert for pipeline `{}` ({}) not delivered to {host} after {ATTEMPTS} attempts: {last}\n  fix: check [alerts] webhook and that {host} accepts POSTs from this host",
            t.pipeline,
            t.state.word()
        ))
    }

    async fn post(&self, body: &str) -> std::result::Result<(), String> {
        let response = self
            .client
            .post(self.alerts.webhook.clone())
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            // Without the URL: it may carry a token.
            .map_err(|e| e.without_url().to_string())?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}

fn slack_text(t: &Transition) -> String {
    match t.event {
        "recovered" => format!(
            ":white_check_mark: deltalink: pipeline *{}* is ok again (was {})",
            t.pipeline,
            t.previous.map_or("unknown", HealthState::word)
        ),
        _ => format!(
            ":rotating_light: deltalink: pipeline *{}* is *{}*{}: {}",
            t.pipeline,
            t.state.word(),
            t.previous.map_or(String::new(), |p| format!(" (was {})", p.word())),
            t.reason
        ),
    }
}

/// `watch`'s alert loop: every `interval`, read the status and post its transitions. Runs until
/// its task is dropped; a status that cannot be read is logged and retried next time.
pub async fn watch_health(engine: crate::engine::Engine, alerter: Alerter, interval: Duration) {
    let mut memory = HealthMemory::default();
    loop {
        match crate::ops::status::status(&engine).await {
            Ok(st) => {
                for t in memory.transitions(&st) {
                    if let Err(e) = alerter.send(&t).await {
                        eprintln!("{e:#}");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "alerts: status could not be read"),
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::health::Health;
    use crate::ops::status::PipelineStatus;

    fn status(states: &[(&str, HealthState)]) -> Status {
        let pipelines = states
            .iter()
            .map(|(name, state)| PipelineStatus {
                name: name.to_string(),
                link_table: String::new(),
                key: vec![],
                link_rows: None,
                last_run_id: None,
                last_write: None,
                upstreams: vec![],
                consumers: vec![],
                health: Health { state: *state, reason: format!("{name} is {}", state.word()) },
                pause: None,
            })
            .collect();
        Status { upstreams: vec![], pipelines }
    }

    fn events(memory: &mut HealthMemory, states: &[(&str, HealthState)]) -> Vec<(String, &'static str, HealthState)> {
        memory.transitions(&status(states)).into_iter().map(|t| (t.pipeline, t.event, t.state)).collect()
    }

    #[test]
    fn only_worse_states_and_recoveries_are_announced_once() {
        use HealthState::*;
        let mut m = HealthMemory::default();
        assert_eq!(events(&mut m, &[("p", Ok), ("q", Lagging)]), vec![("q".into(), "worse", Lagging)], "a first verdict that is not ok");
        assert_eq!(events(&mut m, &[("p", Ok), ("q", Lagging)]), vec![], "repeats are quiet");
        assert_eq!(events(&mut m, &[("p", Failing), ("q", AtRisk)]), vec![("p".into(), "worse", Failing), ("q".into(), "worse", AtRisk)]);
        assert_eq!(events(&mut m, &[("p", Failing), ("q", Lagging)]), vec![], "better but not ok: remembered, not sent");
        assert_eq!(events(&mut m, &[("p", Ok), ("q", Stalled)]), vec![("p".into(), "recovered", Ok), ("q".into(), "worse", Stalled)]);
    }

    #[test]
    fn slack_bodies_are_text_and_json_bodies_carry_every_field() {
        let t = Transition {
            pipeline: "p".into(),
            event: "worse",
            state: HealthState::AtRisk,
            previous: Some(HealthState::Lagging),
            reason: "`a`: unread commits …".into(),
            at: "2026-12-05T00:00:00Z".into(),
        };
        let webhook = url::Url::parse("https://hooks.example/T/B/secret").expect("url");
        let slack = Alerter::new(Alerts { webhook: webhook.clone(), format: AlertFormat::Slack }).expect("client");
        let body: serde_json::Value = serde_json::from_str(&slack.body(&t)).expect("json");
        assert_eq!(body["text"], ":rotating_light: deltalink: pipeline *p* is *at_risk* (was lagging): `a`: unread commits …");
        let json = Alerter::new(Alerts { webhook, format: AlertFormat::Json }).expect("client");
        let body: serde_json::Value = serde_json::from_str(&json.body(&t)).expect("json");
        assert_eq!((body["state"].as_str(), body["previous"].as_str(), body["event"].as_str()), (Some("at_risk"), Some("lagging"), Some("worse")));
    }
}
