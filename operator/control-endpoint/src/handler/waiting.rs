//! The legacy `req`s this endpoint is serving, by stream id and connection: `s2uc` sends its
//! Hello 0.5 s after its `req`, on the same channel (so the same connection, so the same
//! replica), and with role `PROD` even from `outbound-request`. A Hello is routed to the
//! request whose `req` waits on its own connection; and for a stream id whose `req` is still
//! being created, a Hello waits for the StreamRequest instead of answering NOT_FOUND.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

#[derive(Clone, Debug, PartialEq, Eq)]
struct Waiter {
    id: u64,
    peer: Option<SocketAddr>,
    name: String,
}

#[derive(Default)]
struct Table {
    next: u64,
    by_stream: HashMap<String, Vec<Waiter>>,
}

/// Legacy `req`s in progress (shared by the handler's calls).
#[derive(Clone, Default)]
pub struct Waiting(Arc<Mutex<Table>>);

/// A registered `req`; dropping it (when the `req` answers or is abandoned) unregisters it.
pub struct Registration {
    table: Waiting,
    stream_id: String,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut table = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = table.by_stream.get_mut(&self.stream_id) {
            list.retain(|w| w.id != self.id);
            if list.is_empty() {
                table.by_stream.remove(&self.stream_id);
            }
        }
    }
}

impl Waiting {
    /// Registers a `req` from `peer` creating StreamRequest `name` of `stream_id`.
    pub fn register(&self, stream_id: &str, peer: Option<SocketAddr>, name: &str) -> Registration {
        let mut table = self.0.lock().unwrap_or_else(|p| p.into_inner());
        table.next += 1;
        let id = table.next;
        table.by_stream.entry(stream_id.to_owned()).or_default().push(Waiter { id, peer, name: name.to_owned() });
        Registration { table: self.clone(), stream_id: stream_id.to_owned(), id }
    }

    /// The StreamRequest whose `req` for `stream_id` waits on the connection of `peer`, if one
    /// does (the most recent, if several).
    pub fn on_connection(&self, stream_id: &str, peer: Option<SocketAddr>) -> Option<String> {
        let peer = peer?;
        let table = self.0.lock().unwrap_or_else(|p| p.into_inner());
        table.by_stream.get(stream_id)?.iter().rev().find(|w| w.peer == Some(peer)).map(|w| w.name.clone())
    }

    /// Whether any `req` for `stream_id` is in progress.
    pub fn any(&self, stream_id: &str) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).by_stream.contains_key(stream_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_found_by_connection_until_they_end() {
        let w = Waiting::default();
        let (a, b): (SocketAddr, SocketAddr) = ("192.0.2.1:40000".parse().unwrap(), "192.0.2.1:40001".parse().unwrap());
        let prod = w.register("s", Some(a), "legacy-s-prod");
        let cons = w.register("s", Some(b), "legacy-s-cons");
        assert_eq!(w.on_connection("s", Some(b)).as_deref(), Some("legacy-s-cons"));
        assert_eq!(w.on_connection("s", Some(a)).as_deref(), Some("legacy-s-prod"));
        assert_eq!(w.on_connection("s", Some("192.0.2.1:40002".parse().unwrap())), None, "another connection");
        assert_eq!(w.on_connection("s", None), None);
        assert_eq!(w.on_connection("t", Some(a)), None);
        drop(cons);
        assert_eq!(w.on_connection("s", Some(b)), None);
        assert!(w.any("s"));
        drop(prod);
        assert!(!w.any("s"));
        assert!(w.0.lock().unwrap().by_stream.is_empty(), "nothing left behind");
    }
}
