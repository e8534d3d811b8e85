//! The `StreamRequest` lifecycle as a pure function of what the operator observed.
//!
//! ```text
//! Pending ──reserved──▶ AwaitingHello ──Hello (or static targets)──▶ Provisioning ──relays ready──▶ Ready
//!    │                        │                                            │
//!    └─ waits for capacity    └─ helloTimeout ─▶ Failed (released)         └─ consumer: waits for remoteListeners
//! ```
//! Deletion is `Releasing` (handled by the finalizer). `Failed` is terminal: the request keeps
//! its story in the conditions, holds nothing, and is deleted by the user.

use std::time::Duration;

use scistream_api::{
    Phase,
    conditions::{Reason, reasons},
};

/// A condition verdict: status, reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `True` or `False`.
    pub status: bool,
    /// CamelCase reason from [`scistream_api::conditions::reasons`].
    pub reason: Reason,
    /// One sentence a person can act on.
    pub message: String,
}

impl Verdict {
    fn yes(reason: Reason, message: impl Into<String>) -> Self {
        Self { status: true, reason, message: message.into() }
    }

    fn no(reason: Reason, message: impl Into<String>) -> Self {
        Self { status: false, reason, message: message.into() }
    }
}

/// Where capacity stands for a request that holds no reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capacity {
    /// Reserved (ports and bandwidth held).
    Reserved {
        /// How long ago the reservation was made.
        age: Duration,
        /// Human summary, e.g. `5 ports on gw-a (5100-5104), 10Gbps`.
        summary: String,
    },
    /// Cannot reserve now; `reason` is one of the capacity reasons.
    Waiting {
        /// `PortsExhausted`, `BandwidthExhausted`, `GatewayNotFound`, `GatewayNotReady`.
        reason: Reason,
        /// What is short and what to do.
        message: String,
    },
    /// The request cannot be served as written (e.g. implementation vs data channel).
    Invalid {
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// State of the relays of a reserved stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Relays {
    /// Relays wanted (one per gateway node of the reservation).
    pub wanted: usize,
    /// Relays Ready.
    pub ready: usize,
    /// Nodes whose relay is failing, with the reason seen (e.g. `CrashLoopBackOff`).
    pub failing: Vec<(String, String)>,
}

/// Everything the lifecycle depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// The request is already Failed (terminal), with the reason and message it failed with.
    pub failed: Option<(Reason, String)>,
    /// Capacity situation.
    pub capacity: Capacity,
    /// Whether a Hello is needed (a Hello key is configured and there are no static targets).
    pub needs_hello: bool,
    /// Whether Hello arrived.
    pub hello_received: bool,
    /// Static targets: Hello is not needed.
    pub static_targets: bool,
    /// `spec.helloTimeout`.
    pub hello_timeout: Duration,
    /// What the relays still wait for before they can be configured (consumer: remote
    /// listeners and the peer certificate), or `None` when targets are known.
    pub targets_missing: Option<String>,
    /// The relays.
    pub relays: Relays,
}

/// What the operator should make true.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Phase to report.
    pub phase: Phase,
    /// `Reserved` condition.
    pub reserved: Verdict,
    /// `HelloReceived` condition.
    pub hello: Verdict,
    /// `DataPathReady` condition.
    pub data_path: Verdict,
    /// `Ready` condition.
    pub ready: Verdict,
    /// Release ports, bandwidth and relays (the request failed).
    pub release: bool,
    /// Relays should run (targets known, Hello satisfied, reserved).
    pub run_relays: bool,
}

/// Decides the phase, conditions and effects for a live (not deleting) request.
pub fn decide(f: &Facts) -> Decision {
    if let Some((reason, message)) = f.failed.clone() {
        let v = Verdict::no(reason, message);
        return Decision {
            phase: Phase::Failed,
            reserved: Verdict::no(reason, "released because the request failed"),
            hello: if f.hello_received { Verdict::yes(reasons::HELLO_RECEIVED, "Hello received") } else { v.clone() },
            data_path: Verdict::no(reason, "relays stopped because the request failed"),
            ready: v,
            release: true,
            run_relays: false,
        };
    }
    let (age, summary) = match &f.capacity {
        Capacity::Reserved { age, summary } => (*age, summary.clone()),
        Capacity::Waiting { reason, message } => return pending(*reason, message.clone()),
        Capacity::Invalid { message } => return pending(reasons::INVALID_SPEC, message.clone()),
    };
    let reserved = Verdict::yes(reasons::RESERVED, summary);
    let hello = if f.static_targets {
        Verdict::yes(reasons::STATIC_TARGETS, "static spec.targets: no Hello needed")
    } else if f.hello_received {
        Verdict::yes(reasons::HELLO_RECEIVED, "Hello received from the application controller")
    } else if !f.needs_hello {
        Verdict::yes(reasons::HELLO_RECEIVED, "no Hello key configured: Hello is not awaited")
    } else if age >= f.hello_timeout {
        let message = format!(
            "no Hello within spec.helloTimeout ({}s); ports and bandwidth released. Check that the application controller sends Hello with this stream id and key, then create the stream again",
            f.hello_timeout.as_secs()
        );
        return decide(&Facts { failed: Some((reasons::HELLO_TIMEOUT, message)), ..f.clone() });
    } else {
        // No countdown here: the message stays the same while the stream waits, and
        // status.helloDeadline says when it fails.
        let message = format!(
            "waiting for the application controller's Hello (within spec.helloTimeout {}s of the reservation: status.helloDeadline)",
            f.hello_timeout.as_secs()
        );
        let waiting = Verdict::no(reasons::AWAITING_HELLO, message);
        return Decision {
            phase: Phase::AwaitingHello,
            reserved,
            hello: waiting.clone(),
            data_path: Verdict::no(reasons::AWAITING_HELLO, "relays start after Hello"),
            ready: waiting,
            release: false,
            run_relays: false,
        };
    };
    if let Some(missing) = &f.targets_missing {
        let v = Verdict::no(reasons::AWAITING_REMOTE_LISTENERS, missing.clone());
        return Decision {
            phase: Phase::Provisioning,
            reserved,
            hello,
            data_path: v.clone(),
            ready: v,
            release: false,
            run_relays: false,
        };
    }
    let r = &f.relays;
    let data_path = if r.wanted > 0 && r.ready == r.wanted {
        Verdict::yes(reasons::PODS_READY, format!("{} of {} relays ready", r.ready, r.wanted))
    } else if let Some((node, why)) = r.failing.first() {
        Verdict::no(
            reasons::POD_FAILED,
            format!("relay on {node} is failing ({why}); {} of {} ready", r.ready, r.wanted),
        )
    } else {
        Verdict::no(reasons::PODS_STARTING, format!("{} of {} relays ready", r.ready, r.wanted))
    };
    let phase = if data_path.status { Phase::Ready } else { Phase::Provisioning };
    let ready = if data_path.status {
        Verdict::yes(reasons::PODS_READY, "streaming: every relay is ready on every listener")
    } else {
        data_path.clone()
    };
    Decision { phase, reserved, hello, data_path, ready, release: false, run_relays: true }
}

fn pending(reason: Reason, message: String) -> Decision {
    let v = Verdict::no(reason, message);
    let later = |what: &str| Verdict::no(reason, format!("{what} after ports and bandwidth are reserved"));
    Decision {
        phase: Phase::Pending,
        reserved: v.clone(),
        hello: later("Hello is awaited"),
        data_path: later("relays start"),
        ready: v,
        release: false,
        run_relays: false,
    }
}

#[cfg(test)]
mod tests;
