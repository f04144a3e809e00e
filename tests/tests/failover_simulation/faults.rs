//! What can go wrong, as actions on the simulated world, and the random fault plans.

use super::net::Node;
use super::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// Only what a scenario scripts.
    Quiet,
    /// At most one replica faulty at a time (crashed, paused or partitioned).
    Single,
    /// Every replica faulty on its own schedule, so several at once.
    Multi,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Crash(u64),
    Restart(u64),
    /// SIGSTOP: nothing is processed; what arrives waits for `Resume`.
    Pause(u64),
    Resume(u64),
    /// Messages from the first node to the second are lost.
    Cut(Node, Node),
    Mend(Node, Node),
    /// The controller members lose their leader; that many uncommitted proposals still land.
    LeaderLost {
        survivors: usize,
    },
    /// A member becomes leader (the soft state is lost, whichever member it is).
    LeaderBack,
    /// Loses the leader the moment an election is proposed, and elects one again later.
    LeaderLostOnNextElection {
        survivors: usize,
        back_after_ms: u64,
    },
    /// An operator moves mastership to this replica.
    SwitchOver(u64),
    /// A random fault ended: the next one of this lane may be planned.
    FaultOver {
        lane: u64,
        replica: u64,
    },
}

/// Cuts (or, with `mend`, restores) both directions between `id` and the chosen others.
pub fn isolation(id: u64, controller: bool, peers: bool, mend: bool) -> Vec<Action> {
    let me = Node::Replica(id);
    let mut others = Vec::new();
    if controller {
        others.push(Node::Controller);
    }
    if peers {
        others.extend((1..=3).filter(|&p| p != id).map(Node::Replica));
    }
    let mut actions = Vec::new();
    for other in others {
        for (a, b) in [(me, other), (other, me)] {
            actions.push(if mend {
                Action::Mend(a, b)
            } else {
                Action::Cut(a, b)
            });
        }
    }
    actions
}

/// A random fault on `id`: what starts it, what ends it, and how long it lasts.
pub fn random_fault(rng: &mut Rng, id: u64) -> (Vec<Action>, Vec<Action>, u64, &'static str) {
    // Short ones end before the lease does, medium ones before the master timeout, long ones
    // after it.
    let duration = match rng.below(3) {
        0 => rng.between(100, 1_500),
        1 => rng.between(1_500, 4_000),
        _ => rng.between(4_000, 10_000),
    };
    let (start, end, what) = match rng.below(6) {
        0 => (vec![Action::Crash(id)], vec![Action::Restart(id)], "crash"),
        1 => (vec![Action::Pause(id)], vec![Action::Resume(id)], "pause"),
        2 => (
            isolation(id, true, false, false),
            isolation(id, true, false, true),
            "cut from the controller",
        ),
        3 => (
            isolation(id, false, true, false),
            isolation(id, false, true, true),
            "cut from its peers",
        ),
        4 => (
            isolation(id, true, true, false),
            isolation(id, true, true, true),
            "cut from everyone",
        ),
        _ => {
            let others: Vec<Node> = std::iter::once(Node::Controller)
                .chain((1..=3).filter(|&p| p != id).map(Node::Replica))
                .collect();
            let other = others[rng.below(others.len() as u64) as usize];
            let me = Node::Replica(id);
            let (a, b) = if rng.chance(500) {
                (me, other)
            } else {
                (other, me)
            };
            (
                vec![Action::Cut(a, b)],
                vec![Action::Mend(a, b)],
                "one-way cut",
            )
        }
    };
    (start, end, duration, what)
}
