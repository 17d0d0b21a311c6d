//! Alert webhooks as a receiver sees them: `watch` with `[alerts]` posts exactly one message
//! when a pipeline's health gets worse and one when it recovers, across many polls; a failed
//! delivery is retried; the other pipelines stay quiet; a webhook that always fails is given up
//! after its attempts and never stops a run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request the receiver got: the status it answered and the body.
struct Received {
    answered: u16,
    body: Value,
}

/// A webhook receiver on loopback that answers 500 to its first `failures` requests and 200 after.
fn receiver(failures: usize) -> (String, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let answered = if n < failures { 500 } else { 200 };
            let _ = write!(stream, "HTTP/1.1 {answered} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if tx.send(Received { answered, body }).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

type Lines<R> = std::io::Lines<BufReader<R>>;

/// `deltalink watch --interval 1s` on the lake, once it said where alerts go: the process, its
/// stderr and stdout lines.
fn watch(lake: &Lake) -> (Reaped, Lines<std::process::ChildStderr>, Lines<std::process::ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_deltalink"))
        .arg("--config")
        .arg(lake.path("deltalink.toml"))
        .args(["watch", "--interval", "1s"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start watch");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let watch = Reaped(child);
    let set_up: Vec<String> = stderr.by_ref().take(2).map(|l| l.expect("line")).collect();
    assert!(set_up.iter().any(|l| l.starts_with("alerts: health transitions go to 127.0.0.1")), "{set_up:?}");
    (watch, stderr, stdout)
}

#[test]
fn watch_posts_one_message_per_health_transition_and_retries_a_failed_delivery() {
    let lake = Lake::new();
    let (url, inbox) = receiver(1);
    let config = simple_config(&["a", "b"], &[("p", &["a"]), ("q", &["b"])]) + &format!("[alerts]\nwebhook = \"{url}\"\n");
    rt().block_on(two_pipelines_run_once(&lake, &config));
    let (_watch, mut stderr, _stdout) = watch(&lake);

    // Upstream b disappears: q is failing; p is not touched.
    std::fs::rename(lake.path("b"), lake.path("b-moved")).expect("move b away");
    let first = inbox.recv_timeout(Duration::from_secs(60)).expect("an alert for q");
    assert_eq!(first.answered, 500, "the receiver fails the first delivery");
    let retry = inbox.recv_timeout(Duration::from_secs(30)).expect("the retry");
    assert_eq!((retry.answered, &retry.body), (200, &first.body), "the same message, retried");
    let alert = &retry.body;
    assert_eq!((alert["pipeline"].as_str(), alert["event"].as_str(), alert["state"].as_str()), (Some("q"), Some("worse"), Some("failing")), "{alert}");
    assert!(alert["previous"].is_null() || alert["previous"] == "ok", "{alert}");
    assert!(alert["reason"].as_str().is_some_and(|r| r.starts_with("cannot read upstream `b`")), "{alert}");

    // Three more polls see b missing (watch reports each): no new message.
    let mut polls = 0;
    while polls < 3 {
        let line = stderr.next().expect("watch keeps polling").expect("line");
        polls += usize::from(line.contains("upstream `b`") && line.contains("FAILED"));
    }
    assert!(inbox.try_recv().is_err(), "a repeated verdict is not announced again");

    std::fs::rename(lake.path("b-moved"), lake.path("b")).expect("move b back");
    let back = inbox.recv_timeout(Duration::from_secs(60)).expect("a recovery message");
    assert_eq!((back.answered, back.body["pipeline"].as_str(), back.body["event"].as_str()), (200, Some("q"), Some("recovered")));
    assert_eq!((back.body["state"].as_str(), back.body["previous"].as_str()), (Some("ok"), Some("failing")));
    assert!(inbox.recv_timeout(Duration::from_secs(3)).is_err(), "nothing more: p never changed, q is ok");
}

/// A receiver that answers 500 to everything: the transition is tried three times, given up with
/// a message that says what to check, not retried on later polls — and the pipelines keep running.
#[test]
fn a_webhook_that_always_fails_is_given_up_and_never_stops_a_run() {
    let lake = Lake::new();
    let (url, inbox) = receiver(usize::MAX);
    let config = simple_config(&["a", "b"], &[("p", &["a"]), ("q", &["b"])]) + &format!("[alerts]\nwebhook = \"{url}\"\n");
    let (mut a, _b) = rt().block_on(two_pipelines_run_once(&lake, &config));
    let (_watch, mut stderr, mut stdout) = watch(&lake);

    std::fs::rename(lake.path("b"), lake.path("b-moved")).expect("move b away");
    for attempt in 1..=3 {
        let got = inbox.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("attempt {attempt}"));
        assert_eq!((got.answered, got.body["pipeline"].as_str(), got.body["state"].as_str()), (500, Some("q"), Some("failing")));
    }
    let given_up = stderr
        .by_ref()
        .map(|l| l.expect("line"))
        .find(|l| l.starts_with("alert for pipeline `q` (failing) not delivered"))
        .expect("watch says it gave the alert up");
    assert!(given_up.contains("after 3 attempts: HTTP 500") && !given_up.contains("/hook"), "no URL (it may carry a token): {given_up}");

    // Meanwhile runs go on: a commit to `a` is picked up by the next poll.
    rt().block_on(a.insert(&[Some(7)]));
    let ran = stdout.by_ref().map(|l| l.expect("line")).find(|l| l.starts_with("pipeline p: run #")).expect("p runs");
    assert!(ran.contains("written: 1 change rows → 1 keys"), "{ran}");
    assert!(inbox.recv_timeout(Duration::from_secs(3)).is_err(), "the given-up alert is not sent again on later polls");
}
