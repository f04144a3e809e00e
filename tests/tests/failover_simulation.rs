//! Deterministic simulation of a broker group's failover: the controller's real
//! `ControllerState` and `Elector`, three replicas built on the real `SyncTracker`,
//! `EpochHistory` and `divergence`, a simulated network (delay, loss, reordering,
//! partitions) and simulated faults (crashes, SIGSTOP pauses, controller leader changes), on
//! a simulated clock. No runtime, no real time: a seed is one exact run.
//!
//! The invariants are stated in `failover_simulation/checker.rs` and checked after every
//! event against the ground truth (real logs, the committed record), not against what any
//! node believes.
//!
//! ```sh
//! cargo test -p rocketlog-tests --test failover_simulation -- --nocapture   # 500 seeds + scenarios
//! ROCKETLOG_SIM_SEEDS=5000 cargo test -p rocketlog-tests --test failover_simulation random -- --nocapture
//! ROCKETLOG_SIM_SEED=42 cargo test -p rocketlog-tests --test failover_simulation random -- --nocapture
//! ```
//!
//! `ROCKETLOG_SIM_SEED` replays one seed and prints its full trace.
//!
//! Besides the random seeds: scripted scenarios (a paused master resuming after a
//! failover, a controller leader change during an election, a slave cut off from its
//! master), checks that the checker notices a master ignoring its lease or admitting a
//! newcomer on lag alone, and a rejoin after an epoch the new master never had.

#[path = "failover_simulation/mod.rs"]
mod sim;

use sim::config::{Config, Failure, Stats};
use sim::faults::{isolation, Action};
use sim::net::Node;
use sim::replica::Rules;
use sim::world::World;

const DEFAULT_SEEDS: u64 = 500;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

fn ok<T>(r: Result<T, Failure>) -> T {
    r.unwrap_or_else(|f| panic!("{f}"))
}

/// Runs the given seeds on every core; each seed is independent, so the split changes
/// nothing in any run.
fn run_seeds(seeds: &[u64], config: fn(u64) -> Config) -> (Stats, Vec<Failure>) {
    let workers = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .clamp(1, 8);
    let results: Vec<(Stats, Vec<Failure>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    let mut stats = Stats::default();
                    let mut failures = Vec::new();
                    for &seed in seeds.iter().skip(w).step_by(workers) {
                        let (s, failure) = World::new(config(seed)).run();
                        stats.add(&s);
                        failures.extend(failure);
                    }
                    (stats, failures)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a simulation worker panicked"))
            .collect()
    });
    let mut stats = Stats::default();
    let mut failures = Vec::new();
    for (s, f) in results {
        stats.add(&s);
        failures.extend(f);
    }
    failures.sort_by_key(|f| f.seed);
    (stats, failures)
}

/// The failing seeds, grouped by the start of what broke.
fn by_kind(failures: &[Failure]) -> String {
    let mut kinds: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for f in failures {
        let kind: String = f
            .what
            .split(':')
            .next()
            .unwrap_or_default()
            .chars()
            .take(60)
            .collect();
        kinds.entry(kind).or_default().push(f.seed);
    }
    kinds
        .iter()
        .map(|(kind, seeds)| format!("  {kind}: seeds {seeds:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn random_seeds_keep_every_invariant() {
    if let Some(seed) = env_u64("ROCKETLOG_SIM_SEED") {
        let mut world = World::new(Config {
            full_trace: true,
            ..Config::for_seed(seed)
        });
        let end = Config::for_seed(seed).run_ms;
        let result = world.run_until(end).and_then(|()| world.finish());
        for line in world.trace() {
            println!("{line}");
        }
        if let Err(f) = result {
            panic!(
                "ROCKETLOG_SIM_SEED={seed} failed at t={} ms: {}",
                f.at_ms, f.what
            );
        }
        println!("failover simulation: {}", world.stats());
        return;
    }
    let n = env_u64("ROCKETLOG_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let seeds: Vec<u64> = (1..=n).collect();
    let (stats, failures) = run_seeds(&seeds, Config::for_seed);
    println!("failover simulation: {stats}");
    if !failures.is_empty() {
        let shown: Vec<String> = failures.iter().take(3).map(|f| f.to_string()).collect();
        panic!(
            "{} of {n} seeds broke an invariant (replay one with ROCKETLOG_SIM_SEED=<n>):\n{}\n\n{}",
            failures.len(),
            by_kind(&failures),
            shown.join("\n")
        );
    }
    assert!(stats.acked > 0 && stats.elections > stats.seeds);
}

/// The replica other than `master` with the lowest id.
fn a_slave(master: u64) -> u64 {
    (1..=3).find(|&id| id != master).expect("three replicas")
}

fn acks_by(w: &World, replica: u64, from: u64, to: u64) -> usize {
    w.acks()
        .iter()
        .filter(|a| a.replica == replica && (from..to).contains(&a.at))
        .count()
}

/// Lets a quiet group elect its first master and acknowledge for a while.
fn started(seed: u64, rules: Rules) -> (World, u64) {
    let mut w = World::new(Config {
        rules,
        full_trace: true,
        ..Config::quiet(seed)
    });
    ok(w.run_until(5_000));
    let master = w.record().master.expect("a first master within 5 s");
    assert!(
        acks_by(&w, master, 0, 5_000) > 0,
        "the first master acknowledges"
    );
    (w, master)
}

/// Stops the master with sends parked (its slaves' acks held back a moment) and resumes it
/// long after a new master took over; returns the world and the old master.
fn pause_master_across_a_failover(rules: Rules) -> (World, u64, Result<(), Failure>) {
    let (mut w, old) = started(11, rules);
    for s in (1..=3).filter(|&s| s != old) {
        w.at(5_000, Action::Cut(Node::Replica(s), Node::Replica(old)));
        w.at(5_400, Action::Mend(Node::Replica(s), Node::Replica(old)));
    }
    w.at(5_300, Action::Pause(old));
    w.at(12_000, Action::Resume(old));
    let result = w.run_until(20_000);
    (w, old, result)
}

#[test]
fn a_paused_master_resumes_after_a_new_one_was_elected_and_does_not_acknowledge() {
    let (mut w, old, result) = pause_master_across_a_failover(Rules::default());
    ok(result);
    assert_eq!(
        acks_by(&w, old, 5_300, u64::MAX),
        0,
        "the paused master acknowledged after it was stopped"
    );
    let new = w.record().master.expect("a master");
    assert_ne!(
        new, old,
        "a new master took over while the old one was stopped"
    );
    assert!(
        acks_by(&w, new, 5_300, 12_000) > 0,
        "the new master acknowledged while the old one was stopped"
    );
    assert!(
        w.stats().refused_after_lease > 0,
        "on resuming, the old master released parked sends and refused them (lease expired)"
    );
    assert_eq!(
        w.replica(old).following(),
        Some((new, w.record().epoch)),
        "the old master follows the new one"
    );
    ok(w.finish());
}

/// The same pause with a master that acknowledges whatever its lease says: the checker must
/// see two replicas acknowledging at once (or out of epoch order).
#[test]
fn the_checker_catches_a_master_acknowledging_without_a_lease() {
    let rules = Rules {
        ignore_lease: true,
        ..Rules::default()
    };
    let (_, _, result) = pause_master_across_a_failover(rules);
    let failure = result.expect_err("acknowledging without a lease must break invariant 1");
    assert!(failure.what.starts_with("inv 1"), "{failure}");
}

#[test]
fn the_controller_leader_changes_during_an_election() {
    let settings = rocketlog_controller::ElectionSettings::default();
    let (lease_ms, master_timeout_ms) = (settings.lease_ms, settings.master_timeout_ms);
    for survivors in [1, 0] {
        let (mut w, old) = started(12, Rules::default());
        let epoch = w.record().epoch;
        // The master loses the controller: it may acknowledge until its lease ends, and is
        // replaced once the timeout is over; the leader is lost as that election is proposed.
        for action in isolation(old, true, false, false) {
            w.at(5_000, action);
        }
        let back_after_ms = 300;
        w.at(
            5_000,
            Action::LeaderLostOnNextElection {
                survivors,
                back_after_ms,
            },
        );
        ok(w.run_until(30_000));
        assert_eq!(w.stats().leader_changes, 1);
        let lost_at = w.leader_losses()[0];
        let elections: Vec<_> = w
            .elections()
            .iter()
            .filter(|e| e.epoch > epoch)
            .copied()
            .collect();
        let first = elections.first().expect("a new master was elected");
        assert_ne!(first.master, old);
        let first_ack = w
            .acks()
            .iter()
            .find(|a| a.epoch == first.epoch)
            .expect("the new master acknowledges")
            .at;
        let back = lost_at + back_after_ms;
        if survivors == 1 {
            // The election landed as the leader went, so its `elected` never ran: the next
            // leader fences the new master from its own start.
            assert_eq!(
                first.at, lost_at,
                "the election committed with the old leader"
            );
            assert!(
                first_ack >= back + lease_ms,
                "first ack at {first_ack}, leader back at {back}"
            );
        } else {
            // The proposal was lost: the next leader waits a whole timeout from its start.
            assert!(
                first.at >= back + master_timeout_ms,
                "elected at {}, leader back at {back}",
                first.at
            );
        }
        ok(w.finish());
    }
}

#[test]
fn a_slave_cut_off_from_the_master_leaves_the_sync_set_and_acks_go_on() {
    let (mut w, master) = started(13, Rules::default());
    let before = w.record();
    assert_eq!(before.sync_state.len(), 3, "{before:?}");
    let slave = a_slave(master);
    let (m, s) = (Node::Replica(master), Node::Replica(slave));
    w.at(5_000, Action::Cut(m, s));
    w.at(5_000, Action::Cut(s, m));
    ok(w.run_until(15_000));
    let during = w.record();
    assert_eq!(
        during.epoch, before.epoch,
        "no election: the master is fine"
    );
    assert!(
        !during.sync_state.contains(&slave) && during.sync_state.contains(&master),
        "{during:?}"
    );
    assert!(
        acks_by(&w, master, 9_000, 15_000) > 0,
        "acks go on without the cut-off slave"
    );
    w.at(15_000, Action::Mend(m, s));
    w.at(15_000, Action::Mend(s, m));
    ok(w.run_until(25_000));
    assert_eq!(
        w.record().sync_state.len(),
        3,
        "the slave is back in the set"
    );
    ok(w.finish());
}

/// A master proposing a slave into the sync-state set on lag alone (within `MAX_LAG` of its
/// end, as a bytes-behind threshold would) admits a member lacking records already
/// acknowledged: the checker must say so.
#[test]
fn the_checker_catches_a_newcomer_admitted_without_the_acknowledged_records() {
    let (_, failures) = run_seeds(&(1..=10).collect::<Vec<_>>(), |seed| Config {
        rules: Rules {
            join_on_lag_alone: true,
            ..Rules::default()
        },
        ..Config::for_seed(seed)
    });
    assert!(
        failures.iter().any(|f| f.what.starts_with("inv 2")),
        "no seed of 1..=10 broke invariant 2: {:?}",
        failures.iter().map(|f| &f.what).collect::<Vec<_>>()
    );
}

/// A master's epoch history is what the next replicas to follow it adopt, so a wrong label
/// spreads. The script (each step under the protocol, one fault at a time but the last two):
///
/// 1. R1 is master of epoch 1; R2 stops getting its records at some offset `s`, R3 goes on;
/// 2. an operator switches over to R2 (epoch 2 from `s`, set {2, 3}); R1 follows it, cutting
///    to `s` and adopting (2, s); R2 appends epoch-2 records that only R1 gets, then crashes;
/// 3. R3, the only other member, is elected for epoch 3 from its longer log (epoch-1 records
///    past `s`); R1 follows it: `divergence` says `s`, nothing is cut, R1 keeps (2, s) as the
///    newest entry at its end and adopts (3, ..): the epoch-1 records it now receives past `s`
///    are labelled epoch 2;
/// 4. R1 becomes master (epoch 4); R2 restarts and compares with R1: both histories have
///    (2, s), so `divergence` keeps R2's own epoch-2 records, which R1 never had.
///
/// The label check is off here to show where the wrong label leads: a replica admitted with
/// records its master does not have.
fn an_epoch_the_new_master_never_had(rules: Rules) -> Result<(), Failure> {
    let mut w = World::new(Config {
        rules,
        check_epoch_labels: false,
        full_trace: true,
        ..Config::quiet(21)
    });
    w.run_until(5_000)?;
    assert_eq!(w.record().master, Some(1));
    let r = Node::Replica;
    w.at(5_000, Action::Cut(r(1), r(2)));
    for (a, b) in [(2, 3), (3, 2)] {
        w.at(5_300, Action::Cut(r(a), r(b)));
        w.at(13_000, Action::Mend(r(a), r(b)));
    }
    w.at(5_500, Action::SwitchOver(2));
    w.at(6_500, Action::Mend(r(1), r(2)));
    w.at(7_400, Action::Crash(2));
    w.run_until(12_500)?;
    let record = w.record();
    assert_eq!((record.master, record.epoch), (Some(3), 3), "{record:?}");
    assert!(
        w.replica(2).log.iter().any(|&(epoch, _)| epoch == 2),
        "R2 wrote in epoch 2 before crashing"
    );
    w.at(14_000, Action::SwitchOver(1));
    w.at(17_000, Action::Restart(2));
    w.run_until(25_000)?;
    w.finish().map(|_| ())
}

#[test]
fn a_replica_rejoining_after_an_epoch_its_new_master_never_had_cuts_that_epoch() {
    ok(an_epoch_the_new_master_never_had(Rules::default()));
}

/// The same script under the follower's earlier rule (appending only the master's newer
/// epochs) breaks the epoch-label invariant: the checker catches what that rule did.
#[test]
fn adopting_only_newer_epochs_mislabels_the_new_masters_records() {
    let old_rule = Rules {
        adopt_newer_only: true,
        ..Rules::default()
    };
    assert!(
        an_epoch_the_new_master_never_had(old_rule).is_err(),
        "the checker should catch the mislabelled epochs"
    );
}

/// Seeds on which random runs broke an invariant before the fixes (stale elections, epoch
/// labels, promotion before catching up): every invariant holds now.
#[test]
fn the_seeds_that_found_bugs_pass() {
    let (_, failures) = run_seeds(
        &[158, 190, 275, 283, 434, 609, 632, 712, 779, 1403],
        Config::for_seed,
    );
    if let Some(f) = failures.first() {
        panic!("{f}");
    }
}
