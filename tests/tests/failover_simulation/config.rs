//! What a run is configured with, what it reports, and how it fails.

use std::fmt;

use super::faults::FaultMode;
use super::replica::Rules;

#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    /// Faults and writes happen in `0..run_ms`; then every fault heals.
    pub run_ms: u64,
    /// How long the healed group may take to settle.
    pub settle_ms: u64,
    pub faults: FaultMode,
    pub leader_changes: bool,
    /// Operators move mastership now and then (the elector's manual election).
    pub switch_overs: bool,
    pub drop_per_mille: u64,
    /// Share of messages delayed 300 to 2 000 ms (the rest take 0 to 300 ms).
    pub slow_per_mille: u64,
    pub write_gap_ms: (u64, u64),
    pub rules: Rules,
    /// Check after every append that each replica's epoch history names the epoch of its
    /// records (off only to let a scenario show what a wrong label leads to).
    pub check_epoch_labels: bool,
    /// Keep every line of the trace, not only the tail of the notable ones.
    pub full_trace: bool,
}

impl Config {
    /// The configuration of a random run: one seed in five with several faults at once.
    pub fn for_seed(seed: u64) -> Self {
        let multi = seed % 5 == 0;
        Config {
            seed,
            run_ms: 60_000,
            settle_ms: 60_000,
            faults: if multi {
                FaultMode::Multi
            } else {
                FaultMode::Single
            },
            leader_changes: true,
            switch_overs: true,
            drop_per_mille: if multi { 30 } else { 10 },
            slow_per_mille: 20,
            write_gap_ms: (5, 120),
            rules: Rules::default(),
            check_epoch_labels: true,
            full_trace: false,
        }
    }

    /// No random fault, no loss, short delays: what scenarios script on.
    pub fn quiet(seed: u64) -> Self {
        Config {
            faults: FaultMode::Quiet,
            leader_changes: false,
            switch_overs: false,
            drop_per_mille: 0,
            slow_per_mille: 0,
            ..Config::for_seed(seed)
        }
    }
}

/// What one or many runs did, for the summary line.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub seeds: u64,
    pub multi_fault_seeds: u64,
    pub elections: u64,
    pub acked: u64,
    pub writes: u64,
    pub truncations: u64,
    /// Failovers with no other fault before the next master's first acknowledgement, and
    /// those with one.
    pub failovers: u64,
    pub compound_failovers: u64,
    pub failover_ms_total: u64,
    /// Over the seeds with one fault at a time, and over all.
    pub max_failover_single_ms: u64,
    pub max_failover_ms: u64,
    pub failed_seeds: u64,
    pub refused_after_lease: u64,
    pub leader_changes: u64,
    pub switch_overs: u64,
    pub faults: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.seeds += o.seeds;
        self.multi_fault_seeds += o.multi_fault_seeds;
        self.elections += o.elections;
        self.acked += o.acked;
        self.writes += o.writes;
        self.truncations += o.truncations;
        self.failovers += o.failovers;
        self.compound_failovers += o.compound_failovers;
        self.failover_ms_total += o.failover_ms_total;
        self.max_failover_single_ms = self.max_failover_single_ms.max(o.max_failover_single_ms);
        self.max_failover_ms = self.max_failover_ms.max(o.max_failover_ms);
        self.failed_seeds += o.failed_seeds;
        self.refused_after_lease += o.refused_after_lease;
        self.leader_changes += o.leader_changes;
        self.switch_overs += o.switch_overs;
        self.faults += o.faults;
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mean = self.failover_ms_total / self.failovers.max(1);
        write!(
            f,
            "seeds {} ({} with several faults at once, {} broke an invariant), elections {}, \
             acknowledged writes {} of {} sent, truncations {}, failovers {} (master fault to \
             first ack by the next master: mean {mean} ms, max {} ms with one fault at a time, \
             {} ms overall; {} more with further faults before it), sends refused for an expired lease {}, controller leader changes \
             {}, switch-overs {}, replica faults {}",
            self.seeds,
            self.multi_fault_seeds,
            self.failed_seeds,
            self.elections,
            self.acked,
            self.writes,
            self.truncations,
            self.failovers,
            self.max_failover_single_ms,
            self.max_failover_ms,
            self.compound_failovers,
            self.refused_after_lease,
            self.leader_changes,
            self.switch_overs,
            self.faults
        )
    }
}

/// A broken invariant, with what is needed to replay it.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    /// A random run (replayed by `ROCKETLOG_SIM_SEED`), not a scripted scenario.
    pub random: bool,
    pub at_ms: u64,
    pub what: String,
    pub trace: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.random {
            write!(f, "ROCKETLOG_SIM_SEED={}", self.seed)?;
        } else {
            write!(f, "scripted scenario (seed {})", self.seed)?;
        }
        writeln!(f, " failed at t={} ms: {}", self.at_ms, self.what)?;
        writeln!(f, "last events:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}
