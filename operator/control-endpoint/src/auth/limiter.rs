//! Limits on failed authentications, so Hello keys and tokens cannot be guessed at line rate
//! while one misconfigured client does not lock out its neighbours (a login node's users share
//! its address):
//!
//! - per address and identity: after `max` failures within `window` from one address with one
//!   credential, that credential is refused from that address (`RESOURCE_EXHAUSTED`) until the
//!   window has passed; other credentials from the same address are not affected;
//! - per address: after `max_per_address` failures within `window` from one address, whatever
//!   the credentials (someone trying many), every call from it is refused until the window has
//!   passed.
//!
//! The identity of a failed call is what it claimed: a digest of its credential (never the
//! credential itself), or "none" without one. A refused call counts as no failure, and a
//! success clears its own identity's failures only (not the address's: a valid token must not
//! reset the count of someone guessing others). Pure: time is an argument.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

/// Entries tracked at most per table; the oldest are dropped beyond this (bounded memory).
const MAX_ENTRIES: usize = 10_000;

/// Who a call claims to be, for counting its failures: a digest of its credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Claimed([u8; 16]);

impl Claimed {
    /// The claimed identity of a call with `authorization` metadata (`None`: none sent).
    pub fn of(authorization: Option<&str>) -> Claimed {
        let digest = Sha256::digest(authorization.map(str::trim).unwrap_or_default().as_bytes());
        let mut short = [0u8; 16];
        short.copy_from_slice(&digest[..16]);
        Claimed(short)
    }
}

/// Why a call is refused without being checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// This credential failed too often from this address.
    Identity(Duration),
    /// Too many credentials failed from this address.
    Address(Duration),
}

/// Failures within a window.
type Window = (Instant, u32);

/// Failed authentications by address and identity, and by address.
#[derive(Debug)]
pub struct FailureLimiter {
    max: u32,
    max_per_address: u32,
    window: Duration,
    by_identity: Mutex<HashMap<(IpAddr, Claimed), Window>>,
    by_address: Mutex<HashMap<IpAddr, Window>>,
}

impl FailureLimiter {
    /// At most `max` failures per `window`, address and identity, and `max_per_address` per
    /// `window` and address.
    pub fn new(max: u32, max_per_address: u32, window: Duration) -> Self {
        Self { max, max_per_address, window, by_identity: Mutex::default(), by_address: Mutex::default() }
    }

    fn remaining(&self, entry: Option<&Window>, max: u32, now: Instant) -> Option<Duration> {
        let (start, count) = *entry?;
        let elapsed = now.saturating_duration_since(start);
        (count >= max && elapsed < self.window).then(|| self.window - elapsed)
    }

    /// `Some` when a call from `peer` claiming `who` is refused at `now`, with how long it
    /// remains so.
    pub fn blocked(&self, peer: IpAddr, who: Claimed, now: Instant) -> Option<Blocked> {
        let by_address = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(wait) = self.remaining(by_address.get(&peer), self.max_per_address, now) {
            return Some(Blocked::Address(wait));
        }
        drop(by_address);
        let by_identity = self.by_identity.lock().unwrap_or_else(|p| p.into_inner());
        self.remaining(by_identity.get(&(peer, who)), self.max, now).map(Blocked::Identity)
    }

    /// Records a failure of `who` from `peer` at `now`.
    pub fn failed(&self, peer: IpAddr, who: Claimed, now: Instant) {
        count(&mut self.by_identity.lock().unwrap_or_else(|p| p.into_inner()), (peer, who), self.window, now);
        count(&mut self.by_address.lock().unwrap_or_else(|p| p.into_inner()), peer, self.window, now);
    }

    /// Forgets the failures of `who` from `peer` (after a success).
    pub fn succeeded(&self, peer: IpAddr, who: Claimed) {
        self.by_identity.lock().unwrap_or_else(|p| p.into_inner()).remove(&(peer, who));
    }
}

/// Adds one failure at `now` to `key`'s window (a new window once the old one has passed).
fn count<K: std::hash::Hash + Eq>(table: &mut HashMap<K, Window>, key: K, window: Duration, now: Instant) {
    if table.len() >= MAX_ENTRIES && !table.contains_key(&key) {
        table.retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
        if table.len() >= MAX_ENTRIES {
            table.clear();
        }
    }
    let entry = table.entry(key).or_insert((now, 0));
    if now.saturating_duration_since(entry.0) >= window {
        *entry = (now, 0);
    }
    entry.1 = entry.1.saturating_add(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_bad_credential_is_blocked_until_the_window_passes_its_neighbours_are_not() {
        let l = FailureLimiter::new(3, 100, MINUTE);
        let (host, other) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let (bad, good) = (Claimed::of(Some("expired-token")), Claimed::of(Some("alice-token")));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(l.blocked(host, bad, t0).is_none(), "after {i}");
            l.failed(host, bad, t0 + Duration::from_secs(i));
        }
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(l.blocked(host, bad, at(10)), Some(Blocked::Identity(Duration::from_secs(50))));
        assert!(l.blocked(host, good, at(10)).is_none(), "another credential from the same address");
        assert!(l.blocked(other, bad, at(10)).is_none(), "the same credential from another address");
        assert!(l.blocked(host, bad, at(61)).is_none(), "the window passed");
        l.failed(host, bad, at(61));
        assert!(l.blocked(host, bad, at(61)).is_none(), "a new window starts");
    }

    #[test]
    fn many_credentials_from_one_address_block_the_address() {
        let l = FailureLimiter::new(3, 10, MINUTE);
        let host = ip("192.0.2.1");
        let t0 = Instant::now();
        for i in 0..10 {
            let guess = Claimed::of(Some(&format!("guess-{i}")));
            assert!(l.blocked(host, guess, t0).is_none(), "after {i} guesses");
            l.failed(host, guess, t0);
        }
        let next = Claimed::of(Some("guess-10"));
        assert_eq!(l.blocked(host, next, t0), Some(Blocked::Address(MINUTE)));
        assert!(l.blocked(ip("192.0.2.2"), next, t0).is_none());
    }

    #[test]
    fn a_success_clears_its_own_identity_only() {
        let l = FailureLimiter::new(2, 3, MINUTE);
        let host = ip("192.0.2.1");
        let (a, b, c) = (Claimed::of(Some("a")), Claimed::of(Some("b")), Claimed::of(None));
        let t0 = Instant::now();
        l.failed(host, a, t0);
        l.failed(host, a, t0);
        assert!(l.blocked(host, a, t0).is_some());
        l.succeeded(host, a);
        assert!(l.blocked(host, a, t0).is_none(), "the user fixed their token");
        l.failed(host, b, t0);
        assert!(matches!(l.blocked(host, c, t0), Some(Blocked::Address(_))), "3 failures from the address still count");
        assert_ne!(Claimed::of(None), Claimed::of(Some("x")));
        assert_eq!(Claimed::of(Some(" x ")), Claimed::of(Some("x")));
    }

    #[test]
    fn memory_is_bounded() {
        let l = FailureLimiter::new(1, 1_000_000, MINUTE);
        let t0 = Instant::now();
        for i in 0..(MAX_ENTRIES as u32 + 5) {
            l.failed(IpAddr::from(i.to_be_bytes()), Claimed::of(None), t0);
        }
        assert!(l.by_identity.lock().unwrap().len() <= MAX_ENTRIES);
        assert!(l.by_address.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
