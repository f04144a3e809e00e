//! Timer settings (`[broker.timer]`).

use serde::{Deserialize, Serialize};

use crate::error::BrokerError;

const DAY_MS: u64 = 24 * 3600 * 1000;

/// How delayed messages are held. Every field has a default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimerSettings {
    /// Furthest a delivery time may lie ahead, ms (default 40 days); beyond it a send fails
    /// with ILLEGAL_DELIVERY_TIME.
    pub max_delay_ms: u64,
    /// Width of one bucket file of fire times, ms (default 60 000).
    pub bucket_ms: u64,
    /// A message due further ahead than this is re-appended to the timer topic when the horizon
    /// comes round, so retention never deletes it, ms (default 24 h; must stay below the store's
    /// retention).
    pub roll_horizon_ms: u64,
    /// How often progress is checkpointed, ms (default 1 000).
    pub checkpoint_interval_ms: u64,
    /// Longest the timer thread sleeps between looks at new delayed messages, ms (default 10).
    pub poll_interval_ms: u64,
    /// Most entries kept in memory ahead of firing; further buckets wait (default 200 000).
    pub max_loaded_entries: usize,
}

impl Default for TimerSettings {
    fn default() -> Self {
        TimerSettings {
            max_delay_ms: 40 * DAY_MS,
            bucket_ms: 60_000,
            roll_horizon_ms: DAY_MS,
            checkpoint_interval_ms: 1_000,
            poll_interval_ms: 10,
            max_loaded_entries: 200_000,
        }
    }
}

fn invalid(field: &'static str, reason: String) -> BrokerError {
    BrokerError::Config { field, reason }
}

impl TimerSettings {
    /// Checks every field against the store's retention (hours).
    pub fn validate(&self, retention_hours: u64) -> Result<(), BrokerError> {
        for (field, v) in [
            ("timer.max_delay_ms", self.max_delay_ms),
            ("timer.bucket_ms", self.bucket_ms),
            ("timer.roll_horizon_ms", self.roll_horizon_ms),
            ("timer.checkpoint_interval_ms", self.checkpoint_interval_ms),
            ("timer.poll_interval_ms", self.poll_interval_ms),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be above 0".into()));
            }
        }
        if self.max_delay_ms > 3650 * DAY_MS {
            return Err(invalid(
                "timer.max_delay_ms",
                format!("{} is above 10 years", self.max_delay_ms),
            ));
        }
        if self.bucket_ms > self.roll_horizon_ms {
            return Err(invalid(
                "timer.bucket_ms",
                format!(
                    "{} is above timer.roll_horizon_ms ({})",
                    self.bucket_ms, self.roll_horizon_ms
                ),
            ));
        }
        let retention_ms = retention_hours.saturating_mul(3600 * 1000);
        if self.roll_horizon_ms.saturating_mul(2) > retention_ms {
            return Err(invalid(
                "timer.roll_horizon_ms",
                format!(
                    "{} ms must be at most half the store retention ({retention_hours} h), or \
                     retention could delete pending delayed messages",
                    self.roll_horizon_ms
                ),
            ));
        }
        if self.poll_interval_ms > 1_000 {
            return Err(invalid(
                "timer.poll_interval_ms",
                format!("{} is above 1 000", self.poll_interval_ms),
            ));
        }
        if self.max_loaded_entries == 0 {
            return Err(invalid(
                "timer.max_loaded_entries",
                "must be above 0".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        TimerSettings::default().validate(72).unwrap();
        let e = TimerSettings::default().validate(24).unwrap_err();
        assert!(e.to_string().contains("timer.roll_horizon_ms"), "{e}");
        let s = TimerSettings {
            bucket_ms: 0,
            ..TimerSettings::default()
        };
        assert!(s
            .validate(72)
            .unwrap_err()
            .to_string()
            .contains("bucket_ms"));
    }
}
