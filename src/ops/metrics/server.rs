//! The endpoint of `watch --metrics-addr`: `/metrics` (the exposition; the status is read at
//! scrape time, so the gauges are as fresh as the scrape), `/healthz` (the process answers) and
//! `/readyz` (the tracker can be read). One request per connection with `Connection: close`:
//! all a scraper or a probe needs, without an HTTP server stack in the build.

use std::sync::Arc;
use std::time::Duration;

use color_eyre::eyre::{eyre, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::engine::Engine;
use crate::ops::metrics::Metrics;
use crate::ops::status;

/// The OpenMetrics content type Prometheus negotiates for.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A request head larger than this is refused (a scraper's is a few hundred bytes).
const MAX_HEAD: usize = 16 * 1024;
/// A client that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Listen on `addr` (`127.0.0.1:9464`), or say why not and what to do.
pub async fn bind(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        eyre!("cannot serve metrics on {addr}: {e}\n  fix: pass a free address as --metrics-addr HOST:PORT (9464 is the usual exporter port)")
    })
}

/// Answer requests until the task is dropped.
pub async fn serve(listener: TcpListener, engine: Engine, metrics: Arc<Metrics>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                continue;
            }
        };
        let (engine, metrics) = (engine.clone(), metrics.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &engine, &metrics).await {
                tracing::debug!(%peer, error = %e, "metrics endpoint: request dropped");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, engine: &Engine, metrics: &Metrics) -> Result<()> {
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await.map_err(|_| eyre!("no request"))??;
    let mut words = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, path) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let path = path.split('?').next().unwrap_or_default();
    let (code, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            match status::status(engine).await {
                Ok(st) => metrics.observe_status(&st),
                // The gauges keep their last values; /readyz says what is wrong.
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "metrics: status could not be read"),
            }
            (200, OPENMETRICS, metrics.encode()?)
        }
        ("GET" | "HEAD", "/healthz") => (200, "text/plain", "ok\n".to_string()),
        ("GET" | "HEAD", "/readyz") => match engine.tracker().await {
            Ok(_) => (200, "text/plain", "ready: config loaded, tracker readable\n".to_string()),
            Err(e) => (503, "text/plain", format!("not ready: the tracker cannot be read: {e:#}\n")),
        },
        ("GET" | "HEAD", _) => (404, "text/plain", "not found: try /metrics, /healthz or /readyz\n".to_string()),
        _ => (405, "text/plain", "only GET and HEAD\n".to_string()),
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

/// The request line and headers (the body of a GET is ignored).
async fn read_head(stream: &mut TcpStream) -> Result<String> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > MAX_HEAD {
            return Err(eyre!("request head over {MAX_HEAD} bytes"));
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}
