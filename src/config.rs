//! Configuration: the TOML contract that users and scripts rely on.
//!
//! Parsing happens in two passes. Serde (with `deny_unknown_fields`) rejects malformed TOML,
//! duplicate tables and unknown fields, and `toml` reports those with file line and column.
//! A second pass checks what serde cannot (unknown upstream names, empty or duplicate key lists)
//! and reports the line of the offending field from the spans it kept.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use url::Url;

/// Where the configuration came from when the user did not say.
pub const DEFAULT_CONFIG_PATH: &str = "configs/deltalink.toml";

/// A configuration error: always names the file, and the line and field when known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}\n  fix: pass --config PATH or set DELTALINK_CONFIG")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}:{line}: field `{field}`: {message}")]
    Invalid { path: PathBuf, line: usize, field: String, message: String },
}

/// Where a new pipeline starts reading an upstream it has never read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// All history still readable (see README: truncated logs start from a snapshot).
    #[default]
    Earliest,
    /// Only commits after the first run.
    Latest,
}

/// How a source turns change rows into entity keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMapping {
    /// Upstream columns giving the entity key, in the pipeline's `key` order.
    Columns(Vec<String>),
    /// A SQL query over `changes` and the other upstreams (join mapping).
    Sql(String),
}

#[derive(Debug, Clone)]
pub struct Source {
    pub upstream: String,
    pub mapping: KeyMapping,
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub link_table: Url,
    pub key: Vec<String>,
    pub start: StartFrom,
    pub reset_allowed: bool,
    /// The link table takes deletion vectors (see `link::sorted_merge`); false keeps it
    /// copy-on-write, for readers without deletion-vector support.
    pub deletion_vectors: bool,
    pub sources: Vec<Source>,
    /// How late the pipeline may fall before health says so.
    pub slo: LagSlo,
    /// Set by the operator: `watch` and `run --all` skip it (an explicit `run P` still runs).
    pub paused: bool,
    /// Downstream jobs reading the link table, whose progress the tracker keeps.
    pub consumers: Vec<Consumer>,
}

/// A downstream job that consumes a pipeline's link table (`[[pipelines.P.consumers]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub name: String,
    /// How old its oldest unconsumed change may get (defaults suit a daily job).
    pub slo: LagSlo,
}

/// A pipeline's lag objectives: lag (the age of the oldest upstream commit it has not read)
/// above `warn` is `lagging`, above `max` is `stalled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagSlo {
    pub warn: Duration,
    pub max: Duration,
}

/// `[alerts]`: a webhook that hears when a pipeline's health gets worse and when it recovers.
#[derive(Clone)]
pub struct Alerts {
    pub webhook: Url,
    pub format: AlertFormat,
}

impl fmt::Debug for Alerts {
    /// The webhook URL is a secret (Slack's carries its token): only its host is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Alerts").field("webhook_host", &self.webhook.host_str()).field("format", &self.format).finish()
    }
}

/// The body of an alert: deltalink's own JSON, or Slack's `{"text": …}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertFormat {
    #[default]
    Json,
    Slack,
}

/// Default `warn_lag`: a pipeline run every few minutes is an hour late only when stuck.
pub const DEFAULT_WARN_LAG: Duration = Duration::from_secs(3_600);
/// Default `max_lag`.
pub const DEFAULT_MAX_LAG: Duration = Duration::from_secs(6 * 3_600);
/// Default consumer `warn_lag`: most link-table consumers are daily jobs, and a daily job is
/// late when a change waits more than a day and its run's two hours.
pub const DEFAULT_CONSUMER_WARN_LAG: Duration = Duration::from_secs(26 * 3_600);
/// Default consumer `max_lag`: a second missed day.
pub const DEFAULT_CONSUMER_MAX_LAG: Duration = Duration::from_secs(50 * 3_600);
/// Default `[health] retention_margin`: an unread range this close to falling out of its
/// upstream's retention is `at_risk` (a day leaves an on-call shift to act).
pub const DEFAULT_RETENTION_MARGIN: Duration = Duration::from_secs(86_400);
/// Default `[health] lag_growth_polls`: lag that grew at each of this many polls in a row is
/// `lagging` even under `warn_lag` (a pipeline falling behind, caught before its SLO is).
pub const DEFAULT_LAG_GROWTH_POLLS: usize = 5;
/// The most polls `lag_growth_polls` may ask for (what a long-running process keeps).
pub const MAX_LAG_GROWTH_POLLS: usize = 16;
/// Default `[health] failing_after_runs`: the last run failed is `failing` (the next poll
/// retries it; a success clears it).
pub const DEFAULT_FAILING_AFTER_RUNS: u32 = 1;

impl Pipeline {
    /// Distinct upstream names this pipeline reads, in first-listed order.
    pub fn upstream_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for s in &self.sources {
            if !names.contains(&s.upstream) {
                names.push(s.upstream.clone());
            }
        }
        names
    }
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub uri: Url,
}

/// A validated configuration with every table location resolved to a URL.
#[derive(Clone)]
pub struct Config {
    pub path: PathBuf,
    pub tracker_uri: Url,
    /// How long a pipeline's lease outlives its holder's last heartbeat (`[tracker]
    /// lease_ttl_seconds`, default 60): the longest pause (GC, VM freeze) a holder survives.
    pub lease_ttl: std::time::Duration,
    pub upstreams: BTreeMap<String, Upstream>,
    pub pipelines: BTreeMap<String, Pipeline>,
    /// Object-store options (credentials, endpoints). Never printed: see the `Debug` impl.
    pub storage_options: HashMap<String, String>,
    /// An unread range with less than this left before its upstream's retention may remove it
    /// is `at_risk`.
    pub retention_margin: Duration,
    /// Polls in a row at which lag grew for `lagging` under `warn_lag` (0: off). Judged by
    /// long-running processes only (`watch`, the console): they keep the polls.
    pub lag_growth_polls: usize,
    /// Failed runs in a row (seen by this process) for `failing`.
    pub failing_after_runs: u32,
    /// Where `watch` posts health transitions, if anywhere.
    pub alerts: Option<Alerts>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("path", &self.path)
            .field("tracker_uri", &self.tracker_uri.as_str())
            .field("upstreams", &self.upstreams.keys().collect::<Vec<_>>())
            .field("pipelines", &self.pipelines.keys().collect::<Vec<_>>())
            .field("storage_options", &format!("<{} hidden>", self.storage_options.len()))
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    tracker: RawTracker,
    #[serde(default)]
    storage: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pipelines: BTreeMap<String, RawPipeline>,
    #[serde(default)]
    health: RawHealth,
    alerts: Option<RawAlerts>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    webhook: Spanned<String>,
    #[serde(default)]
    format: AlertFormat,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    retention_margin: Option<Spanned<String>>,
    lag_growth_polls: Option<Spanned<i64>>,
    failing_after_runs: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTracker {
    uri: Spanned<String>,
    lease_ttl_seconds: Option<Spanned<i64>>,
}

/// Default `[tracker] lease_ttl_seconds`.
pub const DEFAULT_LEASE_TTL_SECONDS: u64 = 60;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    uri: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    link_table: Spanned<String>,
    key: Spanned<Vec<String>>,
    #[serde(default)]
    start: StartFrom,
    #[serde(default = "default_true")]
    reset_allowed: bool,
    #[serde(default = "default_true")]
    deletion_vectors: bool,
    sources: Spanned<Vec<RawSource>>,
    warn_lag: Option<Spanned<String>>,
    max_lag: Option<Spanned<String>>,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    consumers: Vec<RawConsumer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsumer {
    name: Spanned<String>,
    warn_lag: Option<Spanned<String>>,
    max_lag: Option<Spanned<String>>,
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    upstream: Spanned<String>,
    keys: Option<Spanned<Vec<String>>>,
    sql: Option<Spanned<String>>,
}

impl Config {
    /// Load and validate a config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    /// Parse config text; `path` names the file in errors and anchors relative table paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Self::parse_with_env(text, path, &|var| std::env::var(var).ok())
    }

    /// [`Config::parse`] with `${NAME}` storage values looked up by `env` instead of in the
    /// process environment (tests: changing the environment of a multi-threaded process races
    /// with every thread that reads it).
    pub fn parse_with_env(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let v = Validator { path, text, base: &base, env };
        v.build(raw)
    }

    pub fn pipeline(&self, name: &str) -> Result<&Pipeline, crate::Error> {
        self.pipelines.get(name).ok_or_else(|| crate::Error::UnknownPipeline {
            name: name.to_string(),
            known: self.pipelines.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    pub fn upstream(&self, name: &str) -> Result<&Upstream, crate::Error> {
        self.upstreams.get(name).ok_or_else(|| crate::Error::UnknownUpstream {
            name: name.to_string(),
            known: self.upstreams.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }
}

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    base: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Validator<'_> {
    fn invalid(&self, span: std::ops::Range<usize>, field: &str, message: impl Into<String>) -> ConfigError {
        let line = self.text[..span.start.min(self.text.len())].matches('\n').count() + 1;
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn build(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let tracker_uri = self.resolve(&raw.tracker.uri, "tracker.uri")?;
        let lease_ttl = self.lease_ttl(raw.tracker.lease_ttl_seconds.as_ref())?;
        let mut upstreams = BTreeMap::new();
        for (name, u) in &raw.upstreams {
            let field = format!("upstreams.{name}.uri");
            if name.starts_with('@') {
                // The tracker keys consumers' progress rows as `@consumer:NAME` beside upstreams.
                return Err(self.invalid(u.uri.span(), &format!("upstreams.{name}"), "an upstream name cannot start with `@` (reserved for the tracker's consumer rows)\n  fix: rename the upstream"));
            }
            let uri = self.resolve(&u.uri, &field)?;
            upstreams.insert(name.clone(), Upstream { name: name.clone(), uri });
        }
        let mut pipelines = BTreeMap::new();
        for (name, p) in raw.pipelines {
            let pipeline = self.pipeline(&name, p, &upstreams)?;
            pipelines.insert(name, pipeline);
        }
        let on_s3 = std::iter::once(&tracker_uri)
            .chain(upstreams.values().map(|u| &u.uri))
            .chain(pipelines.values().map(|p| &p.link_table))
            .any(|u| matches!(u.scheme(), "s3" | "s3a"));
        if on_s3 {
            self.refuse_s3_without_conditional_put(&raw.storage)?;
        }
        Ok(Config {
            path: self.path.to_path_buf(),
            tracker_uri,
            lease_ttl,
            upstreams,
            pipelines,
            storage_options: self.storage(raw.storage)?,
            retention_margin: self.duration(raw.health.retention_margin.as_ref(), "health.retention_margin", DEFAULT_RETENTION_MARGIN)?,
            lag_growth_polls: self.count(raw.health.lag_growth_polls.as_ref(), "health.lag_growth_polls", DEFAULT_LAG_GROWTH_POLLS as i64, 0, MAX_LAG_GROWTH_POLLS as i64)? as usize,
            failing_after_runs: self.count(raw.health.failing_after_runs.as_ref(), "health.failing_after_runs", DEFAULT_FAILING_AFTER_RUNS.into(), 1, 100)? as u32,
            alerts: raw.alerts.map(|a| self.alerts(a)).transpose()?,
        })
    }

    /// A holder heartbeats every quarter of the TTL; below 2 s a busy store's latency alone
    /// would let leases lapse.
    fn lease_ttl(&self, raw: Option<&Spanned<i64>>) -> Result<std::time::Duration, ConfigError> {
        let Some(raw) = raw else { return Ok(std::time::Duration::from_secs(DEFAULT_LEASE_TTL_SECONDS)) };
        match u64::try_from(*raw.get_ref()) {
            Ok(secs) if (2..=86_400).contains(&secs) => Ok(std::time::Duration::from_secs(secs)),
            _ => Err(self.invalid(
                raw.span(),
                "tracker.lease_ttl_seconds",
                format!("{} is out of range\n  fix: a whole number of seconds from 2 to 86400 (default {DEFAULT_LEASE_TTL_SECONDS}); it bounds how long a frozen holder keeps a pipeline", raw.get_ref()),
            )),
        }
    }

    /// A duration field (`90s`, `2h`, `7d`), or `default` when absent.
    fn duration(&self, raw: Option<&Spanned<String>>, field: &str, default: Duration) -> Result<Duration, ConfigError> {
        let Some(raw) = raw else { return Ok(default) };
        match crate::util::time::parse_duration(raw.get_ref()) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(self.invalid(raw.span(), field, "must be more than zero\n  fix: a duration such as \"90s\", \"2h\" or \"26h\"")),
            Err(e) => Err(self.invalid(raw.span(), field, format!("{e}\n  fix: a whole number and a unit: s, m, h, d or w"))),
        }
    }

    /// A whole number of `field` within `min..=max`.
    fn count(&self, raw: Option<&Spanned<i64>>, field: &str, default: i64, min: i64, max: i64) -> Result<i64, ConfigError> {
        let Some(raw) = raw else { return Ok(default) };
        let n = *raw.get_ref();
        if (min..=max).contains(&n) {
            return Ok(n);
        }
        Err(self.invalid(raw.span(), field, format!("{n} is out of range\n  fix: a whole number from {min} to {max} (default {default})")))
    }

    /// `warn_lag` and `max_lag` under `field` (a pipeline's or a consumer's); the warning must
    /// come first.
    fn lag_slo(&self, field: &str, warn: Option<&Spanned<String>>, max: Option<&Spanned<String>>, defaults: LagSlo) -> Result<LagSlo, ConfigError> {
        let warn_lag = self.duration(warn, &format!("{field}.warn_lag"), defaults.warn)?;
        let max_lag = self.duration(max, &format!("{field}.max_lag"), defaults.max)?;
        if warn_lag > max_lag {
            let span = warn.or(max).map(Spanned::span).unwrap_or(0..0);
            return Err(self.invalid(
                span,
                &format!("{field}.warn_lag"),
                format!(
                    "warn_lag ({}s) is above max_lag ({}s)\n  fix: warn_lag is the early warning, so set it below max_lag (defaults {}h and {}h)",
                    warn_lag.as_secs(),
                    max_lag.as_secs(),
                    defaults.warn.as_secs() / 3_600,
                    defaults.max.as_secs() / 3_600,
                ),
            ));
        }
        Ok(LagSlo { warn: warn_lag, max: max_lag })
    }

    /// A pipeline's consumers: names that say who reads (they key progress rows in the
    /// tracker), each listed once.
    fn consumers(&self, pipeline: &str, raw: &[RawConsumer]) -> Result<Vec<Consumer>, ConfigError> {
        let defaults = LagSlo { warn: DEFAULT_CONSUMER_WARN_LAG, max: DEFAULT_CONSUMER_MAX_LAG };
        let mut out: Vec<Consumer> = Vec::new();
        for (i, c) in raw.iter().enumerate() {
            let field = format!("pipelines.{pipeline}.consumers[{i}]");
            let name = c.name.get_ref().trim();
            if name.is_empty() || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch)) {
                return Err(self.invalid(c.name.span(), &format!("{field}.name"), format!("`{name}` is not a consumer name\n  fix: letters, digits, `_`, `-` and `.` only, e.g. \"daily_job\"")));
            }
            if out.iter().any(|o| o.name == name) {
                return Err(self.invalid(c.name.span(), &format!("{field}.name"), format!("consumer `{name}` is listed twice; each consumer keeps one progress row")));
            }
            let slo = self.lag_slo(&field, c.warn_lag.as_ref(), c.max_lag.as_ref(), defaults)?;
            out.push(Consumer { name: name.to_string(), slo });
        }
        Ok(out)
    }

    /// `[alerts]`: an http(s) webhook, `${NAME}` read from the environment (webhook URLs carry
    /// tokens).
    fn alerts(&self, raw: RawAlerts) -> Result<Alerts, ConfigError> {
        let field = "alerts.webhook";
        let text = self.secret(&raw.webhook, field)?;
        let webhook = Url::parse(text.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| self.invalid(raw.webhook.span(), field, "is not an http(s) URL\n  fix: the URL your chat tool or alert router gives for incoming webhooks, e.g. https://hooks.slack.com/services/…"))?;
        Ok(Alerts { webhook, format: raw.format })
    }

    /// A value, or the environment variable it names as `${NAME}`.
    fn secret(&self, value: &Spanned<String>, field: &str) -> Result<String, ConfigError> {
        let text = value.get_ref();
        match text.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
            Some(var) => (self.env)(var).ok_or_else(|| {
                self.invalid(value.span(), field, format!("environment variable `{var}` is not set\n  fix: export {var}=… before starting deltalink, or put the value in the config"))
            }),
            None => Ok(text.clone()),
        }
    }

    /// Object-store options; a value `${NAME}` is read from the environment so secrets stay
    /// out of config files.
    /// Every commit deltalink makes (tracker, link tables) and every lease it takes is a
    /// create-if-absent put; an S3 store told not to make conditional puts would fail each one
    /// after the work (or, for a store that ignored it, let two writers both win).
    fn refuse_s3_without_conditional_put(&self, storage: &BTreeMap<String, Spanned<String>>) -> Result<(), ConfigError> {
        let disabled = |v: &str| v.trim().eq_ignore_ascii_case("disabled");
        let why = "deltalink's commits and leases need create-if-absent puts, and this turns S3's conditional puts off";
        let fix = "fix: remove it (AWS S3 and most S3-compatible stores support conditional puts); a store without them cannot host deltalink's tables";
        for (key, value) in storage {
            let k = key.to_ascii_lowercase();
            if (k == "aws_conditional_put" || k == "conditional_put") && disabled(&self.secret(value, &format!("storage.{key}"))?) {
                return Err(self.invalid(value.span(), &format!("storage.{key}"), format!("is \"disabled\": {why}\n  {fix}")));
            }
        }
        if (self.env)("AWS_CONDITIONAL_PUT").is_some_and(|v| disabled(&v)) {
            return Err(self.invalid(0..0, "storage", format!("the environment sets AWS_CONDITIONAL_PUT=disabled: {why}\n  {fix}: unset AWS_CONDITIONAL_PUT")));
        }
        Ok(())
    }

    fn storage(&self, raw: BTreeMap<String, Spanned<String>>) -> Result<HashMap<String, String>, ConfigError> {
        let mut out = HashMap::new();
        for (key, value) in raw {
            let resolved = self.secret(&value, &format!("storage.{key}"))?;
            out.insert(key, resolved);
        }
        Ok(out)
    }

    fn pipeline(
        &self,
        name: &str,
        p: RawPipeline,
        upstreams: &BTreeMap<String, Upstream>,
    ) -> Result<Pipeline, ConfigError> {
        let field = |f: &str| format!("pipelines.{name}.{f}");
        let slo = self.lag_slo(&format!("pipelines.{name}"), p.warn_lag.as_ref(), p.max_lag.as_ref(), LagSlo { warn: DEFAULT_WARN_LAG, max: DEFAULT_MAX_LAG })?;
        let consumers = self.consumers(name, &p.consumers)?;
        let link_table = self.resolve(&p.link_table, &field("link_table"))?;
        self.check_columns(&p.key, &field("key"))?;
        let key = p.key.into_inner();
        if p.sources.get_ref().is_empty() {
            return Err(self.invalid(p.sources.span(), &field("sources"), "a pipeline needs at least one source"));
        }
        let mut sources = Vec::new();
        for (i, s) in p.sources.into_inner().into_iter().enumerate() {
            let sfield = |f: &str| format!("pipelines.{name}.sources[{i}].{f}");
            let upstream = s.upstream.get_ref().clone();
            if !upstreams.contains_key(&upstream) {
                let known = upstreams.keys().cloned().collect::<Vec<_>>().join(", ");
                return Err(self.invalid(
                    s.upstream.span(),
                    &sfield("upstream"),
                    format!("unknown upstream `{upstream}`; declare it as [upstreams.{upstream}] (known: {known})"),
                ));
            }
            let mapping = match (s.keys, s.sql) {
                (Some(keys), None) => {
                    self.check_columns(&keys, &sfield("keys"))?;
                    if keys.get_ref().len() != key.len() {
                        return Err(self.invalid(
                            keys.span(),
                            &sfield("keys"),
                            format!(
                                "gives {} column(s) but the pipeline key {:?} has {}; list one upstream column per key column, in key order",
                                keys.get_ref().len(),
                                key,
                                key.len()
                            ),
                        ));
                    }
                    KeyMapping::Columns(keys.into_inner())
                }
                (None, Some(sql)) => {
                    if sql.get_ref().trim().is_empty() {
                        return Err(self.invalid(sql.span(), &sfield("sql"), "is empty"));
                    }
                    KeyMapping::Sql(sql.into_inner())
                }
                (Some(keys), Some(_)) => {
                    return Err(self.invalid(keys.span(), &sfield("keys"), "give either `keys` or `sql`, not both"))
                }
                (None, None) => {
                    return Err(self.invalid(
                        s.upstream.span(),
                        &format!("pipelines.{name}.sources[{i}]"),
                        "needs `keys = [...]` (upstream columns in key order) or `sql = \"...\"`",
                    ))
                }
            };
            sources.push(Source { upstream, mapping });
        }
        Ok(Pipeline {
            name: name.to_string(),
            link_table,
            key,
            start: p.start,
            reset_allowed: p.reset_allowed,
            deletion_vectors: p.deletion_vectors,
            sources,
            slo,
            paused: p.paused,
            consumers,
        })
    }

    fn check_columns(&self, cols: &Spanned<Vec<String>>, field: &str) -> Result<(), ConfigError> {
        let list = cols.get_ref();
        if list.is_empty() {
            return Err(self.invalid(cols.span(), field, "is empty; list at least one column"));
        }
        for (i, c) in list.iter().enumerate() {
            if c.trim().is_empty() {
                return Err(self.invalid(cols.span(), field, "contains an empty column name"));
            }
            if list[..i].contains(c) {
                return Err(self.invalid(cols.span(), field, format!("column `{c}` is listed twice")));
            }
        }
        Ok(())
    }

    fn resolve(&self, uri: &Spanned<String>, field: &str) -> Result<Url, ConfigError> {
        let s = uri.get_ref().trim();
        if s.is_empty() {
            return Err(self.invalid(uri.span(), field, "is empty"));
        }
        resolve_table_uri(s, self.base).map_err(|m| self.invalid(uri.span(), field, m))
    }
}

/// Resolve a table location: URLs as they are, local paths against `base` (the config's folder).
pub fn resolve_table_uri(s: &str, base: &Path) -> Result<Url, String> {
    if s.contains("://") {
        let mut url = Url::parse(s).map_err(|e| format!("`{s}` is not a valid URL: {e}"))?;
        if let Some(refusal) = store_not_built(&url, &store_feature_built) {
            return Err(refusal);
        }
        if !url.path().ends_with('/') {
            let p = format!("{}/", url.path());
            url.set_path(&p);
        }
        return Ok(url);
    }
    let p = Path::new(s);
    let abs = if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
    let abs = if abs.is_absolute() {
        abs
    } else {
        std::env::current_dir().map_err(|e| format!("cannot resolve `{s}`: {e}"))?.join(abs)
    };
    let abs = normalize_path(&abs);
    Url::from_directory_path(&abs).map_err(|_| format!("cannot turn path `{}` into a URL", abs.display()))
}

/// Whether this build has the cargo feature of an object store (see Cargo.toml `[features]`).
fn store_feature_built(feature: &str) -> bool {
    match feature {
        "s3" => cfg!(feature = "s3"),
        "azure" => cfg!(feature = "azure"),
        "gcs" => cfg!(feature = "gcs"),
        _ => false,
    }
}

/// A location on an object store whose cargo feature this build lacks: say which feature to
/// build with, instead of delta-rs's later "Unknown scheme".
fn store_not_built(url: &Url, built: &dyn Fn(&str) -> bool) -> Option<String> {
    let (store, feature) = match url.scheme() {
        "s3" | "s3a" => ("S3", "s3"),
        "az" | "abfs" | "abfss" | "azure" | "adl" => ("Azure storage", "azure"),
        "gs" => ("Google Cloud Storage", "gcs"),
        _ => return None,
    };
    (!built(feature)).then(|| {
        format!(
            "`{url}` is on {store}, which this build of deltalink leaves out (the default build reads local tables only)\n  fix: build with `cargo build --release --features {feature}` (or `--features all-stores`), then run that binary"
        )
    })
}

/// Lexically remove `.` and `..` so URLs are stable without touching the file system.
fn normalize_path(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Show a table URL the way a user wrote it: local paths as paths.
pub fn display_uri(url: &Url) -> String {
    if url.scheme() == "file" {
        if let Ok(p) = url.to_file_path() {
            return p.display().to_string();
        }
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "s3")]
    #[test]
    fn s3_with_conditional_puts_disabled_is_refused_at_load() {
        let text = |extra: &str| format!("[storage]\nAWS_REGION = \"us-east-1\"\n{extra}[tracker]\nuri = \"s3://lake/_deltalink/tracker\"\n");
        let no_env = |_: &str| None;
        for extra in ["aws_conditional_put = \"disabled\"\n", "CONDITIONAL_PUT = \"Disabled\"\n"] {
            let e = Config::parse_with_env(&text(extra), Path::new("/c/deltalink.toml"), &no_env).expect_err(extra).to_string();
            assert!(e.contains("deltalink.toml:3") && e.contains("create-if-absent") && e.contains("fix: remove it"), "{e}");
        }
        let e = Config::parse_with_env(&text(""), Path::new("/c/deltalink.toml"), &|v: &str| (v == "AWS_CONDITIONAL_PUT").then(|| "disabled".into()))
            .expect_err("env")
            .to_string();
        assert!(e.contains("unset AWS_CONDITIONAL_PUT"), "{e}");
        assert!(Config::parse_with_env(&text("aws_conditional_put = \"etag\"\n"), Path::new("/c/deltalink.toml"), &no_env).is_ok());
        // A local lake does not care.
        let local = "[storage]\naws_conditional_put = \"disabled\"\n[tracker]\nuri = \"t\"\n";
        assert!(Config::parse_with_env(local, Path::new("/c/deltalink.toml"), &no_env).is_ok());
    }

    #[test]
    fn health_settings_and_lag_objectives_are_checked_with_their_line_and_fix() {
        let no_env = |_: &str| None;
        let parse = |health: &str, pipeline: &str| {
            let text = format!(
                "[tracker]\nuri = \"t\"\n[health]\n{health}\n[upstreams.a]\nuri = \"a\"\n[pipelines.p]\nlink_table = \"l\"\nkey = [\"k\"]\n{pipeline}\n[[pipelines.p.sources]]\nupstream = \"a\"\nkeys = [\"k\"]\n"
            );
            Config::parse_with_env(&text, Path::new("/c/deltalink.toml"), &no_env).map_err(|e| e.to_string())
        };
        let ok = parse("", "").expect("defaults");
        assert_eq!((ok.lag_growth_polls, ok.failing_after_runs, ok.retention_margin), (DEFAULT_LAG_GROWTH_POLLS, DEFAULT_FAILING_AFTER_RUNS, DEFAULT_RETENTION_MARGIN));
        let set = parse("lag_growth_polls = 0\nfailing_after_runs = 3\nretention_margin = \"36h\"", "").expect("set");
        assert_eq!((set.lag_growth_polls, set.failing_after_runs, set.retention_margin), (0, 3, Duration::from_secs(36 * 3_600)));
        for (health, pipeline, want) in [
            ("lag_growth_polls = 17", "", "deltalink.toml:4"),
            ("lag_growth_polls = -1", "", "a whole number from 0 to 16"),
            ("failing_after_runs = 0", "", "a whole number from 1 to 100"),
            ("retention_margin = \"2 fortnights\"", "", "unknown unit"),
            ("retention_margin = \"0s\"", "", "must be more than zero"),
            ("", "warn_lag = \"3h\"\nmax_lag = \"2h\"", "warn_lag (10800s) is above max_lag (7200s)"),
            ("", "warn_lag = \"soon\"", "pipelines.p.warn_lag"),
        ] {
            let e = parse(health, pipeline).expect_err(want);
            assert!(e.contains(want) && e.contains("fix"), "{health} {pipeline}: {e}");
        }
    }

    #[test]
    fn an_object_store_left_out_of_the_build_is_refused_naming_its_feature() {
        let refusal = |uri: &str| store_not_built(&Url::parse(uri).expect("url"), &|_| false);
        for (uri, feature) in [("s3://lake/t/", "s3"), ("s3a://lake/t/", "s3"), ("abfss://c@a.dfs.core.windows.net/t/", "azure"), ("gs://lake/t/", "gcs")] {
            let message = refusal(uri).unwrap_or_else(|| panic!("{uri} must be refused"));
            assert!(message.contains(&format!("--features {feature}")), "{uri}: {message}");
        }
        assert_eq!(refusal("file:///tmp/t/"), None, "local tables need no feature");
        let built = store_not_built(&Url::parse("s3://lake/t/").expect("url"), &|f| f == "s3");
        assert_eq!(built, None, "a build with the feature accepts the location");
    }

    #[test]
    fn this_builds_features_decide_what_resolve_table_uri_accepts() {
        let resolved = resolve_table_uri("s3://lake/t", Path::new("/"));
        assert_eq!(resolved.is_ok(), cfg!(feature = "s3"), "{resolved:?}");
    }
}
