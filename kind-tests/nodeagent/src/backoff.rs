//! Crash-loop restart backoff (pure), kubelet-style: the delay before the
//! n-th restart doubles from `initial` up to `max`, and a container that ran
//! longer than `reset_after` starts over at `initial`.

use std::time::Duration;

/// Backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first restart.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// A run at least this long resets the backoff.
    pub reset_after: Duration,
}

impl Default for Backoff {
    /// The kubelet's figures: 10 s doubling to 5 min, reset after 10 min.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// Fast figures for tests: 200 ms doubling to 2 s.
    pub fn fast() -> Self {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(2),
            reset_after: Duration::from_secs(60),
        }
    }

    /// Delay before the next start, given the number of consecutive
    /// failures so far (`0` → `initial`).
    pub fn delay(&self, consecutive: u32) -> Duration {
        let factor = 1u32.checked_shl(consecutive.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Consecutive-failure count after a run that lasted `ran`.
    pub fn next_count(&self, consecutive: u32, ran: Duration) -> u32 {
        if ran >= self.reset_after { 0 } else { consecutive.saturating_add(1) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps() {
        let b = Backoff::default();
        assert_eq!(b.delay(0), Duration::from_secs(10));
        assert_eq!(b.delay(1), Duration::from_secs(20));
        assert_eq!(b.delay(4), Duration::from_secs(160));
        assert_eq!(b.delay(5), Duration::from_secs(300));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn bounded_for_every_count() {
        let b = Backoff::fast();
        for n in 0..200 {
            let d = b.delay(n);
            assert!(b.initial <= d && d <= b.max, "{n}: {d:?}");
        }
    }

    #[test]
    fn long_run_resets() {
        let b = Backoff::default();
        assert_eq!(b.next_count(3, Duration::from_secs(1)), 4);
        assert_eq!(b.next_count(3, Duration::from_secs(601)), 0);
    }
}
