//! Building and removing a topology's namespaces, and reaching them: run a
//! command on a host, connect to or listen on an address from inside a
//! member's namespace.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use tokio::process::Command;

use crate::plan::{Plan, loopback_addresses, owner_pid};
use crate::topology::Topology;
use crate::{Error, Result};

/// Base of every namespace name the agent creates (`sna-<pid>-<rand>-…`).
pub const NETNS_BASE: &str = "sna";

/// How simulated nodes get their own addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkMode {
    /// A network namespace per node and host, bridges per network (root).
    Netns,
    /// A `127.a.b.c` address per node, everything in this namespace.
    Loopback,
}

/// A built topology.
#[derive(Debug)]
pub struct Network {
    mode: NetworkMode,
    topology: Topology,
    plan: Plan,
    loopback: BTreeMap<String, Ipv4Addr>,
}

async fn ip(args: &[String]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|source| Error::Io { context: "running ip (install iproute2)".into(), source })?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Command {
        command: format!("ip {}", args.join(" ")),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Names of all network namespaces on this machine.
pub async fn list_netns() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output().await else { return vec![] };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Kills every process in `netns`, then deletes it (and so its veths and bridges). The
/// namespace is listed again after each round of kills (at most five rounds), so a process that
/// entered while the previous round ran is killed too.
pub async fn delete_netns(netns: &str) {
    for _ in 0..5 {
        let Ok(out) = Command::new("ip").args(["netns", "pids", netns]).output().await else { break };
        let pids: Vec<i32> =
            String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    if let Err(e) = ip(&["netns".into(), "del".into(), netns.into()]).await {
        tracing::warn!(netns, error = %e, "deleting network namespace failed");
    }
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes what agents that are no longer running left behind: their
/// network namespaces (root only; processes inside are killed) and their
/// scratch directories (`$TMPDIR/nodeagent-sna-<pid>-…`). Returns how many
/// namespaces and directories were removed.
pub async fn cleanup_stale() -> usize {
    let mut n = 0;
    let tmp = std::env::temp_dir();
    for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("nodeagent-").and_then(|r| owner_pid(NETNS_BASE, r)) else { continue };
        if !pid_alive(pid) && std::fs::remove_dir_all(e.path()).is_ok() {
            n += 1;
        }
    }
    if !nix::unistd::geteuid().is_root() {
        return n;
    }
    for ns in list_netns().await {
        let Some(pid) = owner_pid(NETNS_BASE, &ns) else { continue };
        if !pid_alive(pid) {
            tracing::info!(netns = %ns, pid, "removing namespace of a stopped agent");
            delete_netns(&ns).await;
            n += 1;
        }
    }
    n
}

/// A fresh, unique namespace prefix for this agent.
pub fn fresh_prefix() -> String {
    let r = uuid::Uuid::new_v4().simple().to_string();
    format!("{NETNS_BASE}-{}-{}-", std::process::id(), &r[..6])
}

impl Network {
    /// Builds `topology` in `mode`. Leftovers of dead agents are removed
    /// first, and a failed build is undone. Share the result between
    /// several agents (one per cluster) with
    /// [`NodeAgentBuilder::network`](crate::NodeAgentBuilder::network); the
    /// one who built it calls [`Network::teardown`].
    pub async fn build(topology: &Topology, mode: NetworkMode) -> Result<Network> {
        let prefix = fresh_prefix();
        let plan = topology.plan(&prefix)?;
        let mut loopback = BTreeMap::new();
        cleanup_stale().await;
        match mode {
            NetworkMode::Loopback => {
                let seed =
                    u16::from_be_bytes([prefix.as_bytes()[prefix.len() - 3], prefix.as_bytes()[prefix.len() - 2]]);
                let addrs = loopback_addresses(seed ^ (std::process::id() as u16), plan.members.len());
                loopback = plan.members.iter().map(|m| m.name.clone()).zip(addrs).collect();
            }
            NetworkMode::Netns => {
                if !nix::unistd::geteuid().is_root() {
                    return Err(Error::NotRoot("netns network mode"));
                }
                let net = Network { mode, topology: topology.clone(), plan, loopback };
                for c in net.plan.commands() {
                    if let Err(e) = ip(&c).await {
                        net.teardown().await;
                        return Err(e);
                    }
                }
                return Ok(net);
            }
        }
        Ok(Network { mode, topology: topology.clone(), plan, loopback })
    }

    /// The mode.
    pub fn mode(&self) -> NetworkMode {
        self.mode
    }

    /// The declared topology.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The plan (namespaces, interfaces, addresses).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The address a member's pods use and report (LAN address in `netns`
    /// mode, its loopback address otherwise).
    pub fn address(&self, member: &str) -> Option<Ipv4Addr> {
        match self.mode {
            NetworkMode::Loopback => self.loopback.get(member).copied(),
            NetworkMode::Netns => self.plan.member(member)?.primary_address(),
        }
    }

    /// A member's address on `network` (`netns` mode; in loopback mode every
    /// network shares the member's one address).
    pub fn address_on(&self, member: &str, network: &str) -> Option<Ipv4Addr> {
        match self.mode {
            NetworkMode::Loopback => self.loopback.get(member).copied(),
            NetworkMode::Netns => self.plan.member(member)?.address_on(network),
        }
    }

    /// `/run/netns/<name>` of a member (`netns` mode only).
    pub fn netns_path(&self, member: &str) -> Option<PathBuf> {
        match self.mode {
            NetworkMode::Loopback => None,
            NetworkMode::Netns => Some(PathBuf::from("/run/netns").join(&self.plan.member(member)?.netns)),
        }
    }

    /// A command that runs `program` "on" `member`: `ip netns exec` in
    /// `netns` mode, directly in loopback mode.
    pub fn command_on(&self, member: &str, program: &str) -> Command {
        match self.plan.member(member).filter(|_| self.mode == NetworkMode::Netns) {
            Some(m) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &m.netns, program]);
                c
            }
            None => Command::new(program),
        }
    }

    /// A TCP connection to `addr` made from inside `member`'s namespace.
    pub async fn connect(&self, member: &str, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let socket = socket_in(self.netns_path(member), addr).await?;
        tokio::net::TcpSocket::from_std_stream(socket.into()).connect(addr).await
    }

    /// A TCP listener on `addr` inside `member`'s namespace.
    pub async fn listen(&self, member: &str, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let socket = socket_in(self.netns_path(member), addr).await?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(128)?;
        tokio::net::TcpListener::from_std(socket.into())
    }

    /// Deletes every namespace (killing what runs in them).
    pub async fn teardown(&self) {
        if self.mode == NetworkMode::Netns {
            for ns in self.plan.namespaces().iter().rev() {
                delete_netns(ns).await;
            }
        }
    }
}

/// A non-blocking TCP socket for `addr`'s family created inside `netns`
/// (a socket stays in the namespace it was created in, whichever thread
/// uses it later). A short-lived thread joins the namespace, so no runtime
/// thread ever changes namespace.
pub async fn socket_in(netns: Option<PathBuf>, addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    let domain = if matches!(addr.ip(), IpAddr::V4(_)) { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let make = move || -> std::io::Result<socket2::Socket> {
        if let Some(path) = &netns {
            let f = std::fs::File::open(path)?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        }
        let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        s.set_nonblocking(true)?;
        Ok(s)
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("netns-socket".into()).spawn(move || {
        let _ = tx.send(make());
    })?;
    rx.await.map_err(|_| std::io::Error::other("netns socket thread died"))?
}
