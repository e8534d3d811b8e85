//! Aggregate rate limit: a token bucket shared by every connection of the
//! stream.
//!
//! Tokens are bytes. A relay direction takes tokens *before* it reads and
//! then reads at most the granted amount, so when the bucket is empty the
//! relay stops reading, the kernel receive buffer fills and the TCP window
//! closes on the sender: nothing piles up in our memory. Unused tokens (a
//! short read) are given back.
//!
//! [`TokenBucket`] is the pure arithmetic (time is passed in); [`RateLimiter`]
//! wraps it with a lock and a timer.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

/// Smallest grant worth a read: below this the limiter waits instead of
/// handing out crumbs (which would mean one syscall per few bytes).
pub const MIN_GRANT: u64 = 16 * 1024;
/// Burst allowance: the bucket holds this fraction of a second of traffic
/// (but at least [`MIN_BURST`] bytes).
const BURST_SECONDS: f64 = 0.05;
/// Lower bound of the bucket capacity.
pub const MIN_BURST: u64 = 64 * 1024;

/// Outcome of [`TokenBucket::take`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Grant {
    /// This many bytes (1 ..= wanted) may be read now.
    Now(u64),
    /// Nothing now; try again after this long.
    Wait(Duration),
}

/// Token bucket arithmetic, in bytes and seconds. `now` is any monotonic
/// clock reading; it must not go backwards (a backwards step adds nothing).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    /// A full bucket refilling at `bytes_per_second`.
    pub fn new(bytes_per_second: u64, now: Duration) -> Self {
        let capacity = capacity_for(bytes_per_second);
        Self { rate: bytes_per_second.max(1) as f64, capacity, tokens: capacity, last: now }
    }

    /// Changes the rate, keeping the current fill (capped to the new size).
    pub fn set_rate(&mut self, bytes_per_second: u64, now: Duration) {
        self.refill(now);
        self.rate = bytes_per_second.max(1) as f64;
        self.capacity = capacity_for(bytes_per_second);
        self.tokens = self.tokens.min(self.capacity);
    }

    /// Bucket capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity as u64
    }

    fn refill(&mut self, now: Duration) {
        if now > self.last {
            let dt = (now - self.last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.capacity);
            self.last = now;
        }
    }

    /// Takes up to `want` bytes (`want >= 1`). Grants at least
    /// `min(want, MIN_GRANT)` or asks the caller to wait.
    pub fn take(&mut self, want: u64, now: Duration) -> Grant {
        self.refill(now);
        let want = want.max(1);
        let need = want.min(MIN_GRANT) as f64;
        if self.tokens >= need {
            let n = want.min(self.tokens as u64).max(1);
            self.tokens -= n as f64;
            Grant::Now(n)
        } else {
            // Round up (plus 1 ns) so that waiting the hint is always enough.
            let nanos = ((need - self.tokens) / self.rate * 1e9).ceil() as u64 + 1;
            Grant::Wait(Duration::from_nanos(nanos))
        }
    }

    /// Returns tokens that were granted but not used (short read).
    pub fn give_back(&mut self, n: u64) {
        self.tokens = (self.tokens + n as f64).min(self.capacity);
    }
}

fn capacity_for(bytes_per_second: u64) -> f64 {
    (bytes_per_second as f64 * BURST_SECONDS).max(MIN_BURST as f64)
}

/// Converts the config's bits per second to bytes per second (rounding up,
/// never 0).
pub fn bytes_per_second(bits: u64) -> u64 {
    bits.div_ceil(8).max(1)
}

/// The shared, lockable limiter used by relay tasks. `None` rate means
/// unlimited: [`RateLimiter::take`] then returns immediately.
#[derive(Debug)]
pub struct RateLimiter {
    bucket: Mutex<Option<TokenBucket>>,
    epoch: tokio::time::Instant,
    waited: Counter<f64, std::sync::atomic::AtomicU64>,
}

impl RateLimiter {
    /// A limiter at `bits_per_second` (or unlimited), counting time spent
    /// waiting into `waited` (seconds).
    pub fn new(bits_per_second: Option<u64>, waited: Counter<f64, std::sync::atomic::AtomicU64>) -> Self {
        let epoch = tokio::time::Instant::now();
        Self {
            bucket: Mutex::new(bits_per_second.map(|b| TokenBucket::new(bytes_per_second(b), Duration::ZERO))),
            epoch,
            waited,
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<TokenBucket>> {
        // A panic while holding this lock leaves plain numbers behind; keep going.
        self.bucket.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies a reloaded rate; established connections follow it at once.
    pub fn set_rate(&self, bits_per_second: Option<u64>) {
        let now = self.now();
        let mut guard = self.lock();
        match (guard.as_mut(), bits_per_second) {
            (Some(b), Some(bits)) => b.set_rate(bytes_per_second(bits), now),
            (_, bits) => *guard = bits.map(|b| TokenBucket::new(bytes_per_second(b), now)),
        }
    }

    /// Whether a limit is configured.
    pub fn is_limited(&self) -> bool {
        self.lock().is_some()
    }

    /// Waits until some tokens are available and returns how many bytes
    /// (1 ..= `want`) may be read now.
    pub async fn take(&self, want: usize) -> usize {
        loop {
            let grant = match self.lock().as_mut() {
                None => return want,
                Some(b) => b.take(want as u64, self.now()),
            };
            match grant {
                Grant::Now(n) => return usize::try_from(n).unwrap_or(want).min(want),
                Grant::Wait(d) => {
                    let d = d.max(Duration::from_micros(200));
                    tokio::time::sleep(d).await;
                    self.waited.inc_by(d.as_secs_f64());
                }
            }
        }
    }

    /// Like [`RateLimiter::take`] but never waits: 0 means "no tokens now".
    pub fn try_take(&self, want: usize) -> usize {
        match self.lock().as_mut() {
            None => want,
            Some(b) => match b.take(want as u64, self.now()) {
                Grant::Now(n) => usize::try_from(n).unwrap_or(want).min(want),
                Grant::Wait(_) => 0,
            },
        }
    }

    /// Returns unused tokens after a short read.
    pub fn give_back(&self, n: usize) {
        if n > 0
            && let Some(b) = self.lock().as_mut()
        {
            b.give_back(n as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn starts_full_then_paces() {
        let mut b = TokenBucket::new(1_000_000, Duration::ZERO);
        assert_eq!(b.capacity(), MIN_BURST);
        assert_eq!(b.take(1 << 20, Duration::ZERO), Grant::Now(MIN_BURST));
        match b.take(1 << 20, Duration::ZERO) {
            Grant::Wait(d) => assert!((d.as_secs_f64() - 0.016384).abs() < 1e-6, "{d:?}"),
            g => panic!("{g:?}"),
        }
        // 20 ms later: 20 kB available, more than MIN_GRANT.
        assert_eq!(b.take(1 << 20, 20 * MS), Grant::Now(20_000));
    }

    #[test]
    fn give_back_and_rate_change() {
        let mut b = TokenBucket::new(10_000_000, Duration::ZERO);
        let Grant::Now(n) = b.take(100_000, Duration::ZERO) else { panic!() };
        b.give_back(n);
        assert_eq!(b.take(u64::MAX, Duration::ZERO), Grant::Now(b.capacity()));
        b.set_rate(1_000_000, Duration::ZERO);
        assert_eq!(b.capacity(), MIN_BURST);
        assert!(matches!(b.take(1, Duration::ZERO), Grant::Wait(_)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Over any schedule, the bytes granted never exceed the initial
        /// burst plus rate x elapsed time, and a greedy taker who follows
        /// the Wait hints gets at least 95% of the rate.
        #[test]
        fn grants_are_bounded_and_rate_is_reached(
            rate in 100_000u64..10_000_000_000,
            wants in prop::collection::vec(1u64..4_000_000, 1..200),
            gaps_us in prop::collection::vec(0u64..5_000, 1..200),
        ) {
            let mut b = TokenBucket::new(rate, Duration::ZERO);
            let cap = b.capacity();
            let mut now = Duration::ZERO;
            let mut granted = 0u64;
            for (i, want) in wants.iter().enumerate() {
                now += Duration::from_micros(gaps_us[i % gaps_us.len()]);
                match b.take(*want, now) {
                    Grant::Now(n) => {
                        prop_assert!(n >= 1 && n <= *want);
                        granted += n;
                    }
                    Grant::Wait(d) => {
                        prop_assert!(d > Duration::ZERO);
                        now += d;
                        let Grant::Now(n) = b.take(*want, now) else {
                            return Err(TestCaseError::fail("no grant after waiting the hint"));
                        };
                        granted += n;
                    }
                }
                let bound = cap as f64 + rate as f64 * now.as_secs_f64() + 1.0;
                prop_assert!((granted as f64) <= bound, "granted {granted} > {bound}");
            }
            // Greedy phase: always-hungry taker for 2 simulated seconds.
            let start = now;
            let mut got = 0u64;
            while now - start < Duration::from_secs(2) {
                match b.take(1 << 20, now) {
                    Grant::Now(n) => got += n,
                    Grant::Wait(d) => now += d,
                }
            }
            let measured = got as f64 / (now - start).as_secs_f64();
            prop_assert!(measured >= rate as f64 * 0.95, "{measured} < 0.95 * {rate}");
        }
    }
}
