//! Retry policies: how many attempts, and how long to wait before each.
//!
//! The server decides (the settings reply of the Telemetry handshake carries a
//! `backoff_policy`); the client applies it to failed sends and to redelivery of messages a
//! push consumer's handler failed.

use std::time::Duration;

/// How long to wait before the next attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    /// `initial * multiplier^(attempt - 1)`, at most `max`.
    Exponential {
        /// Delay after the first attempt.
        initial: Duration,
        /// Upper bound of any delay.
        max: Duration,
        /// Growth factor per attempt.
        multiplier: f64,
    },
    /// The n-th delay is `delays[n - 1]`; past the end of the list, the last one. Never empty.
    Customized(Vec<Duration>),
}

/// At most `max_attempts` attempts, spaced by a [`Backoff`].
///
/// ```
/// use std::time::Duration;
/// use rocketlog_client::{Backoff, RetryPolicy};
///
/// let policy = RetryPolicy::exponential(3, Duration::from_millis(10), Duration::from_secs(1), 2.0);
/// assert_eq!(policy.delay(1), Duration::from_millis(10));
/// assert_eq!(policy.delay(2), Duration::from_millis(20));
/// assert_eq!(policy.max_attempts(), 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: Backoff,
}

impl RetryPolicy {
    /// An exponential policy. `max_attempts` below 1 counts as 1; a multiplier below 1 or not a
    /// number counts as 1.
    pub fn exponential(
        max_attempts: u32,
        initial: Duration,
        max: Duration,
        multiplier: f64,
    ) -> Self {
        let multiplier = if multiplier.is_finite() && multiplier >= 1.0 {
            multiplier
        } else {
            1.0
        };
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            backoff: Backoff::Exponential {
                initial,
                max: max.max(initial),
                multiplier,
            },
        }
    }

    /// A policy with a delay list. An empty list means no delay.
    pub fn customized(max_attempts: u32, delays: Vec<Duration>) -> Self {
        let delays = if delays.is_empty() {
            vec![Duration::ZERO]
        } else {
            delays
        };
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            backoff: Backoff::Customized(delays),
        }
    }

    /// Retries at once, up to `max_attempts` attempts in all.
    pub fn immediate(max_attempts: u32) -> Self {
        RetryPolicy::exponential(max_attempts, Duration::ZERO, Duration::ZERO, 1.0)
    }

    /// Total attempts allowed, the first one included (at least 1).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The backoff.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The same backoff with another attempt limit.
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// The delay after attempt number `attempt` (1-based) failed, before the next one. For a
    /// message delivered `n` times, `delay(n)` is how long it stays invisible before delivery
    /// `n + 1`. `attempt` 0 counts as 1.
    pub fn delay(&self, attempt: u32) -> Duration {
        let attempt = attempt.max(1);
        match &self.backoff {
            Backoff::Exponential {
                initial,
                max,
                multiplier,
            } => {
                let exponent = i32::try_from(attempt - 1).unwrap_or(i32::MAX);
                let nanos = initial.as_nanos() as f64 * multiplier.powi(exponent);
                let capped = nanos.min(max.as_nanos() as f64);
                if capped.is_nan() || capped <= 0.0 {
                    Duration::ZERO
                } else {
                    // `capped` is at most `max`, so it fits.
                    Duration::from_nanos(capped as u64)
                }
            }
            Backoff::Customized(delays) => {
                let i = (attempt as usize - 1).min(delays.len().saturating_sub(1));
                delays.get(i).copied().unwrap_or(Duration::ZERO)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn exponential_grows_and_caps() {
        let p = RetryPolicy::exponential(3, 10 * MS, 1000 * MS, 2.0);
        let got: Vec<_> = (1..=9).map(|a| p.delay(a)).collect();
        assert_eq!(
            got,
            [10, 20, 40, 80, 160, 320, 640, 1000, 1000].map(|n| n * MS)
        );
        assert_eq!(p.delay(0), 10 * MS);
        assert_eq!(p.delay(u32::MAX), 1000 * MS);
    }

    #[test]
    fn immediate_never_waits() {
        let p = RetryPolicy::immediate(0);
        assert_eq!(p.max_attempts(), 1);
        assert_eq!(p.delay(5), Duration::ZERO);
    }

    #[test]
    fn customized_uses_the_list_then_its_last() {
        let s = Duration::from_secs;
        let p = RetryPolicy::customized(17, vec![s(1), s(5), s(10)]);
        assert_eq!(p.delay(1), s(1));
        assert_eq!(p.delay(3), s(10));
        assert_eq!(p.delay(40), s(10));
        assert_eq!(RetryPolicy::customized(1, vec![]).delay(2), Duration::ZERO);
    }

    #[test]
    fn bad_multipliers_are_tamed() {
        let p = RetryPolicy::exponential(2, 5 * MS, MS, f64::NAN);
        // max below initial is raised to initial; NaN multiplier becomes 1.
        assert_eq!(p.delay(7), 5 * MS);
    }
}
