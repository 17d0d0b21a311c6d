//! The console end to end in a real terminal: a private tmux server, keys sent with
//! `send-keys`, the screen read with `capture-pane`.

use super::*;

/// A private tmux server (its own socket), killed when dropped.
struct Tmux {
    socket: String,
    config: PathBuf,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        let conf = self.config.to_str().expect("utf-8");
        Process::new("tmux").args(["-L", &self.socket, "-f", conf]).args(args).output().expect("run tmux")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "console"]).stdout).into_owned()
    }

    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "console"];
        args.extend(keys);
        assert!(self.cmd(&args).status.success(), "send-keys {keys:?}");
    }

    /// Poll the pane until `ready` holds (the 100 ms sleep paces the polling; it is not the sync).
    fn wait_for(&self, what: &str, timeout: Duration, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; the screen shows:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
}

#[test]
fn console_end_to_end_in_tmux() {
    if !on_path("tmux") {
        println!("SKIPPED: tmux not installed (.ci/run installs it)");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_deltalink");
    let tmp = tempfile::tempdir().expect("tempdir");
    let lake = tmp.path().join("demo-lake");
    let built = Process::new(bin)
        .arg("demo")
        .arg(&lake)
        .args(["--no-console", "--commits", "20"])
        .output()
        .expect("run deltalink demo");
    assert!(built.status.success(), "demo lake: {}", String::from_utf8_lossy(&built.stderr));

    let config = tmp.path().join("tmux.conf");
    std::fs::write(&config, "set -g remain-on-exit on\nset -g status off\n").expect("tmux config");
    let tmux = Tmux { socket: format!("deltalink-e2e-{}", std::process::id()), config };
    let log = tmp.path().join("console.log");
    // Relative --config from inside the lake: the header shows no temp path.
    // The shell records the exit status: tmux's own #{pane_dead_status} is not always filled in.
    let exit_file = tmp.path().join("exit-status");
    let command =
        format!("'{bin}' --config deltalink.toml --log-file '{}'; echo $? > '{}'", log.display(), exit_file.display());
    let lake_dir = lake.to_str().expect("utf-8");
    let started = tmux.cmd(&["new-session", "-d", "-s", "console", "-x", "120", "-y", "35", "-c", lake_dir, &command]);
    assert!(started.status.success(), "tmux: {}", String::from_utf8_lossy(&started.stderr));

    let minute = Duration::from_secs(60);
    let screen = tmux.wait_for("the Upstreams view with status", minute, |s| {
        s.contains("d_daisng_ranked_affiliation") && s.contains("refreshed") && s.contains("enriched_publications")
    });
    save_screenshot("upstreams.txt", &screen);

    tmux.send(&["2"]);
    tmux.wait_for("the Pipelines view", minute, |s| s.contains("Last run") && s.contains("never run"));
    tmux.send(&["j"]);
    tmux.send(&["-l", "?"]);
    let screen = tmux.wait_for("the help overlay", minute, |s| s.contains("Keys: Pipelines"));
    save_screenshot("help.txt", &screen);
    tmux.send(&["Escape"]);
    let screen = tmux.wait_for("help to close", minute, |s| !s.contains("Keys: Pipelines"));
    save_screenshot("pipelines.txt", &screen);

    tmux.send(&["4"]);
    let screen = tmux.wait_for("the preview", Duration::from_secs(120), |s| s.contains("distinct keys"));
    save_screenshot("preview.txt", &screen);

    tmux.send(&["r"]);
    tmux.wait_for("the run confirmation", minute, |s| s.contains("Run pipeline enriched_publications now?"));
    tmux.send(&["y"]);
    tmux.send(&["6"]);
    let screen = tmux.wait_for("the run in Activity", Duration::from_secs(180), |s| {
        s.contains("run enriched_publications: run #1 written") || s.contains("run enriched_publications failed")
    });
    assert!(screen.contains("run enriched_publications: run #1 written"), "{screen}");

    tmux.send(&["3"]);
    let screen = tmux.wait_for("link rows", minute, |s| s.contains("rows 1–"));
    save_screenshot("link.txt", &screen);
    tmux.send(&["5"]);
    let screen =
        tmux.wait_for("the tracker", minute, |s| s.contains("Audit trail") && s.contains("enriched_publications"));
    save_screenshot("tracker.txt", &screen);
    reset_from_the_keyboard(&tmux, &lake);
    replay_from_the_keyboard(&tmux, &lake);

    tmux.send(&["6"]);
    let screen = tmux.wait_for("Activity", minute, |s| s.contains("Activity ·"));
    save_screenshot("activity.txt", &screen);

    tmux.send(&["q"]);
    let exit = || std::fs::read_to_string(&exit_file).unwrap_or_default().trim().to_string();
    tmux.wait_for("the console to exit", minute, |_| !exit().is_empty());
    assert_eq!(exit(), "0", "exit status; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
}

/// The Processed column of a tracker row as the screen shows it.
fn shown_version(screen: &str, pipeline: &str, upstream: &str) -> Option<i64> {
    screen.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.windows(2).position(|w| w == [pipeline, upstream])?;
        words.get(at + 2)?.parse().ok()
    })
}

/// The tracker row on disk, read with the library as any other process would.
fn tracker_on_disk(lake: &Path, pipeline: &str, upstream: &str) -> TrackerRow {
    let config = Config::load(lake.join("deltalink.toml")).expect("the demo lake's config");
    let rows = crate::common::rt().block_on(async {
        let tracker = deltalink::Engine::new(config).tracker().await.expect("open the tracker");
        tracker.rows(Some(pipeline)).await.expect("tracker rows")
    });
    rows.into_iter().find(|r| r.upstream == upstream).expect("the tracker row on disk")
}

/// In the Tracker view after the run: reset enriched_publications/publications back by two
/// commits through the form (dry run, reason, confirmation), then check that the screen, the
/// tracker on disk and the audit trail all show it.
/// From the Tracker view (publications of enriched_publications selected): replay versions 0
/// to latest of publications into a scratch table, confirm, and find the replay in the audit
/// trail on screen and the scratch table on disk.
fn replay_from_the_keyboard(tmux: &Tmux, lake: &Path) {
    let (minute, reason) = (Duration::from_secs(60), "e2e replay check");
    tmux.send(&["P"]);
    tmux.wait_for("the replay form", minute, |s| s.contains("Replay enriched_publications") && s.contains("‹ publications ›"));
    tmux.send(&["-l", "0"]);
    tmux.send(&["Tab", "Tab"]); // from → to → into
    tmux.send(&["-l", "replay-check"]);
    tmux.send(&["Tab"]);
    tmux.send(&["-l", reason]);
    tmux.send(&["Enter"]);
    let screen = tmux.wait_for("the replay dry run", minute, |s| s.contains("Enter again to confirm") || s.contains("error"));
    assert!(screen.contains("Dry run:") && screen.contains("keys, into") && screen.contains("replay-check"), "{screen}");
    assert!(!lake.join("replay-check").exists(), "a dry run writes nothing");
    tmux.send(&["Enter"]);
    tmux.wait_for("the replay confirmation", minute, |s| s.contains("Replay enriched_publications into"));
    tmux.send(&["y"]);
    let screen = tmux.wait_for("the replay in the audit trail", minute, |s| {
        s.lines().any(|l| l.contains(" replay ") && l.contains("enriched_publications") && l.contains(reason))
    });
    save_screenshot("tracker_after_replay.txt", &screen);
    assert!(lake.join("replay-check/_delta_log").exists(), "the scratch link table was written");
}

fn reset_from_the_keyboard(tmux: &Tmux, lake: &Path) {
    let (pipeline, upstream, reason) = ("enriched_publications", "publications", "e2e shift back");
    let minute = Duration::from_secs(60);
    let before = tracker_on_disk(lake, pipeline, upstream).last_processed_version.expect("processed after the run");
    assert!(before >= 2, "the run processed too little to shift back by 2: v{before}");

    tmux.send(&["j"]); // rows are sorted: author_publication_link, then publications
    tmux.send(&["e"]);
    tmux.wait_for("the reset form", minute, |s| s.contains("Reset the tracker of enriched_publications"));
    tmux.wait_for("the form scoped to publications", minute, |s| s.contains("‹ publications ›"));
    tmux.send(&["Right", "Right", "Right"]); // target: version → earliest → latest → shift by
    tmux.wait_for("the shift target", minute, |s| s.contains("‹ shift by ›"));
    tmux.send(&["Tab"]);
    tmux.send(&["-l", "--", "-2"]); // `--`: the value starts with a dash
    tmux.send(&["Enter"]);
    let screen = tmux.wait_for("the dry run", minute, |s| s.contains("Enter again to confirm") || s.contains("error"));
    assert!(screen.contains("Dry run:") && screen.contains("re-read 2"), "{screen}");
    save_screenshot("reset_form.txt", &screen);
    tmux.send(&["Tab"]);
    tmux.send(&["-l", reason]);
    tmux.send(&["Enter"]);
    let screen = tmux.wait_for("the reset confirmation", minute, |s| s.contains(&format!("reason: {reason}")));
    // Large resets ask for the pipeline name, small ones for y.
    if screen.contains(&format!("type `{pipeline}`")) {
        tmux.send(&["-l", pipeline]);
        tmux.send(&["Enter"]);
    } else {
        tmux.send(&["y"]);
    }
    let after = before - 2;
    // The audit trail's row of the reset: action, pipeline and the reason typed above.
    let audited = |s: &str| s.lines().any(|l| l.contains(" reset ") && l.contains(pipeline) && l.contains(reason));
    let screen = tmux.wait_for("the reset row and its audit entry", minute, |s| {
        shown_version(s, pipeline, upstream) == Some(after) && audited(s)
    });
    save_screenshot("tracker_after_reset.txt", &screen);

    let row = tracker_on_disk(lake, pipeline, upstream);
    assert_eq!(row.last_processed_version, Some(after), "tracker on disk: {row:?}");
    let other = tracker_on_disk(lake, pipeline, "author_publication_link");
    assert_eq!(shown_version(&screen, pipeline, "author_publication_link"), other.last_processed_version, "{screen}");
}
