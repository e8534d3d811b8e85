//! `s2ds wait-ready`: returns once the relay serving a config answers `/readyz` with 200.
//!
//! Run as the relay container's postStart exec hook: a kubelet does not report the container
//! running, and so does not probe its readiness, until the hook returns (Kubernetes "Container
//! Lifecycle Hooks": "if the hook takes too long to run or hangs, the Container cannot reach a
//! running state"; the prober manager probes readiness at once when it first sees the container
//! running). The relay is then Ready the moment its listeners are bound, not a probe period
//! after a first probe that came before the bind.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Time between two asks (the relay binds within a few milliseconds of starting).
const INTERVAL: Duration = Duration::from_millis(5);
/// One ask's connect, write and read deadline.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the relay was not seen ready.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WaitError {
    /// The deadline passed; the last answer (or connection error) says how far it got.
    #[error("the relay at {address} was not ready after {waited:?}: {last}")]
    NotReady {
        /// Where `/readyz` was asked.
        address: SocketAddr,
        /// How long it waited.
        waited: Duration,
        /// The last answer or error.
        last: String,
    },
}

/// The address to ask for a configured health listener: an unspecified bind address is
/// reachable on the loopback address of its family.
pub fn ask_address(metrics: SocketAddr) -> SocketAddr {
    match metrics.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), metrics.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), metrics.port()),
        _ => metrics,
    }
}

/// One `GET /readyz`: `Ok(())` on 200, else the status line or the error.
fn ask(address: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&address, ASK_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(ASK_TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(ASK_TIMEOUT)).map_err(|e| e.to_string())?;
    s.write_all(format!("GET /readyz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(head.split(|b| *b == b'\n').next().unwrap_or_default()).trim().to_owned();
    match line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ if line.is_empty() => Err("no answer".to_owned()),
        _ => Err(line),
    }
}

/// Asks `address` every few milliseconds until it answers 200 or `timeout` passes.
pub fn until_ready(address: SocketAddr, timeout: Duration) -> Result<Duration, WaitError> {
    let start = Instant::now();
    loop {
        let last = match ask(address) {
            Ok(()) => return Ok(start.elapsed()),
            Err(e) => e,
        };
        if start.elapsed() >= timeout {
            return Err(WaitError::NotReady { address, waited: start.elapsed(), last });
        }
        std::thread::sleep(INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves `answers` (status codes) one connection each, in order.
    fn serve(listener: TcpListener, answers: Vec<u16>) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            for code in answers {
                let Ok((mut s, _)) = listener.accept() else { return };
                let mut b = [0u8; 512];
                let _ = s.read(&mut b);
                let _ = s.write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes());
            }
        })
    }

    #[test]
    fn unspecified_addresses_are_asked_on_loopback() {
        let cases = [
            ("0.0.0.0:9100", "127.0.0.1:9100"),
            ("[::]:9100", "[::1]:9100"),
            ("192.0.2.7:9100", "192.0.2.7:9100"),
            ("127.0.0.1:1", "127.0.0.1:1"),
        ];
        for (configured, asked) in cases {
            assert_eq!(ask_address(configured.parse().unwrap()), asked.parse::<SocketAddr>().unwrap(), "{configured}");
        }
    }

    #[test]
    fn returns_at_the_first_200_after_503s() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = l.local_addr().unwrap();
        let server = serve(l, vec![503, 503, 200]);
        until_ready(address, Duration::from_secs(10)).expect("ready at the third ask");
        server.join().unwrap();
    }

    #[test]
    fn waits_for_a_listener_bound_later() {
        // Reserve a port, free it, and bind it again only after a while.
        let address = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let late = std::thread::spawn(move || {
            rx.recv().unwrap();
            let l = TcpListener::bind(address).unwrap();
            serve(l, vec![200]).join().unwrap();
        });
        let asker = std::thread::spawn(move || until_ready(address, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(50)); // let it be refused a few times first
        tx.send(()).unwrap();
        assert!(asker.join().unwrap().is_ok());
        late.join().unwrap();
    }

    #[test]
    fn names_the_last_answer_when_it_gives_up() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = l.local_addr().unwrap();
        let _server = serve(l, vec![503; 1000]);
        let err = until_ready(address, Duration::from_millis(30)).unwrap_err();
        let WaitError::NotReady { last, .. } = &err;
        assert!(last.contains("503"), "{err}");
        assert!(err.to_string().contains(&address.to_string()), "{err}");
    }
}
