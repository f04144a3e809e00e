//! Operator settings of transactional messages (`[broker.transaction]`), with Apache
//! RocketMQ's defaults: first check 6 s after the half message was stored, then every 30 s,
//! at most 15 checks, then roll back.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What happens to a transaction whose producer never answered `max_checks` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnMaxChecks {
    /// Discard the message (Apache RocketMQ's behaviour), logged as a warning.
    #[default]
    Rollback,
    /// Deliver the message anyway, logged as a warning.
    Commit,
}

/// Settings of transactional messages and their check-back.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransactionSettings {
    /// An unresolved half message is first checked this long after it was stored, ms
    /// (default 6 000). A producer may ask for another delay per message
    /// (`orphaned_transaction_recovery_duration`), up to `max_first_check_delay_ms`.
    pub first_check_delay_ms: u64,
    /// Between two checks of the same transaction, ms (default 30 000).
    pub check_interval_ms: u64,
    /// Checks sent before the transaction is resolved by `on_max_checks` (default 15).
    pub max_checks: u32,
    /// Resolution of a transaction still open after `max_checks` checks (default rollback).
    pub on_max_checks: OnMaxChecks,
    /// Longest first-check delay a producer may ask for, ms (default 1 h, the proxy's cap).
    pub max_first_check_delay_ms: u64,
    /// How often the checker looks for due transactions, ms (default 200).
    pub scan_interval_ms: u64,
}

impl Default for TransactionSettings {
    fn default() -> Self {
        TransactionSettings {
            first_check_delay_ms: 6_000,
            check_interval_ms: 30_000,
            max_checks: 15,
            on_max_checks: OnMaxChecks::Rollback,
            max_first_check_delay_ms: 3_600_000,
            scan_interval_ms: 200,
        }
    }
}

impl TransactionSettings {
    /// The first field that is out of range, with why.
    pub fn invalid_field(&self) -> Option<(&'static str, String)> {
        if self.check_interval_ms == 0 {
            return Some(("transaction.check_interval_ms", "must be positive".into()));
        }
        if self.max_checks == 0 {
            return Some(("transaction.max_checks", "must be positive".into()));
        }
        if self.scan_interval_ms == 0 || self.scan_interval_ms > 60_000 {
            return Some((
                "transaction.scan_interval_ms",
                "must be in 1..=60000".into(),
            ));
        }
        if self.first_check_delay_ms > self.max_first_check_delay_ms {
            return Some((
                "transaction.first_check_delay_ms",
                "is above transaction.max_first_check_delay_ms".into(),
            ));
        }
        None
    }

    pub fn check_interval(&self) -> Duration {
        Duration::from_millis(self.check_interval_ms)
    }

    pub fn scan_interval(&self) -> Duration {
        Duration::from_millis(self.scan_interval_ms)
    }

    /// Delay of the first check of a half message, given what its producer asked for.
    pub fn first_check_delay(&self, asked: Option<Duration>) -> Duration {
        let cap = Duration::from_millis(self.max_first_check_delay_ms);
        asked.map_or(Duration::from_millis(self.first_check_delay_ms), |d| {
            d.min(cap)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_apaches_and_valid() {
        let s = TransactionSettings::default();
        assert_eq!(s.invalid_field(), None);
        assert_eq!(s.first_check_delay(None), Duration::from_secs(6));
        assert_eq!(s.check_interval(), Duration::from_secs(30));
        assert_eq!(s.max_checks, 15);
        assert_eq!(s.on_max_checks, OnMaxChecks::Rollback);
        assert_eq!(
            s.first_check_delay(Some(Duration::from_secs(7200))),
            Duration::from_secs(3600)
        );
        assert_eq!(
            s.first_check_delay(Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn bad_values_are_named() {
        let s = TransactionSettings {
            max_checks: 0,
            ..Default::default()
        };
        assert_eq!(
            s.invalid_field().map(|f| f.0),
            Some("transaction.max_checks")
        );
        let s = TransactionSettings {
            check_interval_ms: 0,
            ..Default::default()
        };
        assert_eq!(
            s.invalid_field().map(|f| f.0),
            Some("transaction.check_interval_ms")
        );
        let s: TransactionSettings =
            serde_json::from_str(r#"{"on_max_checks":"commit","max_checks":2}"#).unwrap();
        assert_eq!(s.on_max_checks, OnMaxChecks::Commit);
        assert_eq!(s.max_checks, 2);
        assert!(serde_json::from_str::<TransactionSettings>(r#"{"nope":1}"#).is_err());
    }
}
