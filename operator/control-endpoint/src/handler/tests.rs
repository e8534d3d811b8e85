//! The handlers against an in-memory [`Streams`] and a counting [`Access`]: what is refused is
//! refused before any write or any authentication call.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use kube::runtime::watcher;
use scistream_api::RateEnforcement;
use serde_json::{Value, json};

use super::*;
use crate::{
    auth::{Identity, Target, Verb},
    index::Index,
    legacy::NewStream,
};

const ID: &str = "2f0f3c4e-8f1d-4d7a-9a43-1c2b3d4e5f60";

#[derive(Clone, Default)]
struct Memory {
    index: Index,
    keys: Arc<HashMap<String, Vec<u8>>>,
    writes: Arc<Mutex<Vec<String>>>,
    gateway: Option<scistream_api::Gateway>,
}

impl Memory {
    fn with(objects: Vec<Value>, keys: &[(&str, &str)]) -> Self {
        let index = Index::default();
        index.apply_event(watcher::Event::Init);
        for o in objects {
            index.apply_event(watcher::Event::InitApply(serde_json::from_value(o).unwrap()));
        }
        index.apply_event(watcher::Event::InitDone);
        let keys = keys.iter().map(|(n, k)| (n.to_string(), k.as_bytes().to_vec())).collect();
        Self { index, keys: Arc::new(keys), writes: Arc::default(), gateway: None }
    }

    fn writes(&self) -> Vec<String> {
        self.writes.lock().unwrap().clone()
    }
}

impl Streams for Memory {
    fn index(&self) -> &Index {
        &self.index
    }
    async fn hello_key(&self, sr: &StreamRequest) -> Result<Option<Vec<u8>>> {
        Ok(sr.spec.hello_key_secret_ref.as_ref().and_then(|r| self.keys.get(&r.name).cloned()))
    }
    async fn write_status(&self, sr: &StreamRequest, status: &EndpointStatus) -> Result<()> {
        let rate = status.rate_enforcement.map(|r| format!(" {r:?}")).unwrap_or_default();
        self.writes.lock().unwrap().push(format!("hello {} {:?}{rate}", sr.name_any(), status.prod_listeners));
        Ok(())
    }
    async fn create(&self, new: &NewStream, _ns: &str) -> Result<()> {
        self.writes.lock().unwrap().push(format!("create {}", new.name));
        Ok(())
    }
    async fn patch(&self, sr: &StreamRequest, patch: &Value) -> Result<()> {
        self.writes.lock().unwrap().push(format!("patch {} {patch}", sr.name_any()));
        Ok(())
    }
    async fn delete(&self, sr: &StreamRequest) -> Result<()> {
        self.writes.lock().unwrap().push(format!("delete {}", sr.name_any()));
        Ok(())
    }
    async fn gateway(&self, name: &str) -> Result<Option<scistream_api::Gateway>> {
        Ok(self.gateway.clone().filter(|g| g.name_any() == name))
    }
}

#[derive(Default)]
struct Counting(AtomicUsize);

/// `good` is alice and `bobs` is bob, both allowed everything but deleting `forbidden`.
impl Access for Counting {
    async fn authenticate(&self, token: &str) -> Result<Option<Identity>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        match token {
            "good" => Ok(Some(Identity { user: "alice".into(), groups: vec![], uid: None })),
            "bobs" => Ok(Some(Identity { user: "bob".into(), groups: vec![], uid: None })),
            _ => Err(Error::Unauthenticated("bad token".into())),
        }
    }
    async fn authorize(&self, _who: &Identity, verb: Verb, target: Target<'_>) -> Result<()> {
        match (verb, target.name) {
            (Verb::Delete, Some("forbidden")) => Err(Error::PermissionDenied("RBAC says no".into())),
            _ => Ok(()),
        }
    }
}

fn sr(name: &str, role: &str, key: &str, status: Value) -> Value {
    json!({"apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest",
        "metadata": {"name": name, "namespace": "science", "labels": {}, "annotations": {}},
        "spec": {"streamId": ID, "role": role, "gateway": "dtn", "helloKeySecretRef": {"name": key}},
        "status": status})
}

fn handler(memory: Memory, max_failures: u32) -> Handler<Memory, Counting> {
    let config = HandlerConfig {
        placement: Some(Placement {
            namespace: "science".into(),
            gateway: "dtn".into(),
            data_channel: scistream_api::DataChannel::Plain,
            rate_enforcement: RateEnforcement::ReservationOnly,
        }),
        listeners_wait: Duration::from_millis(50),
        index_wait: Duration::from_millis(200),
        ..HandlerConfig::default()
    };
    let limiter = FailureLimiter::new(max_failures, 1000, Duration::from_secs(60));
    Handler::new(memory, Counting::default(), limiter, config)
}

/// A StreamRequest a legacy `req` made: created by `creator` (a user, or `None` in mode none)
/// with token `token`.
fn legacy_sr(name: &str, role: &str, creator: Option<&str>, token: &str, status: Value) -> Value {
    let mut o = sr(name, role, &format!("{name}-hello"), status);
    o["metadata"]["annotations"][legacy::ANNOTATION_CREDENTIAL] = json!(legacy::credential_digest(token));
    if let Some(c) = creator {
        o["metadata"]["annotations"][legacy::ANNOTATION_CREATOR] = json!(c);
    }
    o
}

fn peer(port: u16) -> Option<SocketAddr> {
    Some(SocketAddr::from(([192, 0, 2, 99], port)))
}

fn hello(role: &str, listeners: &[&str]) -> proto::Hello {
    proto::Hello {
        uid: ID.into(),
        role: role.into(),
        prod_listeners: listeners.iter().map(|s| s.to_string()).collect(),
    }
}

#[tokio::test]
async fn hello_picks_the_side_by_key_and_role_and_writes_once() {
    let ready = json!({"phase": "AwaitingHello", "listeners": ["192.0.2.1:5100"]});
    let memory = Memory::with(
        vec![sr("p", "Producer", "kp", ready.clone()), sr("c", "Consumer", "kc", ready)],
        &[("kp", "K1"), ("kc", "K2")],
    );
    let h = handler(memory.clone(), 10);
    let peer = peer(40000);
    let r = h.hello(peer, Some("K2"), hello("CONS", &[])).await.unwrap();
    assert_eq!((r.message.as_str(), r.listeners.len()), (legacy::HELLO_MESSAGE, 1));
    let r = h.hello(peer, Some("K1"), hello("PROD", &["192.0.2.7:1"])).await.unwrap();
    assert_eq!(r.message, legacy::PROD_HELLO_MESSAGE);
    assert_eq!(memory.writes(), vec!["hello c None".to_owned(), "hello p Some([\"192.0.2.7:1\"])".to_owned()]);
}

#[tokio::test]
async fn refused_hellos_write_nothing() {
    let memory = Memory::with(vec![sr("p", "Producer", "kp", json!({"phase": "AwaitingHello"}))], &[("kp", "K1")]);
    let h = handler(memory.clone(), 2);
    let peer = peer(40000);
    let unknown = proto::Hello { uid: "3f0f3c4e-8f1d-4d7a-9a43-1c2b3d4e5f60".into(), ..hello("PROD", &[]) };
    assert_eq!(h.hello(peer, None, unknown).await.unwrap_err().code(), tonic::Code::NotFound);
    assert_eq!(
        h.hello(peer, Some("K1"), hello("PROD", &["x"])).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    assert_eq!(h.hello(peer, Some("K1"), hello("CONS", &[])).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    assert_eq!(
        h.hello(peer, Some("nope"), hello("PROD", &["h:1"])).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        h.hello(peer, Some("nope"), hello("PROD", &["h:1"])).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let e = h.hello(peer, Some("nope"), hello("PROD", &["h:1"])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "blocked after 2 failures: {e}");
    assert_eq!(h.hello(peer, None, hello("PROD", &["h:1"])).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert!(memory.writes().is_empty());
    // A neighbour on the same address with the right key is not locked out.
    assert!(h.hello(peer, Some("K1"), hello("PROD", &["192.0.2.7:1"])).await.is_ok());
}

#[tokio::test]
async fn a_hello_goes_to_the_req_waiting_on_its_connection() {
    // Both sides of a legacy stream on one endpoint: the producer had its Hello and its
    // update; the consumer's req waits on connection :40001, whose Hello (s2uc
    // outbound-request) says PROD and lists the consumer application's address.
    let a = vec!["192.0.2.30:7000".to_owned()];
    let producer = json!({"phase": "Ready", "helloTime": "2026-01-01T00:00:00Z", "prodListeners": a,
        "listeners": ["198.51.100.1:5100"]});
    let mut p = legacy_sr("p", "Producer", Some("alice"), "tok", producer);
    p["spec"]["targets"] = json!(a);
    let c = legacy_sr(
        "c",
        "Consumer",
        Some("alice"),
        "tok",
        json!({"phase": "AwaitingHello", "listeners": ["192.0.2.1:5100"]}),
    );
    let memory = Memory::with(vec![p, c], &[]);
    let h = handler(memory.clone(), 10);
    let waiting = h.waiting.register(ID, peer(40001), "c");
    let r = h.hello(peer(40001), Some("tok"), hello("PROD", &["192.0.2.77:9000"])).await.unwrap();
    assert_eq!(r.listeners, vec!["192.0.2.1:5100".to_owned()], "the consumer's listeners");
    assert_eq!(memory.writes(), vec!["hello c None ReservationOnly".to_owned()], "the producer is left alone");
    drop(waiting);
}

#[tokio::test]
async fn a_second_producer_hello_moves_a_legacy_streams_targets_and_is_refused_for_static_ones() {
    let a = vec!["192.0.2.30:7000".to_owned()];
    let status = json!({"phase": "Ready", "helloTime": "2026-01-01T00:00:00Z", "prodListeners": a});
    let mut p = legacy_sr("p", "Producer", Some("alice"), "tok", status.clone());
    p["spec"]["targets"] = json!(a);
    let memory = Memory::with(vec![p], &[]);
    let h = handler(memory.clone(), 10);
    h.hello(peer(1), Some("tok"), hello("PROD", &["192.0.2.30:7000"])).await.unwrap();
    assert!(memory.writes().is_empty(), "the same endpoints again change nothing");
    h.hello(peer(1), Some("tok"), hello("PROD", &["192.0.2.31:7001"])).await.unwrap();
    assert_eq!(
        memory.writes(),
        vec![
            r#"patch p {"spec":{"targets":["192.0.2.31:7001"]}}"#.to_owned(),
            r#"hello p Some(["192.0.2.31:7001"]) ReservationOnly"#.to_owned()
        ]
    );
    let mut q = sr("q", "Producer", "kq", status);
    q["spec"]["targets"] = json!(a);
    let memory = Memory::with(vec![q], &[("kq", "K")]);
    let h = handler(memory.clone(), 10);
    let e = h.hello(peer(1), Some("K"), hello("PROD", &["192.0.2.31:7001"])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(memory.writes().is_empty());
}

#[tokio::test]
async fn legacy_update_and_release_act_only_on_their_creators_legacy_streams() {
    let release = || proto::Release { uid: ID.into() };
    let update =
        || proto::UpdateTargets { uid: ID.into(), role: "PROD".into(), remote_listeners: vec!["192.0.2.5:1".into()] };
    // A stream made with kubectl scistream create, in the legacy namespace.
    let memory = Memory::with(vec![sr("made-by-plugin", "Producer", "k", json!({}))], &[("k", "K")]);
    let h = handler(memory.clone(), 10);
    for token in ["good", "bobs"] {
        let e = h.release(peer(1), Some(token), release()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        let e = h.update(peer(1), Some(token), update()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    }
    assert!(memory.writes().is_empty());
    // Alice's legacy stream: not bob's to change, alice's (with any token of hers).
    let memory = Memory::with(vec![legacy_sr("p", "Producer", Some("alice"), "old-token", json!({}))], &[]);
    let h = handler(memory.clone(), 10);
    let e = h.release(peer(1), Some("bobs"), release()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(e.to_string().contains("alice"), "{e}");
    h.update(peer(1), Some("good"), update()).await.unwrap();
    h.release(peer(1), Some("good"), release()).await.unwrap();
    assert_eq!(
        memory.writes(),
        vec![r#"patch p {"spec":{"targets":["192.0.2.5:1"]}}"#.to_owned(), "delete p".to_owned()]
    );
    // RBAC is asked about the StreamRequest by name.
    let memory = Memory::with(vec![legacy_sr("forbidden", "Producer", Some("alice"), "t", json!({}))], &[]);
    let h = handler(memory.clone(), 10);
    let e = h.release(peer(1), Some("good"), release()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(memory.writes().is_empty());
}

#[tokio::test]
async fn consumer_hello_gives_up_waiting_for_listeners() {
    let memory = Memory::with(vec![sr("c", "Consumer", "kc", json!({"phase": "Pending"}))], &[("kc", "K")]);
    let h = handler(memory, 10);
    let e = h.hello(None, Some("K"), hello("CONS", &[])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded);
}

#[tokio::test]
async fn bad_legacy_input_is_refused_before_authentication() {
    let memory = Memory::with(vec![], &[]);
    let h = handler(memory.clone(), 10);
    let bad = proto::Request { uid: ID.into(), role: "X".into(), num_conn: 1, rate: 1 };
    assert_eq!(h.req(None, Some("good"), bad).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let bad = proto::UpdateTargets { uid: ID.into(), role: "PROD".into(), remote_listeners: vec![] };
    assert_eq!(h.update(None, Some("good"), bad).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    assert_eq!(h.access.0.load(Ordering::SeqCst), 0, "no authentication call for bad input");
    let release = proto::Release { uid: ID.into() };
    assert_eq!(h.release(None, Some("bad"), release.clone()).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert_eq!(h.release(None, Some("good"), release).await.unwrap_err().code(), tonic::Code::NotFound);
    assert!(memory.writes().is_empty());
}

#[tokio::test]
async fn hellos_and_updates_to_targets_the_gateway_refuses_write_nothing() {
    let ready = json!({"phase": "AwaitingHello", "listeners": ["192.0.2.1:5100"]});
    let mut memory = Memory::with(
        vec![sr("p", "Producer", "kp", ready.clone()), sr("c", "Consumer", "kc", ready)],
        &[("kp", "K1"), ("kc", "K2")],
    );
    memory.gateway = Some(
        serde_json::from_value(json!({"apiVersion": "scistream.io/v1alpha1", "kind": "Gateway",
            "metadata": {"name": "dtn"},
            "spec": {"nodeSelector": {"a": "b"}, "bandwidth": "10Gbps", "podNamespace": "gw",
                     "policy": {"targets": {"cidrs": ["192.0.2.0/24"]}}},
            "status": {"nodes": [{"name": "n1", "ready": true, "wanAddress": "198.51.100.1",
                                  "lanAddress": "192.0.2.1", "portsInUse": 0}]}}))
        .unwrap(),
    );
    let h = handler(memory.clone(), 10);
    let peer = peer(40000);
    for (target, why) in [
        ("169.254.169.254:80", "link-local"),
        ("10.0.0.5:22", "not in targets.cidrs [192.0.2.0/24]"),
        ("192.0.2.1:10250", "the Gateway's own nodes"),
    ] {
        let e = h.hello(peer, Some("K1"), hello("PROD", &[target])).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{target}");
        assert!(e.to_string().contains(why) && e.to_string().contains("spec.policy.targets"), "{target}: {e}");
    }
    assert_eq!(memory.writes(), Vec::<String>::new(), "a refused Hello writes nothing");
    h.hello(peer, Some("K1"), hello("PROD", &["192.0.2.7:7000"])).await.unwrap();
    assert_eq!(memory.writes().len(), 1, "an allowed Hello is recorded");
}
