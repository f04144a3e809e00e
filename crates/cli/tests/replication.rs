//! Broker groups with a slave, as real `rocketlog` processes on 127.0.0.1: the slave's commit
//! log stays byte-identical to the master's through a mixed load from the official Python
//! client (normal, FIFO, delayed, transactional) and the `bench` producer; a SIGKILLed slave
//! catches up from where its log ends; `sync` sends answer HA_NOT_AVAILABLE while no slave is
//! connected and SLAVE_PERSISTENCE_TIMEOUT while the link to it is cut (a fault-injecting
//! proxy between them), and succeed again once it is back.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use rocketlog_tests::{process, run_scenario_at, venv, FaultProxy, Tuning};

const BIN: &str = env!("CARGO_BIN_EXE_rocketlog");
const SEGMENT: u64 = 4 << 20;
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// One broker process; killed when dropped.
struct Broker {
    child: Child,
    client: String,
    replication: Option<String>,
    log: Arc<Mutex<Vec<String>>>,
    data: PathBuf,
    config: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    fn start(data: &Path, config: String) -> Broker {
        std::fs::create_dir_all(data).expect("data dir");
        let path = data.with_extension("toml");
        std::fs::write(&path, config).expect("config file");
        Broker::start_with(data.to_path_buf(), path)
    }

    fn start_with(data: PathBuf, config: PathBuf) -> Broker {
        let mut cmd = Command::new(BIN);
        for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("ROCKETLOG_")) {
            cmd.env_remove(name);
        }
        let mut child = cmd
            .arg("--config")
            .arg(&config)
            .args(["broker", "--listen", "127.0.0.1:0"])
            .env(
                "RUST_LOG",
                std::env::var("ROCKETLOG_TEST_BROKER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rocketlog");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!(
                "no readiness line within {WAIT:?}:\n{}",
                log.lock().unwrap().join("\n")
            )
        });
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .map(str::to_owned)
        };
        Broker {
            client: field("client=").expect("client= in the readiness line"),
            replication: field("replication="),
            child,
            log,
            data,
            config,
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.kill();
        let again = Broker::start_with(self.data.clone(), self.config.clone());
        *self = again;
    }

    fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn logged(&self, text: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }

    /// Waits until `text` has been logged more than `before` times; on failure shows the
    /// logs of `peer` too.
    fn wait_logged(&self, text: &str, before: usize, peer: &Broker) {
        let deadline = Instant::now() + WAIT;
        while self.logged(text) <= before {
            assert!(
                Instant::now() < deadline,
                "{text:?} not logged within {WAIT:?}:\n{}\n--- peer ---\n{}",
                self.logs(),
                peer.logs()
            );
            std::thread::sleep(POLL);
        }
    }
}

fn config(data: &Path, id: u64, mode: &str, master: Option<&str>) -> String {
    let role = match master {
        None => "replication_listen = \"127.0.0.1:0\"\n".to_owned(),
        Some(_) => String::new(),
    };
    let master = master
        .map(|m| format!("master_address = \"{m}\"\n"))
        .unwrap_or_default();
    format!(
        r#"
[broker]
broker_name = "repl-a"
broker_id = {id}
data_dir = "{data}"
flush_mode = "sync"
max_body_size = 1048576
shutdown_grace_ms = 2000
{role}
[broker.store]
segment_size = {SEGMENT}
consume_queue_segment_entries = 4096
index_entries_per_file = 20000
index_slots = 5003

[broker.receive]
min_invisible_duration_ms = 1000
min_long_polling_ms = 1000
max_long_polling_ms = 3000

[broker.transaction]
first_check_delay_ms = 4000
check_interval_ms = 1000
scan_interval_ms = 100
max_checks = 60

[broker.replication]
mode = "{mode}"
min_in_sync_replicas = 2
sync_timeout_ms = 2000
heartbeat_interval_ms = 200
{master}
"#,
        data = data.display()
    )
}

/// Name and contents hash of every commit-log segment.
fn log_digest(data: &Path) -> BTreeMap<String, (u64, u32)> {
    let dir = data.join("store").join("commitlog");
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(&dir).expect("commitlog dir") {
        let e = e.expect("entry");
        let bytes = std::fs::read(e.path()).expect("segment");
        out.insert(
            e.file_name().to_string_lossy().into_owned(),
            (bytes.len() as u64, crc32c::crc32c(&bytes)),
        );
    }
    out
}

/// Waits until master and slave logs are byte-identical.
fn wait_identical(master: &Broker, slave: &Broker) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let (m, s) = (log_digest(&master.data), log_digest(&slave.data));
        if m == s {
            return m.len();
        }
        assert!(
            Instant::now() < deadline,
            "the slave's log did not become identical within {WAIT:?}:\nmaster {m:?}\nslave  {s:?}\n--- master ---\n{}\n--- slave ---\n{}",
            master.logs(),
            slave.logs()
        );
        std::thread::sleep(POLL);
    }
}

/// One phase of `tests/python/replication.py` against `master` (the broker sent to); its stdout.
fn phase(master: &Broker, state: &Path, phase: &str, expect: &str, count: u32) -> String {
    let python = venv::python().unwrap_or_else(|e| panic!("the Python virtualenv: {e}"));
    let dir = venv::scripts_dir();
    let home = tempfile::tempdir().expect("home");
    let mut cmd = Command::new(python);
    cmd.current_dir(&dir)
        .arg("-u")
        .arg(dir.join("replication.py"))
        .arg(&master.client)
        .arg(format!("{}", std::process::id()))
        .env("HOME", home.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("ROCKETLOG_SCENARIO_TIMEOUT", "90")
        .env("ROCKETLOG_INVISIBLE_SECS", "2")
        .env("ROCKETLOG_AWAIT_SECS", "2")
        .env("ROCKETLOG_REPL_PHASE", phase)
        .env("ROCKETLOG_REPL_STATE", state)
        .env("ROCKETLOG_REPL_EXPECT", expect)
        .env("ROCKETLOG_REPL_COUNT", count.to_string());
    let run = process::run(&mut cmd, Duration::from_secs(120)).expect("python");
    let passed = run.success() && run.stdout.lines().any(|l| l.starts_with("PASS "));
    assert!(
        passed,
        "replication.py {phase} ({expect}) failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- master ---\n{}",
        run.describe(),
        run.stdout,
        run.stderr,
        master.logs()
    );
    run.stdout
}

/// `rocketlog admin topic create` on the master.
fn create_topic(master: &Broker, name: &str, kind: &str) {
    let out = Command::new(BIN)
        .args(["admin", "--broker", &master.client, "topic", "create", name])
        .args(["--queues", "4", "--type", kind])
        .output()
        .expect("admin");
    assert!(
        out.status.success(),
        "creating {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn bench(master: &Broker, messages: u32) {
    let out = Command::new(BIN)
        .args(["bench", "produce", "--quiet", "--endpoint", &master.client])
        .args(["--messages", &messages.to_string()])
        .args(["--producers", "4", "--concurrency", "16", "--size", "1024"])
        .args(["--duration", "60", "--topic", "ReplBench"])
        .output()
        .expect("bench");
    assert!(
        out.status.success(),
        "bench failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_sync_slave_stays_identical_through_a_mixed_load_and_catches_up_after_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Broker::start(
        &dir.path().join("master"),
        config(&dir.path().join("master"), 0, "sync", None),
    );
    let repl = master
        .replication
        .clone()
        .expect("the master announces its replication port");
    let slave_dir = dir.path().join("slave");
    let mut slave = Broker::start(&slave_dir, config(&slave_dir, 1, "sync", Some(&repl)));
    master.wait_logged("slave connected", 0, &slave);

    // Every send below is acknowledged only once the slave holds it.
    let tuning = Tuning::default();
    let scenarios: [(&str, &[(&str, &str)]); 4] = [
        ("normal_and_tags.py", &[]),
        ("fifo.py", &[("fifo", "fifo")]),
        ("delay.py", &[("delay", "delay"), ("plain", "normal")]),
        (
            "transaction.py",
            &[("tx", "transaction"), ("txnormal", "normal")],
        ),
    ];
    for (script, topics) in scenarios {
        let suffix = format!(
            "repl-{}-{}",
            script.trim_end_matches(".py"),
            std::process::id()
        );
        for (prefix, kind) in topics {
            create_topic(&master, &format!("{prefix}-{suffix}"), kind);
        }
        run_scenario_at(&master.client, 1 << 20, script, &suffix, &tuning, &|| {
            master.logs()
        });
    }
    bench(&master, 12_000);
    let segments = wait_identical(&master, &slave);
    assert!(
        segments >= 3,
        "the load should fill several segments, got {segments}"
    );

    // The slave dies: sync sends say so, as HA_NOT_AVAILABLE, and are not acknowledged.
    let state = dir.path().join("acked");
    slave.kill();
    let connected = master.logged("slave connected");
    master.wait_logged("slave disconnected", 0, &slave);
    let out = phase(&master, &state, "send", "ha", 5);
    assert!(out.contains("SENT 0 "), "{out}");

    // Back, it catches up from its own end and sends succeed again.
    slave.restart();
    master.wait_logged("slave connected", connected, &slave);
    phase(&master, &state, "send", "ok", 50);
    bench(&master, 3_000);
    wait_identical(&master, &slave);
    let out = phase(&master, &state, "read", "ok", 0);
    assert!(out.contains("MISSING 0"), "{out}");
}

#[test]
fn a_cut_link_times_sync_sends_out_and_they_succeed_once_it_heals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master_dir = dir.path().join("master");
    let master = Broker::start(&master_dir, config(&master_dir, 0, "sync", None));
    let repl: std::net::SocketAddr = master
        .replication
        .clone()
        .expect("replication port")
        .parse()
        .expect("address");
    let proxy = FaultProxy::start(repl).expect("proxy");
    let slave_dir = dir.path().join("slave");
    let slave = Broker::start(
        &slave_dir,
        config(&slave_dir, 1, "sync", Some(&proxy.address().to_string())),
    );
    master.wait_logged("slave connected", 0, &slave);
    let state = dir.path().join("acked");
    phase(&master, &state, "send", "ok", 10);

    proxy.cut();
    let started = Instant::now();
    let out = phase(&master, &state, "send", "timeout", 3);
    assert!(out.contains("SENT 0 "), "{out}");
    println!("a send failed {:?} after the cut", started.elapsed());

    let connected = master.logged("slave connected");
    proxy.heal();
    master.wait_logged("slave connected", connected, &slave);
    phase(&master, &state, "send", "ok", 10);
    wait_identical(&master, &slave);
    let out = phase(&master, &state, "read", "ok", 0);
    assert!(out.contains("MISSING 0"), "{out}");
}
