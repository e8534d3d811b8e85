//! Per-peer limit on failed authentications: after `max` failures within `window`, a peer's
//! calls are refused (`RESOURCE_EXHAUSTED`) until the window has passed, so Hello keys and
//! tokens cannot be guessed at line rate. Pure: time is an argument.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Peers tracked at most; the oldest entries are dropped beyond this (bounded memory).
const MAX_PEERS: usize = 10_000;

/// Failed authentications by peer address.
#[derive(Debug)]
pub struct FailureLimiter {
    max: u32,
    window: Duration,
    peers: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    /// At most `max` failures per `window` and peer.
    pub fn new(max: u32, window: Duration) -> Self {
        Self { max, window, peers: Mutex::new(HashMap::new()) }
    }

    /// `Some(wait)` when `peer` is blocked at `now`, with how long it remains so.
    pub fn blocked(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let (start, count) = *peers.get(&peer)?;
        let elapsed = now.saturating_duration_since(start);
        (count >= self.max && elapsed < self.window).then(|| self.window - elapsed)
    }

    /// Records a failure of `peer` at `now`.
    pub fn failed(&self, peer: IpAddr, now: Instant) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            let window = self.window;
            peers.retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
            if peers.len() >= MAX_PEERS {
                peers.clear();
            }
        }
        let entry = peers.entry(peer).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// Forgets `peer`'s failures (after a success).
    pub fn succeeded(&self, peer: IpAddr) {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_until_the_window_passes() {
        let l = FailureLimiter::new(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(l.blocked(a, t0).is_none(), "after {i}");
            l.failed(a, t0 + Duration::from_secs(i));
        }
        assert_eq!(l.blocked(a, t0 + Duration::from_secs(10)), Some(Duration::from_secs(50)));
        assert!(l.blocked(b, t0).is_none(), "other peers are not affected");
        assert!(l.blocked(a, t0 + Duration::from_secs(61)).is_none());
        l.failed(a, t0 + Duration::from_secs(61));
        assert!(l.blocked(a, t0 + Duration::from_secs(61)).is_none(), "a new window starts");
        l.succeeded(a);
        assert!(l.peers.lock().unwrap().is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let l = FailureLimiter::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_PEERS as u32 + 5) {
            l.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(l.peers.lock().unwrap().len() <= MAX_PEERS);
    }
}
