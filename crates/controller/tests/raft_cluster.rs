//! Three controller members over real gRPC on 127.0.0.1: a leader is elected, commands
//! commit on every member, the group survives losing its leader, and a member restarted from
//! its data directory recovers locally and then catches up (through a snapshot, as the log it
//! missed has been purged meanwhile).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rocketlog_controller::{
    Command, ControllerNode, ControllerState, Outcome, ProposeError, RaftSettings, ReplicaInfo,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;

const WAIT: Duration = Duration::from_secs(10);

/// One running member and the gRPC server its peers reach it on.
struct Member {
    node: ControllerNode,
    stop_server: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl Member {
    async fn start(settings: RaftSettings, listener: TcpListener) -> Member {
        let node = ControllerNode::start(settings)
            .await
            .expect("member starts");
        Member::serve(node, listener)
    }

    fn serve(node: ControllerNode, listener: TcpListener) -> Member {
        let (stop_server, stopped) = oneshot::channel::<()>();
        let service = node.raft_service();
        let server = tokio::spawn(async move {
            let incoming = TcpListenerStream::new(listener);
            let res = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = res {
                eprintln!("raft server ended: {e}");
            }
        });
        Member {
            node,
            stop_server: Some(stop_server),
            server,
        }
    }

    /// Stops the member and its server, freeing its port.
    async fn stop(mut self) {
        self.node.shutdown().await;
        if let Some(tx) = self.stop_server.take() {
            let _ = tx.send(());
        }
        // Graceful shutdown waits for peers to close their connections; do not let a slow
        // one hold the test up.
        let abort = self.server.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), self.server)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

fn settings(id: u64, peers: &BTreeMap<u64, String>, dir: PathBuf) -> RaftSettings {
    RaftSettings {
        heartbeat_interval_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        // Small, so snapshots are taken and the log purged while a member is down.
        snapshot_every: 5,
        ..RaftSettings::new(id, peers.clone(), dir)
    }
}

/// Polls `f` until it yields a value, failing the test after [`WAIT`].
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leader every running member agrees on, once they do.
async fn agreed_leader(members: &BTreeMap<u64, Member>) -> u64 {
    eventually("the members to agree on a leader", || {
        let leaders: BTreeSet<Option<u64>> = members
            .values()
            .map(|m| m.node.leader().map(|(id, _)| id))
            .collect();
        match leaders.into_iter().collect::<Vec<_>>()[..] {
            [Some(id)] if members.get(&id).is_some_and(|m| m.node.is_leader()) => Some(id),
            _ => None,
        }
    })
    .await
}

/// Proposes on whichever member leads, following NotLeader answers.
async fn propose(members: &BTreeMap<u64, Member>, cmd: Command) -> Outcome {
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = agreed_leader(members).await;
        match members[&leader].node.propose(cmd.clone()).await {
            Ok(outcome) => return outcome,
            Err(ProposeError::NotLeader { .. }) if Instant::now() < deadline => continue,
            Err(e) => panic!("proposing {cmd:?}: {e}"),
        }
    }
}

/// Waits until every member has applied the same state as the leader.
async fn converged(members: &BTreeMap<u64, Member>) -> ControllerState {
    eventually("the members' states to converge", || {
        let mut states = members.values().map(|m| m.node.state());
        let first = states.next()?;
        states.all(|s| s == first).then_some(first)
    })
    .await
}

fn register(group: &str, id: u64) -> Command {
    Command::Register {
        group: group.into(),
        cluster: "c".into(),
        replica: ReplicaInfo {
            id,
            replication_address: format!("127.0.0.1:{}", 20000 + id),
            client_address: format!("127.0.0.1:{}", 10000 + id),
        },
    }
}

fn elect(group: &str, expected_epoch: u64, master: u64) -> Command {
    Command::Elect {
        group: group.into(),
        expected_epoch,
        // The set changes only by elections here, each bumping its version once.
        expected_version: expected_epoch,
        master,
        incarnation: 1,
        sync_state: [master].into(),
        unclean: false,
        reason: "test".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_fail_over_and_catch_up() {
    let mut listeners = BTreeMap::new();
    let mut addrs: BTreeMap<u64, SocketAddr> = BTreeMap::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.insert(id, l.local_addr().unwrap());
        listeners.insert(id, l);
    }
    let peers: BTreeMap<u64, String> = addrs.iter().map(|(id, a)| (*id, a.to_string())).collect();
    let dirs: BTreeMap<u64, tempfile::TempDir> = (1..=3)
        .map(|id| (id, tempfile::tempdir().unwrap()))
        .collect();

    let mut members = BTreeMap::new();
    for (id, listener) in listeners {
        let s = settings(id, &peers, dirs[&id].path().to_path_buf());
        members.insert(id, Member::start(s, listener).await);
    }

    // --- a leader is elected and commands commit on every member
    agreed_leader(&members).await;
    for id in 1..=3 {
        let out = propose(&members, register("g1", id)).await;
        assert!(matches!(out, Outcome::Applied(_)), "{out:?}");
    }
    let out = propose(&members, elect("g1", 0, 2)).await;
    let Outcome::Applied(g) = out else {
        panic!("{out:?}")
    };
    assert_eq!((g.master, g.epoch), (Some(2), 1));
    // A stale election is refused by the state machine, not by Raft.
    let out = propose(&members, elect("g1", 0, 3)).await;
    assert!(matches!(out, Outcome::Refused(_)), "{out:?}");
    let state = converged(&members).await;
    assert_eq!(state.groups["g1"].replicas.len(), 3);

    // --- a follower refuses proposals and names the leader
    // (Re-read: a slow machine may have moved leadership since.)
    let leader = agreed_leader(&members).await;
    members[&leader].node.ensure_leader().await.unwrap();
    let follower = *members.keys().find(|id| **id != leader).unwrap();
    let expected = Some((leader, peers[&leader].clone()));
    let err = members[&follower]
        .node
        .propose(register("g1", 9))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ProposeError::NotLeader {
            leader: expected.clone()
        }
    );
    let err = members[&follower].node.ensure_leader().await.unwrap_err();
    assert_eq!(err, ProposeError::NotLeader { leader: expected });
    let status = members[&follower].node.status();
    assert_eq!(status.leader.map(|(id, _)| id), Some(leader));
    assert_eq!(
        status.members,
        peers
            .iter()
            .map(|(id, a)| (*id, a.clone()))
            .collect::<Vec<_>>()
    );

    // --- the leader stops: another takes over and proposals still commit
    let old_leader = leader;
    let mut leadership = members[&follower].node.leadership();
    let term_before = members[&follower].node.status().term;
    let stopped_at = members[&old_leader].node.status().last_applied_index;
    members.remove(&old_leader).unwrap().stop().await;
    let new_leader = agreed_leader(&members).await;
    assert_ne!(new_leader, old_leader);
    assert!(members[&new_leader].node.status().term > term_before);
    // The survivors' leadership watch moved off the old leader.
    tokio::time::timeout(WAIT, leadership.wait_for(|l| *l == Some(new_leader)))
        .await
        .expect("the leadership watch reports the new leader")
        .unwrap();
    // Enough entries for snapshots to be taken and the log purged past what the stopped
    // member holds.
    for i in 0..16 {
        let out = propose(&members, register(&format!("g{}", 2 + i % 4), i)).await;
        assert!(matches!(out, Outcome::Applied(_)), "{out:?}");
    }
    let out = propose(&members, elect("g1", 1, 3)).await;
    assert!(matches!(out, Outcome::Applied(_)), "{out:?}");
    let state = converged(&members).await;
    assert_eq!(state.groups["g1"].epoch, 2);
    // The new leader purged what the stopped member would need: it must get a snapshot.
    let leader_dir = dirs[&agreed_leader(&members).await].path().to_path_buf();
    eventually("the leader to purge its log", || {
        let purged = std::fs::read(leader_dir.join("purged.json")).ok()?;
        let purged: serde_json::Value = serde_json::from_slice(&purged).ok()?;
        (purged["index"].as_u64()? > stopped_at + 1).then_some(())
    })
    .await;

    // --- the stopped member restarts from its directory: it first recovers what it had
    // committed on its own (it is not serving yet, so nobody can tell it), then catches up.
    let restarted = ControllerNode::start(settings(
        old_leader,
        &peers,
        dirs[&old_leader].path().to_path_buf(),
    ))
    .await
    .unwrap();
    eventually("the restarted member to recover its own state", || {
        let g = restarted.state().groups.get("g1").cloned()?;
        (g.epoch == 1 && g.replicas.len() == 3).then_some(())
    })
    .await;
    // (openraft restores a member that led before it stopped as leader of its old term until
    // it hears of the newer one, so `is_leader()` may briefly say yes here; nothing it
    // proposes in that old term can commit.)
    // Same address as before: the membership is static.
    let listener = TcpListener::bind(addrs[&old_leader]).await.unwrap();
    members.insert(old_leader, Member::serve(restarted, listener));
    let caught_up = converged(&members).await;
    assert_eq!(caught_up, state);
    assert_eq!(caught_up.groups.len(), 5);
    // It rejoined the existing group rather than starting one: all three agree on a leader
    // and a term.
    agreed_leader(&members).await;
    eventually("the members to agree on the term", || {
        let terms: BTreeSet<u64> = members.values().map(|m| m.node.status().term).collect();
        (terms.len() == 1).then_some(())
    })
    .await;

    // --- and the group keeps committing with all three
    let out = propose(&members, register("g9", 1)).await;
    assert!(matches!(out, Outcome::Applied(_)), "{out:?}");
    converged(&members).await;

    for (_, m) in members {
        m.stop().await;
    }
}
