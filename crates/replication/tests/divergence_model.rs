//! `divergence` against a model of a broker group's true history.
//!
//! The model: a sequence of masters with increasing epochs. The first starts on an empty log;
//! each later one was a replica of some earlier master, holding a prefix of that master's log
//! (so the earlier master's unreplicated tail is cut), and appends its own bytes. A byte is
//! named by (epoch that wrote it, offset), which is what makes two logs agree at an offset.
//! A replica holds a prefix of some master's log — possibly a tail the current master never
//! had — with the epoch entries that the real code (truncate_to, begin) gives it. The point
//! `divergence` returns must be exactly the longest common prefix of its log and the current
//! master's.

use proptest::prelude::*;
use rocketlog_replication::{divergence, EpochHistory};

/// (epoch that wrote the byte, its offset).
type Byte = (u64, u64);

#[derive(Debug, Clone)]
struct Node {
    log: Vec<Byte>,
    history: EpochHistory,
}

/// How one master came to be: the earlier master it copied, how much of its log it held,
/// how many bytes it appended, how far its epoch jumps, and whether it lacks the entry of an
/// epoch starting exactly where its copy ends (it never got a byte of that epoch).
#[derive(Debug, Clone)]
struct Election {
    base: usize,
    cut: usize,
    append: usize,
    epoch_gap: u64,
    lacks_entry_at_cut: bool,
}

/// Which prefix of which master's log the replica holds.
#[derive(Debug, Clone)]
struct Replica {
    of: usize,
    len: usize,
    lacks_entry_at_end: bool,
}

fn election() -> impl Strategy<Value = Election> {
    (
        any::<usize>(),
        any::<usize>(),
        0usize..6,
        1u64..3,
        any::<bool>(),
    )
        .prop_map(
            |(base, cut, append, epoch_gap, lacks_entry_at_cut)| Election {
                base,
                cut,
                append,
                epoch_gap,
                lacks_entry_at_cut,
            },
        )
}

fn replica() -> impl Strategy<Value = Replica> {
    (any::<usize>(), any::<usize>(), any::<bool>()).prop_map(|(of, len, lacks_entry_at_end)| {
        Replica {
            of,
            len,
            lacks_entry_at_end,
        }
    })
}

/// `history` as a replica holding `len` bytes of its log has it.
fn history_of_prefix(history: &EpochHistory, len: u64, lacks_entry_at_end: bool) -> EpochHistory {
    let mut history = history.clone();
    history.truncate_to(len);
    if lacks_entry_at_end && history.last().is_some_and(|e| e.start_offset == len) {
        let mut entries = history.entries().to_vec();
        entries.pop();
        history = EpochHistory::from_entries(entries).expect("a prefix of an ordered history");
    }
    history
}

fn masters(elections: &[Election]) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut epoch = 0;
    for (i, e) in elections.iter().enumerate() {
        epoch += e.epoch_gap;
        let (mut log, mut history) = match nodes.get(e.base % i.max(1)).filter(|_| i > 0) {
            Some(base) => {
                let cut = e.cut % (base.log.len() + 1);
                let history = history_of_prefix(&base.history, cut as u64, e.lacks_entry_at_cut);
                (base.log[..cut].to_vec(), history)
            }
            None => (Vec::new(), EpochHistory::new()),
        };
        let start = log.len() as u64;
        history
            .begin(epoch, start)
            .expect("epochs increase, starts follow the log");
        log.extend((start..start + e.append as u64).map(|offset| (epoch, offset)));
        nodes.push(Node { log, history });
    }
    nodes
}

fn common_prefix(a: &[Byte], b: &[Byte]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn divergence_is_the_longest_common_prefix(
        elections in prop::collection::vec(election(), 1..7),
        master_len in any::<usize>(),
        r in replica(),
    ) {
        let nodes = masters(&elections);
        let current = nodes.last().expect("at least one master");
        // The current master may be looked at before it appended everything.
        let own_start = current.history.last().map_or(0, |e| e.start_offset as usize);
        let master_len = own_start + master_len % (current.log.len() - own_start + 1);
        let master_log = &current.log[..master_len];

        let source = &nodes[r.of % nodes.len()];
        let local_len = r.len % (source.log.len() + 1);
        let local_log = &source.log[..local_len];
        let local = history_of_prefix(&source.history, local_len as u64, r.lacks_entry_at_end);

        let got = divergence(&local, local_len as u64, &current.history, master_len as u64);
        let want = common_prefix(local_log, master_log) as u64;
        prop_assert_eq!(got.truncate_to, want, "local {:?}\nmaster {:?}", local, current.history);
        if let Some(epoch) = got.common_epoch {
            prop_assert!(local.entries().iter().any(|e| e.epoch == epoch));
            prop_assert!(current.history.entries().iter().any(|e| e.epoch == epoch));
        }

        // Once truncated there, the replica is a prefix of the master: nothing more to cut.
        let mut truncated = local.clone();
        truncated.truncate_to(got.truncate_to);
        let again = divergence(&truncated, got.truncate_to, &current.history, master_len as u64);
        prop_assert_eq!(again.truncate_to, got.truncate_to);
    }
}
