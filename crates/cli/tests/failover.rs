//! Automatic failover, as real `rocketlog` processes on 127.0.0.1: three nameservers run the
//! controller, one broker group has three replicas in `sync` mode with
//! `min_in_sync_replicas = 2`, and official Python client producers send without pause while
//! the harness breaks things. The clients reach the group through one address in front of it
//! (the fault-injecting proxy, as a Kubernetes Service would be): before each fault it is
//! pointed at a replica that the fault spares, as a Service routes to live pods, and that
//! replica passes the calls to whichever replica is master. Each replica reaches each
//! nameserver through a proxy of its own. One fault per cycle:
//!
//! - SIGKILL the master;
//! - SIGSTOP it: a paused master must be fenced, and on waking rejoin as a slave without
//!   acknowledging anything;
//! - cut the master off from the controller (its proxies hold every byte): it must stop
//!   acknowledging once its lease runs out, and rejoin as a slave once the link heals;
//! - SIGKILL a controller member;
//! - SIGKILL the master, then the controller leader while the election is pending.
//!
//! After each fault the harness waits for a new master, measures the longest time the
//! producers went without a successful send, heals the fault and waits until all three
//! replicas are in the sync-state set again (with a new master and epoch, unless only a controller member was
//! lost). At the end every acknowledged message must be readable from the group: none lost.
//!
//! `ROCKETLOG_TEST_FAILOVER_CYCLES` sets the number of cycles (default 5, one of each fault).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rocketlog_tests::{process, venv, FaultProxy};

const BIN: &str = env!("CARGO_BIN_EXE_rocketlog");
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);
const GROUP: &str = "fo-a";

/// A `rocketlog` process; killed when dropped.
struct Proc {
    name: String,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    args: Vec<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.cont();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn start(name: &str, args: Vec<String>) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(&args);
        let started = process::start_announced(cmd, WAIT);
        Proc {
            name: name.to_owned(),
            child: started.child,
            log: started.log,
            args,
        }
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
    }

    fn stop(&self) {
        self.signal("-STOP");
    }

    fn cont(&self) {
        self.signal("-CONT");
    }

    fn kill(&mut self) {
        self.cont();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.kill();
        *self = Proc::start(&self.name.clone(), self.args.clone());
    }

    fn logs(&self) -> String {
        let lines = self.log.lock().unwrap();
        let tail = lines.len().saturating_sub(200);
        lines[tail..].join("\n")
    }
}

/// A port that was free a moment ago (the configuration must name every member's port
/// before any starts).
/// The nameservers check signatures (`[nameserver.auth]`): the Raft traffic between them, the
/// brokers' heartbeats and elections, and `admin controller status` are all signed with this.
const NS_ACCESS_KEY: &str = "cluster";
const NS_SECRET_KEY: &str = "cluster-secret-key";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Cluster {
    _dir: tempfile::TempDir,
    nameservers: Vec<Proc>,
    ns_addrs: Vec<String>,
    brokers: BTreeMap<u64, Proc>,
    clients: BTreeMap<u64, String>,
    /// The one address clients use.
    front: FaultProxy,
    /// Per replica, its links to the nameservers.
    ns_links: BTreeMap<u64, Vec<FaultProxy>>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ns_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let ns_addrs: Vec<String> = ns_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let peers: Vec<String> = ns_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("\"{}={a}\"", i + 1))
            .collect();
        let mut nameservers = Vec::new();
        for (i, addr) in ns_addrs.iter().enumerate() {
            let id = i + 1;
            let path = dir.path().join(format!("ns{id}.toml"));
            std::fs::write(
                &path,
                format!(
                    r#"
[nameserver.auth]
enabled = true
access_key = "{NS_ACCESS_KEY}"
secret_key = "{NS_SECRET_KEY}"

[nameserver.controller]
enabled = true
node_id = {id}
peers = [{peers}]
data_dir = "{data}"
"#,
                    peers = peers.join(", "),
                    data = dir.path().join(format!("ns{id}")).display()
                ),
            )
            .expect("nameserver config");
            nameservers.push(Proc::start(
                &format!("nameserver {id}"),
                vec![
                    "--config".into(),
                    path.display().to_string(),
                    "nameserver".into(),
                    "--listen".into(),
                    addr.clone(),
                ],
            ));
        }
        let mut brokers = BTreeMap::new();
        let mut clients = BTreeMap::new();
        let mut ns_links = BTreeMap::new();
        for id in 1..=3u64 {
            let data = dir.path().join(format!("b{id}"));
            let client = format!("127.0.0.1:{}", free_port());
            let path = dir.path().join(format!("b{id}.toml"));
            // Each replica reaches each nameserver through a proxy of its own, so that one
            // replica can be cut off from the controller alone.
            let links: Vec<FaultProxy> = ns_addrs
                .iter()
                .map(|a| FaultProxy::start(a.parse().expect("address")).expect("proxy"))
                .collect();
            let via: Vec<String> = links.iter().map(|l| l.address().to_string()).collect();
            ns_links.insert(id, links);
            std::fs::write(&path, broker_config(&data, id, &via)).expect("broker config");
            brokers.insert(
                id,
                Proc::start(
                    &format!("broker {id}"),
                    vec![
                        "--config".into(),
                        path.display().to_string(),
                        "broker".into(),
                        "--listen".into(),
                        client.clone(),
                    ],
                ),
            );
            clients.insert(id, client);
        }
        let front = FaultProxy::start(clients[&1].parse().expect("address")).expect("proxy");
        Cluster {
            _dir: dir,
            nameservers,
            ns_addrs,
            brokers,
            clients,
            front,
            ns_links,
        }
    }

    fn endpoints(&self) -> String {
        self.front.address().to_string()
    }

    /// Sends the clients to replica `id` from now on: open connections are closed and new
    /// ones go there.
    fn route_clients_to(&self, id: u64) {
        self.front
            .retarget(self.clients[&id].parse().expect("address"));
        self.front.heal();
    }

    fn all_logs(&self) -> String {
        let mut out = String::new();
        for p in self.nameservers.iter().chain(self.brokers.values()) {
            out.push_str(&format!("--- {} ---\n{}\n", p.name, p.logs()));
        }
        out
    }

    /// `admin controller status`, asked of the running members.
    fn status(&self) -> Option<Status> {
        let out = Command::new(BIN)
            .args(["admin", "--controller", &self.ns_addrs.join(",")])
            .args(["controller", "status"])
            .env("ROCKETLOG_ACCESS_KEY", NS_ACCESS_KEY)
            .env("ROCKETLOG_SECRET_KEY", NS_SECRET_KEY)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        Status::parse(&String::from_utf8_lossy(&out.stdout))
    }

    /// Waits until the group has a master whose sync-state set holds all three replicas and
    /// whose controller has a leader; returns that status.
    fn wait_healthy(&self, what: &str) -> Status {
        let deadline = Instant::now() + WAIT * 2;
        loop {
            if let Some(s) = self.status() {
                if s.leader != 0 && s.master != 0 && s.sync_state.len() == 3 {
                    return s;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the group did not get back to a master with 3 replicas in sync; last \
                 status {:?}\n{}",
                self.status(),
                self.all_logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn broker_config(data: &Path, id: u64, nameservers: &[String]) -> String {
    let ns: Vec<String> = nameservers.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
[broker]
broker_name = "{GROUP}"
broker_id = {id}
data_dir = "{data}"
flush_mode = "sync"
max_body_size = 1048576
nameserver_addresses = [{ns}]
heartbeat_interval_ms = 2000
replication_listen = "127.0.0.1:0"
shutdown_grace_ms = 2000

[broker.store]
segment_size = 4194304
consume_queue_segment_entries = 4096
index_entries_per_file = 20000
index_slots = 5003

[broker.receive]
min_invisible_duration_ms = 1000
min_long_polling_ms = 1000
max_long_polling_ms = 3000

[broker.auth]
nameserver_access_key = "{NS_ACCESS_KEY}"
nameserver_secret_key = "{NS_SECRET_KEY}"

[broker.replication]
mode = "sync"
min_in_sync_replicas = 2
sync_timeout_ms = 3000
heartbeat_interval_ms = 200
state_interval_ms = 200
controller = true
"#,
        data = data.display(),
        ns = ns.join(", ")
    )
}

/// What `admin controller status` printed, as far as the test needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Status {
    leader: u64,
    master: u64,
    epoch: u64,
    sync_state: Vec<u64>,
}

impl Status {
    fn parse(text: &str) -> Option<Status> {
        let leader = text
            .lines()
            .next()?
            .split("leader ")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .unwrap_or(0);
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("group {GROUP}:")))?;
        let word = |after: &str| {
            line.split(after)
                .nth(1)?
                .split_whitespace()
                .next()
                .map(str::to_owned)
        };
        let set = line.split("sync-state [").nth(1)?.split(']').next()?;
        Some(Status {
            leader,
            master: word("master ")?.parse().unwrap_or(0),
            epoch: word("epoch ")?.parse().ok()?,
            sync_state: set
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect(),
        })
    }
}

/// The controller member that leads, by index into `nameservers`.
fn leader_index(s: &Status) -> usize {
    (s.leader as usize).saturating_sub(1)
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

/// Milliseconds from `fault` to the end of the first successful send that started after it,
/// once that send is in the timeline (a send that hangs through the failover counts until it
/// ends).
fn recovered_after(timeline: &Path, fault: u64) -> Option<u64> {
    std::fs::read_to_string(timeline)
        .ok()?
        .lines()
        .filter_map(|line| {
            let mut w = line.split_whitespace();
            let started = w.next()?.parse::<u64>().ok()?;
            let ended = w.next()?.parse::<u64>().ok()?;
            (w.next() == Some("ok") && started >= fault).then(|| ended - fault)
        })
        .min()
}

/// The longest stretch between successful sends ending from `from` to `to` (from `from` to
/// the first of them counts too): how long producers could not get a send through.
fn longest_gap(timeline: &Path, from: u64, to: u64) -> u64 {
    let mut ends: Vec<u64> = std::fs::read_to_string(timeline)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut w = line.split_whitespace();
            let _started = w.next()?;
            let ended = w.next()?.parse::<u64>().ok()?;
            (w.next() == Some("ok") && ended >= from && ended <= to).then_some(ended)
        })
        .collect();
    ends.sort_unstable();
    let mut last = from;
    let mut gap = 0;
    for e in ends {
        gap = gap.max(e - last);
        last = e;
    }
    gap
}

/// Per second after `fault`: sends that succeeded and failed.
fn outcomes_per_second(timeline: &Path, fault: u64) -> Vec<(u64, u32, u32)> {
    let mut out: BTreeMap<u64, (u32, u32)> = BTreeMap::new();
    for line in std::fs::read_to_string(timeline)
        .unwrap_or_default()
        .lines()
    {
        let mut w = line.split_whitespace();
        let _started = w.next();
        if let (Some(Ok(t)), Some(what)) = (w.next().map(str::parse::<u64>), w.next()) {
            if t >= fault {
                let e = out.entry((t - fault) / 1000).or_default();
                if what == "ok" {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
            }
        }
    }
    out.into_iter().map(|(s, (ok, f))| (s, ok, f)).collect()
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillMaster,
    PauseMaster,
    KillControllerMember,
    KillMasterThenControllerLeader,
    CutMasterFromController,
}

const FAULTS: [Fault; 5] = [
    Fault::KillMaster,
    Fault::PauseMaster,
    Fault::CutMasterFromController,
    Fault::KillControllerMember,
    Fault::KillMasterThenControllerLeader,
];

fn cycles() -> usize {
    std::env::var("ROCKETLOG_TEST_FAILOVER_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FAULTS.len())
}

fn python(
    cluster: &Cluster,
    env: &[(&str, String)],
    timeout_secs: u64,
) -> (Command, tempfile::TempDir) {
    let (mut cmd, home) =
        venv::script_command("replication.py", &cluster.endpoints(), timeout_secs);
    cmd.env("ROCKETLOG_INVISIBLE_SECS", "5")
        .env("ROCKETLOG_AWAIT_SECS", "2")
        .env("ROCKETLOG_REPL_TOPIC", "failover-topic");
    for (k, v) in env {
        cmd.env(k, v);
    }
    (cmd, home)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[test]
fn the_controller_replaces_a_failed_master_and_no_acknowledged_message_is_lost() {
    let mut cluster = Cluster::start();
    let first = cluster.wait_healthy("start");
    let work = tempfile::tempdir().expect("work");
    let state = work.path().join("acked");
    let timeline = work.path().join("timeline");
    let stop: PathBuf = work.path().join("stop");
    let (mut cmd, _home) = python(
        &cluster,
        &[
            ("ROCKETLOG_REPL_PHASE", "failover".into()),
            ("ROCKETLOG_REPL_STATE", state.display().to_string()),
            ("ROCKETLOG_REPL_TIMELINE", timeline.display().to_string()),
            ("ROCKETLOG_REPL_STOP", stop.display().to_string()),
            ("ROCKETLOG_REPL_PRODUCERS", "2".into()),
            ("ROCKETLOG_REPL_SECONDS", "1500".into()),
        ],
        1800,
    );
    // Files, not pipes: nobody reads the producers' output until they end.
    let out_path = work.path().join("producers.out");
    let err_path = work.path().join("producers.err");
    let mut producers = cmd
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("python");
    let mut failovers = Vec::new();
    let mut epoch = first.epoch;
    for cycle in 0..cycles() {
        let fault = FAULTS[cycle % FAULTS.len()];
        let before = cluster.wait_healthy(&format!("cycle {cycle} before {fault:?}"));
        assert!(
            before.epoch >= epoch,
            "epochs only grow: {epoch} then {before:?}"
        );
        epoch = before.epoch;
        let acked = lines(&state);
        let deadline = Instant::now() + WAIT;
        while lines(&state) < acked + 100 {
            assert!(
                producers.try_wait().expect("python").is_none(),
                "cycle {cycle}: the producers stopped:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default()
            );
            assert!(
                Instant::now() < deadline,
                "cycle {cycle}: the producers are not getting sends through\n{}\n--- producers ---\n{}\n{}",
                cluster.all_logs(),
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
            std::thread::sleep(POLL);
        }
        let master = before.master;
        let spared = (1..=3).find(|id| *id != master).expect("a slave");
        cluster.route_clients_to(spared);
        let acked = lines(&state);
        let deadline = Instant::now() + WAIT;
        while lines(&state) < acked + 20 {
            assert!(
                Instant::now() < deadline,
                "cycle {cycle}: no send got through replica {spared}\n{}",
                cluster.all_logs()
            );
            std::thread::sleep(POLL);
        }
        let at = now_ms();
        match fault {
            Fault::KillMaster => cluster.brokers.get_mut(&master).expect("master").kill(),
            Fault::PauseMaster => cluster.brokers[&master].stop(),
            Fault::CutMasterFromController => {
                for link in &cluster.ns_links[&master] {
                    link.cut();
                }
            }
            Fault::KillControllerMember => {
                let follower = (0..3)
                    .find(|i| *i != leader_index(&before))
                    .expect("a follower");
                cluster.nameservers[follower].kill();
            }
            Fault::KillMasterThenControllerLeader => {
                cluster.brokers.get_mut(&master).expect("master").kill();
                // Half-way through the master timeout, the leader that was watching it goes.
                std::thread::sleep(Duration::from_millis(1_500));
                cluster.nameservers[leader_index(&before)].kill();
            }
        }
        // Recovered: the master moved (a new epoch), or for a lost controller member a few
        // seconds went by; then a send started after that point succeeded.
        let deadline = Instant::now() + WAIT;
        let moves = !matches!(fault, Fault::KillControllerMember);
        let settled = loop {
            let now = now_ms();
            if !moves && now >= at + 3_000 {
                break now;
            }
            if moves
                && cluster
                    .status()
                    .is_some_and(|s| s.master != master && s.master != 0 && s.epoch > before.epoch)
            {
                break now;
            }
            assert!(
                Instant::now() < deadline,
                "cycle {cycle} ({fault:?}): no new master within {WAIT:?}; status {:?}\n{}",
                cluster.status(),
                cluster.all_logs()
            );
            std::thread::sleep(POLL);
        };
        let recovered = loop {
            if let Some(ms) = recovered_after(&timeline, settled) {
                break settled + ms;
            }
            assert!(
                Instant::now() < deadline,
                "cycle {cycle} ({fault:?}): the producers did not recover within {WAIT:?}; \
                 status {:?}\n{}",
                cluster.status(),
                cluster.all_logs()
            );
            std::thread::sleep(POLL);
        };
        // The longest the producers went without a success around the fault.
        let took = longest_gap(&timeline, at, recovered);
        let after = cluster.status();
        if took > 10_000 {
            // Slower than the target: the logs say where the time went.
            let per_second = outcomes_per_second(&timeline, at);
            let client = std::fs::read_to_string(&err_path).unwrap_or_default();
            let client_tail: Vec<&str> = client.lines().rev().take(80).collect();
            println!(
                "cycle {cycle}: slow recovery ({took} ms) after the fault at {at} ms:\n{}\n--- sends per second after the fault (ok, failed) ---\n{per_second:?}\n--- client log tail ---\n{}",
                cluster.all_logs(),
                client_tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        println!(
            "cycle {cycle}: {fault:?} of master {master} (epoch {}): no successful send for \
             {took} ms; now {after:?}",
            before.epoch
        );
        failovers.push((fault, took));
        // Heal.
        match fault {
            Fault::KillMaster => cluster.brokers.get_mut(&master).expect("master").restart(),
            Fault::PauseMaster => cluster.brokers[&master].cont(),
            Fault::CutMasterFromController => {
                for link in &cluster.ns_links[&master] {
                    link.heal();
                }
            }
            Fault::KillControllerMember => {
                for ns in &mut cluster.nameservers {
                    if ns.child.try_wait().ok().flatten().is_some() {
                        ns.restart();
                    }
                }
            }
            Fault::KillMasterThenControllerLeader => {
                cluster.brokers.get_mut(&master).expect("master").restart();
                cluster.nameservers[leader_index(&before)].restart();
            }
        }
        if !matches!(fault, Fault::KillControllerMember) {
            let s = cluster.wait_healthy(&format!("cycle {cycle} after {fault:?}"));
            assert_ne!(
                s.master,
                master,
                "cycle {cycle}: {fault:?} did not move the master\n{}",
                cluster.all_logs()
            );
            assert!(s.epoch > before.epoch, "cycle {cycle}: no new epoch: {s:?}");
        }
    }
    cluster.wait_healthy("end");
    std::fs::write(&stop, b"stop").expect("stop file");
    let deadline = Instant::now() + Duration::from_secs(120);
    while producers.try_wait().expect("python").is_none() {
        assert!(Instant::now() < deadline, "the producers did not stop");
        std::thread::sleep(POLL);
    }
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(
        stdout.lines().any(|l| l.starts_with("PASS ")),
        "the producers failed:\n{stdout}\n{}",
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    let acked = lines(&state);
    let (mut cmd, _home) = python(
        &cluster,
        &[
            ("ROCKETLOG_REPL_PHASE", "read".into()),
            ("ROCKETLOG_REPL_STATE", state.display().to_string()),
        ],
        300,
    );
    let read = process::run(&mut cmd, Duration::from_secs(320)).expect("reader");
    let summary = read
        .stdout
        .lines()
        .find(|l| l.starts_with("READ "))
        .unwrap_or_default()
        .to_owned();
    assert!(
        read.success() && read.stdout.lines().any(|l| l.starts_with("PASS ")),
        "acknowledged messages are missing after the failovers ({acked} acknowledged):\n{}\n{}\n{}",
        read.stdout,
        read.stderr,
        cluster.all_logs()
    );
    let mut times: Vec<u64> = failovers
        .iter()
        .filter(|(f, _)| !matches!(f, Fault::KillControllerMember))
        .map(|(_, t)| *t)
        .collect();
    times.sort_unstable();
    println!(
        "failover: {} cycles, {acked} acknowledged, {summary}; master failover ms p50 {} p99 {} max {}; \
         per cycle {failovers:?}",
        failovers.len(),
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        times.last().copied().unwrap_or(0)
    );
}
