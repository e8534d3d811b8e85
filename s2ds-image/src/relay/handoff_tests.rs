//! The hand-off after a real handshake over loopback sockets. With kernel
//! TLS asked for, the handshake reads no further than its last record, so
//! that records sent right behind it stay in the socket for the kernel; a
//! kernel without the tls ULP (or refusing the keys) leaves the connection
//! to our record layer, which carries everything. (On a kernel with it,
//! the same test runs the kernel path.)

use std::io::{Read, Write};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::ratelimit::RateLimiter;
use crate::relay::{tcp_pair, tls_io};

const DATA: &[u8] = b"records right behind the client's Finished";

/// A rustls client that sends its Finished, `DATA` and close_notify in one
/// write, then reads until the server closes; returns what it received.
fn client(mut sock: std::net::TcpStream, config: std::sync::Arc<rustls::ClientConfig>) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("server").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    while conn.is_handshaking() {
        while conn.wants_write() {
            conn.write_tls(&mut sock).unwrap();
        }
        assert!(conn.read_tls(&mut sock).unwrap() > 0, "server closed during the handshake");
        conn.process_new_packets().unwrap();
    }
    conn.writer().write_all(DATA).unwrap();
    conn.send_close_notify();
    let mut flight = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut flight).unwrap();
    }
    sock.write_all(&flight).unwrap();
    let mut back = Vec::new();
    while conn.read_tls(&mut sock).unwrap() > 0 {
        conn.process_new_packets().unwrap();
        match conn.reader().read_to_end(&mut back) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            r => _ = r.unwrap(),
        }
    }
    back
}

/// Runs the server side with `kernel_tls`; returns the bytes read past the
/// handshake by the handshake itself.
async fn serve(kernel_tls: bool) -> usize {
    let (ccfg, scfg) = configs();
    let (tls, peer) = tcp_pair().await;
    let peer = peer.into_std().unwrap();
    peer.set_nonblocking(false).unwrap();
    let client = std::thread::spawn(move || client(peer, ccfg));

    let mut st = TlsState::new(UnbufferedServerConnection::new(scfg).unwrap(), SIZE);
    st.kernel_tls = kernel_tls;
    let (from_tls, from_plain) = (Counter::default(), Counter::default());
    tls_io::handshake(&mut st, &tls, &from_tls).await.unwrap();
    let read_past = st.rx.len() + st.down.len();

    let (plain, mut target) = tcp_pair().await;
    let limiter = RateLimiter::new(None, Default::default());
    let relay = tls_io::relay(st, &tls, &plain, &limiter, &from_tls, &from_plain);
    let app = async {
        let mut got = Vec::new();
        target.read_to_end(&mut got).await.unwrap();
        target.write_all(b"pong").await.unwrap();
        target.shutdown().await.unwrap();
        got
    };
    let (r, got) = tokio::join!(relay, app);
    assert_eq!(r.unwrap(), (DATA.len() as u64, 4));
    assert_eq!(got, DATA);
    assert_eq!(client.join().unwrap(), b"pong");
    assert_eq!((from_tls.get(), from_plain.get()), (DATA.len() as u64, 4));
    read_past
}

#[tokio::test]
async fn asked_for_kernel_tls_the_handshake_leaves_later_records_in_the_socket() {
    // Control: without the request the handshake reads the records behind it
    // (they came in one write), so the assertion below can fail.
    assert!(serve(false).await > 0, "the test's records did not arrive with the Finished");
    assert_eq!(serve(true).await, 0);
}

#[test]
fn handshake_reads_stop_at_the_end_of_the_record() {
    crate::tls::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let s = rcgen::generate_simple_self_signed(vec!["server".into()]).unwrap();
    let scfg = crate::tls::server_config(&files(dir.path(), &s, &s, "s")).unwrap();
    let mut st = TlsState::new(UnbufferedServerConnection::new(scfg).unwrap(), SIZE);
    assert!(st.read_space().len() >= SIZE, "all free space without kernel TLS");
    st.kernel_tls = true;
    assert_eq!(st.read_space().len(), 5, "a header first");
    st.rx.push(&[22, 3, 3]);
    assert_eq!(st.read_space().len(), 2, "the rest of the header");
    st.rx.push(&[1, 44]);
    assert_eq!(st.read_space().len(), 300, "then exactly the record's body");
    st.rx.push(&[0; 120]);
    assert_eq!(st.read_space().len(), 180);
}
