//! A Gateway's policy applied to one request, free of I/O: the controller checks it before it
//! reserves anything and whenever a stream's targets change; the control endpoint checks it on
//! SciStream 1.x `req`, `update` and Hello. Every refusal names the rule and says who can
//! change it.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr},
};

use ipnet::IpNet;
use kube_core::{Selector, SelectorExt};
use scistream_api::{
    Endpoint, Gateway, Host, Rate,
    policy::{GatewayPolicy, SpecialTarget},
    stream_request::DataChannel,
};

#[cfg(test)]
mod tests;

/// Which rule of `spec.policy` refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// `namespaceSelector`.
    Namespace,
    /// `dataChannels`.
    DataChannel,
    /// `allowStaticTargets`.
    StaticTargets,
    /// `targets` (`cidrs`, `dnsSuffixes`, `allow`).
    Target,
    /// `perNamespace`.
    NamespaceLimit,
}

impl Rule {
    /// The field of `spec.policy` that holds the rule.
    pub fn field(self) -> &'static str {
        match self {
            Rule::Namespace => "spec.policy.namespaceSelector",
            Rule::DataChannel => "spec.policy.dataChannels",
            Rule::StaticTargets => "spec.policy.allowStaticTargets",
            Rule::Target => "spec.policy.targets",
            Rule::NamespaceLimit => "spec.policy.perNamespace",
        }
    }
}

/// A refusal: the rule and a sentence saying what was refused, why, and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The rule.
    pub rule: Rule,
    /// What a person reads.
    pub message: String,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Denial {}

/// The Gateway a policy belongs to: its name and its nodes' own addresses.
#[derive(Clone, Copy, Debug)]
pub struct GatewayRef<'a> {
    /// Name of the Gateway.
    pub name: &'a str,
    /// Its policy.
    pub policy: &'a GatewayPolicy,
    /// The WAN and LAN addresses of its nodes.
    pub node_addresses: &'a [IpAddr],
}

/// What a request asks of the Gateway.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// That namespace's labels; `None` when the namespace is not known (refused when the
    /// policy selects namespaces).
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    /// Its data channel.
    pub data_channel: DataChannel,
    /// Whether it is a Producer with static `spec.targets`.
    pub static_targets: bool,
    /// Where its relays would forward (static targets or a Hello's listeners).
    pub targets: &'a [Endpoint],
}

impl GatewayRef<'_> {
    fn deny(&self, rule: Rule, what: String) -> Denial {
        Denial {
            rule,
            message: format!(
                "Gateway {}'s policy refuses {what} ({}); a facility administrator may change it with `kubectl edit gateway {}`",
                self.name,
                rule.field(),
                self.name
            ),
        }
    }

    /// Whether the policy allows the request (namespace, data channel, static targets,
    /// targets), or the first rule that refuses it.
    pub fn check(&self, ask: &Ask<'_>) -> Result<(), Denial> {
        self.check_namespace(ask.namespace, ask.namespace_labels)?;
        if !self.policy.data_channels.contains(&ask.data_channel) {
            let allowed: Vec<String> = self.policy.data_channels.iter().map(|c| format!("{c:?}")).collect();
            return Err(self.deny(
                Rule::DataChannel,
                format!("dataChannel {:?}: it allows {}", ask.data_channel, allowed.join(", ")),
            ));
        }
        if ask.static_targets && !self.policy.allow_static_targets {
            return Err(self.deny(
                Rule::StaticTargets,
                "static spec.targets (forwarding without a Hello): send the producer's endpoints with a Hello instead"
                    .to_owned(),
            ));
        }
        ask.targets.iter().try_for_each(|t| self.check_target(t))
    }

    /// Whether a namespace may use the Gateway.
    pub fn check_namespace(&self, namespace: &str, labels: Option<&BTreeMap<String, String>>) -> Result<(), Denial> {
        let Some(selector) = &self.policy.namespace_selector else { return Ok(()) };
        let selector = Selector::try_from(selector.clone()).map_err(|e| {
            self.deny(Rule::Namespace, format!("every namespace: its namespaceSelector is not valid ({e})"))
        })?;
        if selector.selects_all() {
            return Ok(());
        }
        match labels {
            Some(labels) if selector.matches(labels) => Ok(()),
            Some(_) => Err(self.deny(
                Rule::Namespace,
                format!("namespace {namespace}: its labels do not match the namespaceSelector ({selector})"),
            )),
            None => Err(self.deny(Rule::Namespace, format!("namespace {namespace}: the namespace is not known"))),
        }
    }

    /// Whether relays may forward to a target on the facility's LAN (a producer's targets).
    pub fn check_target(&self, target: &Endpoint) -> Result<(), Denial> {
        self.check_address(target, true)
    }

    /// Whether a consumer's relays may forward to a peer gateway's listener: on the WAN, so
    /// `cidrs` and `dnsSuffixes` (the LAN's) do not apply, but loopback, link-local and the
    /// gateway nodes are refused as for targets.
    pub fn check_remote(&self, listener: &Endpoint) -> Result<(), Denial> {
        self.check_address(listener, false)
    }

    fn check_address(&self, target: &Endpoint, lan: bool) -> Result<(), Denial> {
        let p = &self.policy.targets;
        let special = |kind: SpecialTarget, why: &str| {
            if p.allow.contains(&kind) {
                Ok(())
            } else {
                Err(self.deny(
                    Rule::Target,
                    format!("target {target}: {why}, which targets.allow does not list ({kind:?})"),
                ))
            }
        };
        let restricted = lan && (!p.cidrs.is_empty() || !p.dns_suffixes.is_empty());
        match &target.host {
            Host::Ip(ip) => {
                let ip = ip.to_canonical();
                if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
                    return Err(self.deny(Rule::Target, format!("target {target}: not a unicast address")));
                }
                if ip.is_loopback() {
                    special(SpecialTarget::Loopback, "a loopback address (a service on the gateway node itself)")?;
                }
                if is_link_local(ip) {
                    special(SpecialTarget::LinkLocal, "a link-local address (such as the cloud metadata service)")?;
                }
                if self.node_addresses.iter().any(|a| a.to_canonical() == ip) {
                    special(SpecialTarget::GatewayNodes, "an address of one of the Gateway's own nodes")?;
                }
                if restricted && !self.in_cidrs(ip) {
                    return Err(self.deny(
                        Rule::Target,
                        format!("target {target}: not in targets.cidrs [{}]", p.cidrs.join(", ")),
                    ));
                }
            }
            Host::Dns(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    special(SpecialTarget::Loopback, "a loopback name")?;
                }
                if restricted && !p.dns_suffixes.iter().any(|s| in_domain(&name, s)) {
                    return Err(self.deny(
                        Rule::Target,
                        format!("target {target}: not under targets.dnsSuffixes [{}]", p.dns_suffixes.join(", ")),
                    ));
                }
            }
        }
        Ok(())
    }

    fn in_cidrs(&self, ip: IpAddr) -> bool {
        self.policy.targets.cidrs.iter().filter_map(|c| c.parse::<IpNet>().ok()).any(|net| net.contains(&ip))
    }

    /// Whether one namespace may hold one more stream of `rate`, given what it holds now.
    pub fn check_limits(&self, namespace: &str, held: Usage, rate: Rate) -> Limit {
        let Some(limits) = &self.policy.per_namespace else { return Limit::Fits };
        if let Some(max) = &limits.max_bandwidth {
            let max = max.get();
            if rate > max {
                return Limit::Never(self.deny(
                    Rule::NamespaceLimit,
                    format!("rate {rate}: more than the {max} one namespace may hold (perNamespace.maxBandwidth)"),
                ));
            }
            if held.bandwidth.saturating_add(rate) > max {
                return Limit::Wait(format!(
                    "namespace {namespace} holds {} of the {max} it may hold on Gateway {} (spec.policy.perNamespace.maxBandwidth); waiting for its streams to release {rate}",
                    held.bandwidth, self.name
                ));
            }
        }
        if let Some(max) = limits.max_streams
            && held.streams >= usize::try_from(max).unwrap_or(0)
        {
            return Limit::Wait(format!(
                "namespace {namespace} holds {} of the {max} streams it may hold on Gateway {} (spec.policy.perNamespace.maxStreams); waiting for one to be released",
                held.streams, self.name
            ));
        }
        Limit::Fits
    }
}

/// The WAN and LAN addresses of a Gateway's nodes, as its status lists them (what
/// [`GatewayRef::node_addresses`] holds).
pub fn node_addresses(gateway: &Gateway) -> Vec<IpAddr> {
    let nodes = gateway.status.iter().flat_map(|s| &s.nodes);
    nodes.flat_map(|n| [&n.wan_address, &n.lan_address]).filter_map(|a| a.as_deref()?.parse().ok()).collect()
}

/// What one namespace holds on a Gateway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Streams holding ports.
    pub streams: usize,
    /// Bandwidth they hold.
    pub bandwidth: Rate,
}

impl Usage {
    /// What the reservations of `namespace` hold (reservations name `namespace/name`).
    pub fn of<'a>(namespace: &str, reservations: impl IntoIterator<Item = &'a scistream_api::Reservation>) -> Self {
        reservations.into_iter().filter(|r| r.request.split_once('/').is_some_and(|(ns, _)| ns == namespace)).fold(
            Usage::default(),
            |u, r| Usage {
                streams: u.streams + 1,
                bandwidth: u.bandwidth.saturating_add(Rate::from_bps(u64::try_from(r.bandwidth_bps).unwrap_or(0))),
            },
        )
    }
}

/// The per-namespace limits' verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The request fits.
    Fits,
    /// Not now: the namespace must release first (the message says what it holds).
    Wait(String),
    /// Never: the request alone exceeds a limit.
    Never(Denial),
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Whether `name` is `suffix` or under it, on whole labels.
fn in_domain(name: &str, suffix: &str) -> bool {
    let suffix = suffix.trim_start_matches('.').trim_end_matches('.').to_ascii_lowercase();
    !suffix.is_empty() && (name == suffix || name.strip_suffix(&suffix).is_some_and(|head| head.ends_with('.')))
}
