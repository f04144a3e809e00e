//! `[broker.console]`.

use serde::{Deserialize, Serialize};

/// `[broker.console]`: the web console on the HTTP port.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Serve the console on the `metrics_listen` port (default true; without that port there
    /// is no console).
    pub enabled: bool,
    /// How often consumer lag is sampled for the console's charts, ms (default 15 000).
    pub lag_sample_interval_ms: u64,
    /// How much lag history is kept in memory, ms (default 3 600 000 = one hour).
    pub lag_history_ms: u64,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            enabled: true,
            lag_sample_interval_ms: 15_000,
            lag_history_ms: 60 * 60 * 1000,
        }
    }
}
