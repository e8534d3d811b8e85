//! `kubectl scistream hello` against a real control endpoint (an operator's, with a
//! certificate it generated for `control.aps.example`), and against sockets that misbehave:
//! each way of not reaching the endpoint has its own message saying what to fix.

mod cli;

use std::{net::SocketAddr, path::Path, process::Command, time::Duration};

use cli::text;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use scistream_testkit::{Facility, OperatorOptions, wait_until};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `hello` to `control` trusting `cert`; its output.
fn hello(control: &str, cert: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-scistream"))
        .args(["hello", "--role", "CONS", "--stream-id", "5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d", "--control", control])
        .arg("--server-cert")
        .arg(cert)
        .args(extra)
        .env("SCISTREAM_HELLO_KEY", "k")
        .output()
        .unwrap()
}

fn said(out: &std::process::Output) -> String {
    let t = text(out);
    assert!(!t.contains("transport error"), "not the bare transport error: {t}");
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_connection_problem_says_what_to_fix() {
    let mut f = Facility::start("aps").await;
    let port = free_port();
    let options = OperatorOptions::quick().control_endpoint(SocketAddr::from(([127, 0, 0, 1], port))).args([
        "--control-http-addr",
        "off",
        "--control-tls-namespace",
        "default",
        "--control-tls-dns-name",
        "control.aps.example",
    ]);
    f.start_operator_with(options);
    let secrets: Api<Secret> = Api::namespaced(f.client.clone(), "default");
    wait_until(Duration::from_secs(20), || {
        let secrets = secrets.clone();
        async move { secrets.get_opt("scistream-control-tls").await.unwrap().is_some() }
    })
    .await;
    let secret = secrets.get("scistream-control-tls").await.unwrap();
    let pem = secret.data.unwrap()["tls.crt"].0.clone();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("control.crt");
    std::fs::write(&good, &pem).unwrap();
    let control = format!("127.0.0.1:{port}");
    // The endpoint is up once it answers TLS (its certificate names another host).
    wait_until(Duration::from_secs(20), || {
        let control = control.clone();
        let good = good.clone();
        async move {
            let out = tokio::task::spawn_blocking(move || hello(&control, &good, &[])).await.unwrap();
            !text(&out).contains("refused")
        }
    })
    .await;

    // Dialled by an address the certificate does not name: the names it has, and both fixes.
    let out = hello(&control, &good, &[]);
    let t = said(&out);
    assert_eq!(out.status.code(), Some(7), "{t}");
    assert!(t.contains("is for control.aps.example") && t.contains("not 127.0.0.1"), "{t}");
    assert!(t.contains("controlEndpoint.tls"), "names the chart values: {t}");

    // A certificate from elsewhere: not what the endpoint presents.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let stale = dir.path().join("stale.crt");
    std::fs::write(&stale, other.cert.pem()).unwrap();
    let out = hello(&control, &stale, &[]);
    let t = said(&out);
    assert_eq!(out.status.code(), Some(7), "{t}");
    assert!(t.contains("not signed by") && t.contains("stale.crt") && t.contains("control.aps.example"), "{t}");

    // Not PEM: a DER file, and a private key.
    let der = dir.path().join("control.der");
    std::fs::write(&der, other.cert.der().as_ref()).unwrap();
    let key = dir.path().join("control.key");
    std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
    for file in [&der, &key] {
        let out = hello(&control, file, &[]);
        let t = said(&out);
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert!(t.contains("is not a PEM certificate") && t.contains("BEGIN CERTIFICATE"), "{t}");
    }

    // Nothing listens there.
    let closed = format!("127.0.0.1:{}", free_port());
    let out = hello(&closed, &good, &[]);
    let t = said(&out);
    assert_eq!(out.status.code(), Some(7), "{t}");
    assert!(t.contains("connection refused") && t.contains(&closed), "{t}");

    // A listener whose queue is full drops the connection attempt: timed out.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(0).unwrap();
    let full_addr = full.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(300), tokio::net::TcpStream::connect(full_addr)).await
        {
            queued.push(s);
        }
    }
    let out = hello(&full_addr.to_string(), &good, &["--connect-timeout", "1s"]);
    let t = said(&out);
    assert_eq!(out.status.code(), Some(7), "{t}");
    assert!(t.contains("timed out") && t.contains("1s"), "{t}");
    drop((queued, full));

    // Something accepts but never speaks TLS.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let out = tokio::task::spawn_blocking(move || hello(&silent_addr.to_string(), &good, &["--connect-timeout", "1s"]))
        .await
        .unwrap();
    let t = said(&out);
    assert_eq!(out.status.code(), Some(7), "{t}");
    assert!(t.contains("no TLS answer"), "{t}");
    keep.abort();
    f.shutdown().await;
}
