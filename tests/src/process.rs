//! Running a child process to completion under a deadline, with its output captured; and
//! starting a long-running `rocketlog` server that announces itself on stdout.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often a running child is checked for exit (polling with a deadline, no fixed sleeps).
const POLL: Duration = Duration::from_millis(20);

/// What a finished (or killed) child left behind.
#[derive(Debug)]
pub struct Finished {
    /// `None` when the child was killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// "exit status 1", "killed after 120 s", ...
    pub fn describe(&self) -> String {
        match self.status {
            Some(s) => format!("{s} after {:.1} s", self.took.as_secs_f64()),
            None => format!(
                "killed at its deadline after {:.1} s",
                self.took.as_secs_f64()
            ),
        }
    }
}

fn drain(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        // A read error ends the capture; what was read so far is kept.
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn kill(child: &mut Child) {
    // The child may have exited on its own in the meantime; either way it is gone after wait.
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `cmd` (stdin closed, stdout/stderr captured) until it exits or `timeout` passes, then
/// kills it. Fails only if the process cannot be started or waited on.
pub fn run(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Finished> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {cmd:?}: {e}"))?;
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let deadline = started + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                kill(&mut child);
                break None;
            }
            Ok(None) => thread::sleep(POLL),
            Err(e) => {
                kill(&mut child);
                anyhow::bail!("waiting for {cmd:?} failed: {e}");
            }
        }
    };
    let join =
        |h: Option<JoinHandle<String>>| h.map(|h| h.join().unwrap_or_default()).unwrap_or_default();
    Ok(Finished {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
        took: started.elapsed(),
    })
}

/// A server started by [`start_announced`]: the child, the readiness line it printed and
/// every line of its stderr (its log) so far.
#[derive(Debug)]
pub struct Announced {
    pub child: Child,
    /// The `rocketlog ready …` line.
    pub ready: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Announced {
    /// The value of `name=` in the readiness line (`client`, `replication`, `nameserver`).
    pub fn field(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}=");
        self.ready
            .split_whitespace()
            .find_map(|f| f.strip_prefix(prefix.as_str()))
            .map(str::to_owned)
    }
}

/// Starts `cmd` with no `ROCKETLOG_*` variable of the test's environment (configuration comes
/// from its arguments only), `RUST_LOG` from `ROCKETLOG_TEST_BROKER_LOG` (default `info`), its
/// stderr collected line by line, and waits up to `wait` for its first stdout line (the
/// readiness line); stdout keeps being drained after that. Panics, with the log, when the line
/// does not come.
pub fn start_announced(mut cmd: Command, wait: Duration) -> Announced {
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("ROCKETLOG_")) {
        cmd.env_remove(name);
    }
    let mut child = cmd
        .env(
            "RUST_LOG",
            std::env::var("ROCKETLOG_TEST_BROKER_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let log = Arc::new(Mutex::new(Vec::new()));
    if let Some(stderr) = child.stderr.take() {
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
    }
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let ready = rx.recv_timeout(wait).unwrap_or_else(|_| {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "no readiness line within {wait:?} from {cmd:?}:\n{}",
            log.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
        )
    });
    // Later lines (none are expected) are read and dropped so the pipe never fills.
    thread::spawn(move || while rx.recv().is_ok() {});
    Announced { child, ready, log }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let done = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(done.status.and_then(|s| s.code()), Some(3));
        assert_eq!(done.stdout, "out\n");
        assert_eq!(done.stderr, "err\n");
        assert!(!done.success());
    }

    #[test]
    fn kills_at_the_deadline() {
        let done = run(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap();
        assert!(done.status.is_none(), "{}", done.describe());
        assert!(done.took < Duration::from_secs(10));
    }
}
