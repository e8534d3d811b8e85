//! The control-plane benchmark (`scistream-bench`, `kind-tests/e2e/src/bin/bench.rs`): figures,
//! not assertions. It measures the operator as a separate process against an embedded API
//! server that counts every request by client and verb (`testcluster` `/metrics`), with a node
//! agent that reports relay pods Ready without running them ([`scale`]), and the time from
//! `kubectl scistream create` to both sides Ready with real relays ([`latency`]), and SciStream
//! 1.x streams at the rate `s2uc` sends ([`legacy`]), and the two relay models, a shared s2ds
//! per node and an s2ds per stream, side by side ([`relays`]).

pub mod latency;
pub mod legacy;
pub mod relays;
pub mod scale;

use std::{collections::BTreeMap, time::Duration};

use scistream_testcluster::requests::RequestKey;

/// CPU time and peak memory of a process, read from `/proc`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessUsage {
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Peak resident set size (`VmHWM`), bytes.
    pub peak_rss: u64,
    /// Resident set size now (`VmRSS`), bytes.
    pub rss: u64,
}

/// Reads [`ProcessUsage`] of `pid`.
pub fn usage(pid: u32) -> anyhow::Result<ProcessUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command.
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100).max(1) as u64;
    let cpu = Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok(ProcessUsage { cpu, peak_rss: kb("VmHWM:"), rss: kb("VmRSS:") })
}

/// Requests of one client between two snapshots, by verb and resource (`pods/status`).
pub fn requests_between(
    before: &[(RequestKey, u64)],
    after: &[(RequestKey, u64)],
    client: &str,
) -> BTreeMap<(String, String), u64> {
    let count = |snap: &[(RequestKey, u64)]| {
        let mut m: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (k, n) in snap.iter().filter(|(k, _)| k.client == client) {
            let resource =
                if k.subresource.is_empty() { k.resource.clone() } else { format!("{}/{}", k.resource, k.subresource) };
            *m.entry((k.verb.clone(), resource)).or_default() += n;
        }
        m
    };
    let (b, mut a) = (count(before), count(after));
    for (k, n) in b {
        if let Some(v) = a.get_mut(&k) {
            *v = v.saturating_sub(n);
        }
    }
    a.retain(|_, n| *n > 0);
    a
}

/// Whether a verb writes.
pub fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete" | "deletecollection")
}

/// The `q`-quantile (0..=1) of `values` (nearest rank), or zero when empty.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut v = values.to_vec();
    v.sort();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// The value of a counter in a Prometheus text page whose line starts with `prefix` (labels
/// included), summed over matching lines.
pub fn counter(page: &str, prefix: &str) -> f64 {
    page.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn requests_are_counted_per_client_between_snapshots() {
        let key = |client: &str, verb: &str, sub: &str| RequestKey {
            client: client.into(),
            verb: verb.into(),
            group: String::new(),
            resource: "pods".into(),
            subresource: sub.into(),
            code: 200,
        };
        let before = vec![(key("op", "patch", ""), 2)];
        let after = vec![(key("op", "patch", ""), 5), (key("op", "patch", "status"), 1), (key("agent", "get", ""), 9)];
        let d = requests_between(&before, &after, "op");
        assert_eq!(d.get(&("patch".into(), "pods".into())), Some(&3));
        assert_eq!(d.get(&("patch".into(), "pods/status".into())), Some(&1));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn counters_sum_matching_lines() {
        let page = "a_total{c=\"x\"} 3\na_total{c=\"y\"} 4\nb_total 9\n";
        assert_eq!(counter(page, "a_total{"), 7.0);
        assert!(usage(std::process::id()).unwrap().peak_rss > 0);
    }
}
