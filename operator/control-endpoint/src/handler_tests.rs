//! The handlers against an in-memory [`Streams`] and a counting [`Access`]: what is refused is
//! refused before any write or any authentication call.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicUsize, Ordering},
};

use kube::runtime::watcher;
use serde_json::{Value, json};

use super::*;
use crate::{auth::Identity, index::Index, legacy::NewStream};

const ID: &str = "2f0f3c4e-8f1d-4d7a-9a43-1c2b3d4e5f60";

#[derive(Clone, Default)]
struct Memory {
    index: Index,
    keys: Arc<HashMap<String, Vec<u8>>>,
    writes: Arc<Mutex<Vec<String>>>,
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
        Self { index, keys: Arc::new(keys), writes: Arc::default() }
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
    async fn record_hello(&self, sr: &StreamRequest, _time: &str, l: Option<&[String]>) -> Result<()> {
        self.writes.lock().unwrap().push(format!("hello {} {:?}", sr.name_any(), l));
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
}

#[derive(Default)]
struct Counting(AtomicUsize);

impl Access for Counting {
    async fn check(&self, token: &str, _verb: Verb, _ns: &str) -> Result<Option<Identity>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        if token == "good" {
            Ok(Some(Identity { user: "alice".into(), groups: vec![], uid: None }))
        } else {
            Err(Error::Unauthenticated("bad token".into()))
        }
    }
}

fn sr(name: &str, role: &str, key: &str, status: Value) -> Value {
    json!({"apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest",
        "metadata": {"name": name, "namespace": "science"},
        "spec": {"streamId": ID, "role": role, "gateway": "dtn", "helloKeySecretRef": {"name": key}},
        "status": status})
}

fn handler(memory: Memory, max_failures: u32) -> Handler<Memory, Counting> {
    let config = HandlerConfig {
        placement: Some(Placement {
            namespace: "science".into(),
            gateway: "dtn".into(),
            data_channel: scistream_api::DataChannel::Plain,
        }),
        listeners_wait: Duration::from_millis(50),
        ..HandlerConfig::default()
    };
    Handler::new(memory, Counting::default(), FailureLimiter::new(max_failures, Duration::from_secs(60)), config)
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
    let peer = Some("192.0.2.99".parse().unwrap());
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
    let peer = Some("192.0.2.99".parse().unwrap());
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
    assert_eq!(h.hello(peer, None, hello("PROD", &["h:1"])).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    let e = h.hello(peer, Some("K1"), hello("PROD", &["h:1"])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "blocked after 2 failures: {e}");
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
