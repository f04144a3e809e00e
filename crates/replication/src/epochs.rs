//! Epoch history: which master epoch wrote which range of the commit log, as RocketMQ 5's
//! `EpochFileCache`.
//!
//! Every time a broker becomes master it starts a new epoch, numbered higher than any epoch
//! before it, at its log end. Each replica keeps the list of `(epoch, start offset)` entries
//! for the bytes it holds; a byte at offset `o` was written by the last epoch starting at or
//! before `o`. Because one epoch has exactly one master and that master only appends, the
//! pair (epoch, offset) names one byte for the whole group: two logs whose histories share an
//! epoch entry hold the same bytes up to where the shorter of them stops holding that epoch.
//! That is how [`divergence`] finds where a replica's log stops being a prefix of its
//! master's without comparing bytes.
//!
//! The argument needs one thing of the caller: **an epoch's bytes are written once**. A master
//! that restarts (and may have lost an unflushed tail that a slave already holds) must begin a
//! new epoch before it appends again, never carry on in the old one; and epoch numbers must
//! never be reused, even ones dropped from a history by [`EpochHistory::truncate_to`].

use thiserror::Error;

/// One epoch of the history: the epoch number and the log offset of its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The master epoch.
    pub epoch: u64,
    /// Offset of the first byte this epoch wrote (or will write, if it wrote nothing yet).
    pub start_offset: u64,
}

/// The epochs that wrote a log, oldest first: epochs strictly increasing, start offsets
/// non-decreasing. Two entries may share a start offset; the older one then wrote nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<EpochEntry>,
}

/// An epoch entry that would break the ordering of a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EpochError {
    /// Epochs must strictly increase.
    #[error("epoch {epoch} does not come after the last epoch {last}: epochs must increase")]
    EpochNotNewer {
        /// The epoch offered.
        epoch: u64,
        /// The newest epoch of the history.
        last: u64,
    },
    /// An epoch cannot start before the epoch it follows.
    #[error(
        "epoch {epoch} would start at offset {start_offset}, before epoch {last_epoch} \
         which starts at {last_start}"
    )]
    StartsBeforeLast {
        /// The epoch offered.
        epoch: u64,
        /// Where it would start.
        start_offset: u64,
        /// The newest epoch of the history.
        last_epoch: u64,
        /// Where that epoch starts.
        last_start: u64,
    },
}

impl EpochHistory {
    /// An empty history: a log no epoch has written yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A history of `entries`, oldest first, checked the way [`EpochHistory::begin`] checks
    /// each new one.
    pub fn from_entries(entries: Vec<EpochEntry>) -> Result<Self, EpochError> {
        let mut history = Self {
            entries: Vec::with_capacity(entries.len()),
        };
        for entry in entries {
            history.begin(entry.epoch, entry.start_offset)?;
        }
        Ok(history)
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest entry, if any.
    pub fn last(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Starts `epoch` at `start_offset`. Refused if `epoch` is not above the newest epoch or
    /// `start_offset` is below the newest epoch's start.
    pub fn begin(&mut self, epoch: u64, start_offset: u64) -> Result<(), EpochError> {
        if let Some(last) = self.last() {
            if epoch <= last.epoch {
                return Err(EpochError::EpochNotNewer {
                    epoch,
                    last: last.epoch,
                });
            }
            if start_offset < last.start_offset {
                return Err(EpochError::StartsBeforeLast {
                    epoch,
                    start_offset,
                    last_epoch: last.epoch,
                    last_start: last.start_offset,
                });
            }
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        Ok(())
    }

    /// The epoch that wrote the byte at `offset`: the newest entry starting at or before it.
    /// `None` before the first entry. Past the log end this answers the epoch writing now.
    pub fn epoch_at(&self, offset: u64) -> Option<u64> {
        let after = self.entries.partition_point(|e| e.start_offset <= offset);
        after.checked_sub(1).map(|i| self.entries[i].epoch)
    }

    /// Where `epoch`'s range ends in a log ending at `log_end`: the next entry's start, or
    /// `log_end` for the newest epoch. `None` if the history has no such epoch.
    pub fn end_of(&self, epoch: u64, log_end: u64) -> Option<u64> {
        self.index_of(epoch).map(|i| self.end_at(i, log_end))
    }

    /// Forgets the epochs of bytes that are gone after the log was truncated to `offset`.
    ///
    /// Entries starting after `offset` are dropped: nothing they wrote remains. Entries
    /// starting before it are kept. Of the entries starting exactly at `offset`, which now
    /// hold no byte, only the newest is kept: it is the epoch that writes at `offset` next
    /// if this log's master carries on, and keeping it means this history still knows the
    /// highest epoch it has seen at its end, so an older master cannot be followed by
    /// mistake. The older ones at the same offset are empty ranges and say nothing.
    pub fn truncate_to(&mut self, offset: u64) {
        let below = self.entries.partition_point(|e| e.start_offset < offset);
        let through = self.entries.partition_point(|e| e.start_offset <= offset);
        self.entries.truncate(through);
        if through > below {
            self.entries.drain(below..through - 1);
        }
    }

    fn index_of(&self, epoch: u64) -> Option<usize> {
        self.entries.binary_search_by_key(&epoch, |e| e.epoch).ok()
    }

    fn end_at(&self, index: usize, log_end: u64) -> u64 {
        self.entries
            .get(index + 1)
            .map_or(log_end, |next| next.start_offset)
    }
}

/// Where a replica's log stops being a prefix of its master's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Divergence {
    /// The replica must truncate its log (and its history) to this offset before following;
    /// equal to its log end when nothing has to go.
    pub truncate_to: u64,
    /// The newest epoch both histories share, if any.
    pub common_epoch: Option<u64>,
}

/// Where the replica's log (`local`, ending at `local_end`) stops agreeing with the master's
/// (`master`, ending at `master_end`), as RocketMQ's `findConsistentPoint`.
///
/// Walking the replica's epochs from the newest, the first that the master has with the same
/// start offset is the newest shared one, and both logs hold that epoch's bytes up to where
/// the shorter of them stops: the point is the smaller of the two ends of that epoch.
///
/// With no shared epoch nothing the replica holds is known to be the master's: the point is
/// 0, except when neither side has recorded an epoch at all (logs written before epochs were
/// kept), where the shorter log end is the best there is. The point never exceeds either
/// log end, whatever the peer claims.
pub fn divergence(
    local: &EpochHistory,
    local_end: u64,
    master: &EpochHistory,
    master_end: u64,
) -> Divergence {
    let shorter_end = local_end.min(master_end);
    for (ours, entry) in local.entries.iter().enumerate().rev() {
        let Some(theirs) = master.index_of(entry.epoch) else {
            continue;
        };
        // The same epoch at another start means one history is wrong; don't trust it.
        if master.entries[theirs].start_offset != entry.start_offset {
            continue;
        }
        let shared = local
            .end_at(ours, local_end)
            .min(master.end_at(theirs, master_end));
        return Divergence {
            truncate_to: shared.min(shorter_end),
            common_epoch: Some(entry.epoch),
        };
    }
    let nothing_recorded = local.entries.is_empty() && master.entries.is_empty();
    Divergence {
        truncate_to: if nothing_recorded { shorter_end } else { 0 },
        common_epoch: None,
    }
}

/// A replica holds less than the group acknowledged to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{bytes} bytes behind what the group acknowledged")]
pub struct BehindBy {
    /// How many acknowledged bytes the replica lacks.
    pub bytes: u64,
}

/// Whether a replica holding `replica_durable` bytes durably may become master of a group
/// that acknowledged sends up to `group_acknowledged`: promoting one that holds less would
/// lose acknowledged messages.
pub fn check_promotable(replica_durable: u64, group_acknowledged: u64) -> Result<(), BehindBy> {
    match group_acknowledged.checked_sub(replica_durable) {
        Some(bytes) if bytes > 0 => Err(BehindBy { bytes }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(entries: &[(u64, u64)]) -> EpochHistory {
        let entries = entries
            .iter()
            .map(|&(epoch, start_offset)| EpochEntry {
                epoch,
                start_offset,
            })
            .collect();
        EpochHistory::from_entries(entries).expect("test history is ordered")
    }

    #[test]
    fn begin_checks_ordering() {
        let mut h = EpochHistory::new();
        h.begin(3, 100).unwrap();
        h.begin(4, 100).unwrap();
        assert_eq!(
            h.begin(4, 200),
            Err(EpochError::EpochNotNewer { epoch: 4, last: 4 })
        );
        assert_eq!(
            h.begin(2, 200),
            Err(EpochError::EpochNotNewer { epoch: 2, last: 4 })
        );
        let err = h.begin(5, 99).unwrap_err();
        assert_eq!(
            err.to_string(),
            "epoch 5 would start at offset 99, before epoch 4 which starts at 100"
        );
        assert_eq!(h, history(&[(3, 100), (4, 100)]));
        assert_eq!(
            h.last(),
            Some(EpochEntry {
                epoch: 4,
                start_offset: 100
            })
        );
    }

    #[test]
    fn from_entries_rejects_disorder() {
        let entry = |epoch, start_offset| EpochEntry {
            epoch,
            start_offset,
        };
        assert!(EpochHistory::from_entries(vec![entry(1, 0), entry(1, 10)]).is_err());
        assert!(EpochHistory::from_entries(vec![entry(1, 10), entry(2, 0)]).is_err());
        assert_eq!(EpochHistory::from_entries(vec![]), Ok(EpochHistory::new()));
    }

    #[test]
    fn epoch_at_and_end_of() {
        let h = history(&[(1, 0), (2, 100), (3, 100), (5, 250)]);
        let at = |o| h.epoch_at(o);
        assert_eq!(
            (at(0), at(99), at(100), at(249), at(250), at(u64::MAX)),
            (Some(1), Some(1), Some(3), Some(3), Some(5), Some(5))
        );
        assert_eq!(history(&[(1, 10)]).epoch_at(9), None);
        assert_eq!(EpochHistory::new().epoch_at(0), None);
        assert_eq!(h.end_of(1, 400), Some(100));
        assert_eq!(h.end_of(2, 400), Some(100));
        assert_eq!(h.end_of(3, 400), Some(250));
        assert_eq!(h.end_of(5, 400), Some(400));
        assert_eq!(h.end_of(4, 400), None);
    }

    #[test]
    fn truncate_to_table() {
        let full = [(1, 0), (2, 100), (3, 100), (4, 200)];
        let cases: &[(u64, &[(u64, u64)])] = &[
            (300, &full),
            (201, &full),
            // Epoch 4 wrote nothing that is left, but it is the one writing at 200.
            (200, &full),
            (199, &[(1, 0), (2, 100), (3, 100)]),
            (101, &[(1, 0), (2, 100), (3, 100)]),
            // Two epochs start at 100 and hold nothing now: only the newer stays.
            (100, &[(1, 0), (3, 100)]),
            (99, &[(1, 0)]),
            (0, &[(1, 0)]),
        ];
        for &(offset, want) in cases {
            let mut h = history(&full);
            h.truncate_to(offset);
            assert_eq!(h, history(want), "truncate_to({offset})");
        }
        let mut h = history(&[(1, 5)]);
        h.truncate_to(4);
        assert_eq!(h, EpochHistory::new());
    }

    #[test]
    fn divergence_table() {
        struct Case {
            name: &'static str,
            local: &'static [(u64, u64)],
            local_end: u64,
            master: &'static [(u64, u64)],
            master_end: u64,
            truncate_to: u64,
            common_epoch: Option<u64>,
        }
        let cases = [
            Case {
                name: "identical",
                local: &[(1, 0), (2, 100)],
                local_end: 300,
                master: &[(1, 0), (2, 100)],
                master_end: 300,
                truncate_to: 300,
                common_epoch: Some(2),
            },
            Case {
                name: "replica ahead in the same epoch",
                local: &[(1, 0), (2, 100)],
                local_end: 300,
                master: &[(1, 0), (2, 100)],
                master_end: 250,
                truncate_to: 250,
                common_epoch: Some(2),
            },
            Case {
                name: "replica behind: nothing to truncate",
                local: &[(1, 0)],
                local_end: 80,
                master: &[(1, 0), (2, 100)],
                master_end: 300,
                truncate_to: 80,
                common_epoch: Some(1),
            },
            Case {
                name: "replica behind by a whole epoch boundary",
                local: &[(1, 0)],
                local_end: 100,
                master: &[(1, 0), (2, 100)],
                master_end: 300,
                truncate_to: 100,
                common_epoch: Some(1),
            },
            Case {
                name: "divergent tail of an old epoch cut by the new master",
                local: &[(1, 0), (2, 100)],
                local_end: 400,
                master: &[(1, 0), (2, 100), (3, 250)],
                master_end: 500,
                truncate_to: 250,
                common_epoch: Some(2),
            },
            Case {
                name: "replica has an epoch the master never had",
                local: &[(1, 0), (2, 100), (4, 300)],
                local_end: 400,
                master: &[(1, 0), (2, 100), (3, 250)],
                master_end: 500,
                truncate_to: 250,
                common_epoch: Some(2),
            },
            Case {
                name: "same epoch number at another start is not shared",
                local: &[(1, 0), (2, 120)],
                local_end: 400,
                master: &[(1, 0), (2, 100)],
                master_end: 500,
                truncate_to: 100,
                common_epoch: Some(1),
            },
            Case {
                name: "no common epoch",
                local: &[(2, 0)],
                local_end: 400,
                master: &[(3, 0)],
                master_end: 500,
                truncate_to: 0,
                common_epoch: None,
            },
            Case {
                name: "replica without epochs but bytes, master with epochs",
                local: &[],
                local_end: 400,
                master: &[(1, 0)],
                master_end: 500,
                truncate_to: 0,
                common_epoch: None,
            },
            Case {
                name: "empty histories",
                local: &[],
                local_end: 400,
                master: &[],
                master_end: 300,
                truncate_to: 300,
                common_epoch: None,
            },
            Case {
                name: "empty replica",
                local: &[],
                local_end: 0,
                master: &[(1, 0), (2, 100)],
                master_end: 300,
                truncate_to: 0,
                common_epoch: None,
            },
            Case {
                name: "peer claims an end below its own epoch start",
                local: &[(1, 0), (2, 100)],
                local_end: 300,
                master: &[(1, 0), (2, 100)],
                master_end: 50,
                truncate_to: 50,
                common_epoch: Some(2),
            },
        ];
        for c in cases {
            let got = divergence(
                &history(c.local),
                c.local_end,
                &history(c.master),
                c.master_end,
            );
            let want = Divergence {
                truncate_to: c.truncate_to,
                common_epoch: c.common_epoch,
            };
            assert_eq!(got, want, "{}", c.name);
        }
    }

    #[test]
    fn promotable_only_when_holding_everything_acknowledged() {
        assert_eq!(check_promotable(100, 100), Ok(()));
        assert_eq!(check_promotable(150, 100), Ok(()));
        assert_eq!(check_promotable(0, 0), Ok(()));
        let err = check_promotable(60, 100).unwrap_err();
        assert_eq!(err, BehindBy { bytes: 40 });
        assert_eq!(
            err.to_string(),
            "40 bytes behind what the group acknowledged"
        );
        assert_eq!(
            check_promotable(0, u64::MAX),
            Err(BehindBy { bytes: u64::MAX })
        );
    }
}
