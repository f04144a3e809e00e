//! The real binary on a nearly full disk, driven by the official Python client
//! (`tests/python/disk_full.py`).
//!
//! The broker runs on a 96 MiB tmpfs mounted in a private mount namespace (`unshare`, kept alive
//! by a holder process, so the file system survives a broker restart and vanishes with the
//! test); `nsenter` runs the broker and the file-system commands inside it. Messages are sent,
//! then another process fills the disk, and the broker must keep working as far as the disk
//! allows: sends fail with the "service not available" status, every acknowledged message
//! stays readable by a new consumer group and findable by id while the index cannot grow, the
//! index catches up once room returns, without a restart, and everything survives a restart.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rocketlog_tests::{process, venv};

const BIN: &str = env!("CARGO_BIN_EXE_rocketlog");
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
/// Room left on the file system after it is filled: less than a new index file must leave
/// free for consume-queue files (two 1 MB files with the settings below), more than the
/// consumption journal needs.
const LEFT_FREE: u64 = 1536 << 10;

/// A private mount namespace holding a tmpfs at `dir`, for as long as this value lives.
struct Tmpfs {
    holder: Child,
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let mut holder = Command::new("unshare")
            .args([
                "--mount",
                "--map-root-user",
                "--propagation",
                "private",
                "sh",
                "-c",
            ])
            .arg(format!(
                "mount -t tmpfs -o size={size} tmpfs \"$0\" && echo mounted && exec sleep 3600"
            ))
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unshare (util-linux) runs");
        let mut line = String::new();
        let out = holder.stdout.take().expect("stdout");
        BufReader::new(out).read_line(&mut line).expect("read");
        assert_eq!(
            line.trim(),
            "mounted",
            "cannot mount a tmpfs in a private mount namespace (needs unshare and user \
             namespaces, or root)"
        );
        Tmpfs {
            holder,
            dir: dir.to_owned(),
        }
    }

    /// `program` run inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("--target")
            .arg(self.holder.id().to_string())
            .args(["--mount", "--user", "--preserve-credentials", "--"])
            .arg(program);
        c
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.command(program).args(args).output().expect("nsenter");
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Bytes available to unprivileged writers.
    fn available(&self) -> u64 {
        let dir = self.dir.to_string_lossy().into_owned();
        let out = self.run("stat", &["-f", "--format=%a %S", &dir]);
        let mut fields = out
            .split_whitespace()
            .map(|f| f.parse::<u64>().expect("number"));
        let (blocks, block_size) = (fields.next().expect("blocks"), fields.next().expect("size"));
        blocks * block_size
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The broker process and what it printed.
struct Broker {
    child: Child,
    client: String,
    stderr: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Broker {
    fn start(fs: &Tmpfs) -> Broker {
        let data = fs.dir.join("data");
        let mut child = fs
            .command(BIN)
            .args([
                "standalone",
                "--listen",
                "127.0.0.1:0",
                "--nameserver-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&data)
            .env("RUST_LOG", "info")
            .env(
                "ROCKETLOG_BROKER__STORE__SEGMENT_SIZE",
                (8 << 20).to_string(),
            )
            // 1 MB consume-queue files and small index files (about 200 messages each), so
            // that the index needs new files while the disk is full.
            .env(
                "ROCKETLOG_BROKER__STORE__CONSUME_QUEUE_SEGMENT_ENTRIES",
                "50000",
            )
            .env("ROCKETLOG_BROKER__STORE__INDEX_ENTRIES_PER_FILE", "400")
            .env("ROCKETLOG_BROKER__STORE__INDEX_SLOTS", "101")
            .env("ROCKETLOG_BROKER__STORE__DISK_USE_RATIO_LIMIT", "1.0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rocketlog");
        let (err_tx, stderr) = mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        let (out_tx, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = out_tx.send(line);
            }
        });
        let line = stdout.recv_timeout(WAIT).expect("readiness line");
        let client = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("client="))
            .unwrap_or_else(|| panic!("no client= in {line:?}"))
            .to_owned();
        Broker {
            child,
            client,
            stderr,
            log: Vec::new(),
        }
    }

    fn drain_log(&mut self) -> &[String] {
        while let Ok(line) = self.stderr.try_recv() {
            self.log.push(line);
        }
        &self.log
    }

    /// Polls the log until a line contains `text`.
    fn wait_for_log(&mut self, text: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.drain_log().iter().any(|l| l.contains(text)) {
            assert!(
                Instant::now() < deadline,
                "no log line with {text:?} within {WAIT:?}:\n{}",
                self.log.join("\n")
            );
            std::thread::sleep(POLL);
        }
    }

    /// Log lines at WARN or ERROR.
    fn problems(&mut self) -> Vec<String> {
        self.drain_log()
            .iter()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .cloned()
            .collect()
    }

    fn stop(mut self) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "exit {status:?}:\n{}",
                    self.drain_log().join("\n")
                );
                return;
            }
            assert!(Instant::now() < deadline, "no exit within {WAIT:?}");
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one phase of `disk_full.py`; returns its stdout.
fn phase(
    broker: &mut Broker,
    suffix: &str,
    state: &Path,
    name: &str,
    count: Option<u32>,
) -> String {
    let python = venv::python().unwrap_or_else(|e| panic!("the Python virtualenv: {e}"));
    let dir = venv::scripts_dir();
    let home = tempfile::tempdir().expect("home");
    let mut cmd = Command::new(python);
    cmd.current_dir(&dir)
        .arg("-u")
        .arg(dir.join("disk_full.py"))
        .arg(&broker.client)
        .arg(suffix)
        .env("HOME", home.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("ROCKETLOG_SCENARIO_TIMEOUT", "120")
        .env("ROCKETLOG_DISK_PHASE", name)
        .env("ROCKETLOG_DISK_STATE", state);
    if let Some(n) = count {
        cmd.env("ROCKETLOG_DISK_COUNT", n.to_string());
    }
    let run = process::run(&mut cmd, Duration::from_secs(150)).expect("python");
    let passed = run.success() && run.stdout.lines().any(|l| l.starts_with("PASS "));
    assert!(
        passed,
        "disk_full.py {name} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- broker ---\n{}",
        run.describe(),
        run.stdout,
        run.stderr,
        broker.drain_log().join("\n")
    );
    run.stdout
}

fn acked(state: &Path) -> Vec<String> {
    std::fs::read_to_string(state)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// How many of `ids` the admin CLI finds by message id.
fn found_by_id(broker: &Broker, ids: &[String]) -> usize {
    ids.iter()
        .filter(|id| {
            Command::new(BIN)
                .args(["admin", "--broker", &broker.client, "message", "id", id])
                .output()
                .expect("admin")
                .status
                .success()
        })
        .count()
}

#[test]
fn a_nearly_full_disk_keeps_acknowledged_messages_readable_and_recovers_without_restart() {
    let mount = tempfile::tempdir().expect("mount point");
    let fs = Tmpfs::mount(mount.path(), "96m");
    let work = tempfile::tempdir().expect("state dir");
    let state = work.path().join("acked");
    let suffix = format!("{}", std::process::id());
    let mut broker = Broker::start(&fs);

    phase(&mut broker, &suffix, &state, "fill", Some(150));
    // Another process takes the disk, leaving less than a new index file needs.
    let filler = fs.dir.join("filler").to_string_lossy().into_owned();
    let take = fs.available().saturating_sub(LEFT_FREE);
    fs.run("fallocate", &["-l", &take.to_string(), &filler]);
    let out = phase(&mut broker, &suffix, &state, "fill", None);
    let full = out.lines().find(|l| l.starts_with("FULL ")).unwrap_or("?");
    let ids = acked(&state);
    let read = phase(&mut broker, &suffix, &state, "read", None);
    let latest: Vec<String> = ids.iter().rev().take(10).cloned().collect();
    let found = found_by_id(&broker, &latest);
    let problems = broker.problems();
    println!(
        "full disk: {full}; acked {}; {}; found by id {found} of {}; {} WARN/ERROR lines",
        ids.len(),
        read.lines().find(|l| l.starts_with("READ ")).unwrap_or("?"),
        latest.len(),
        problems.len()
    );
    assert_eq!(found, latest.len(), "messages acked while full found by id");
    assert!(
        broker
            .drain_log()
            .iter()
            .any(|l| l.contains("index cannot keep up")),
        "the index stopped for want of room (or the test no longer fills the disk enough)"
    );
    assert!(
        problems.len() <= 10,
        "one warning per state change, not per retry; got {}:\n{}",
        problems.len(),
        problems.join("\n")
    );

    // Room returns: the index catches up and sends work again, without a restart.
    fs.run("rm", &[&filler]);
    broker.wait_for_log("index caught up");
    phase(&mut broker, &suffix, &state, "fill", Some(5));
    let ids = acked(&state);
    let latest: Vec<String> = ids.iter().rev().take(20).cloned().collect();
    assert_eq!(found_by_id(&broker, &latest), latest.len());

    // And everything survives a clean restart.
    broker.stop();
    let mut broker = Broker::start(&fs);
    phase(&mut broker, &suffix, &state, "read", None);
    assert_eq!(found_by_id(&broker, &latest), latest.len());
    broker.stop();
}
