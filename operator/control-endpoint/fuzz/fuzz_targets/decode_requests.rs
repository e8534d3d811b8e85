//! Arbitrary bytes as each request message of `scistream.Control` (and as a JSON Hello), then
//! through every validator a request meets before anything is written: nothing may panic, and
//! whatever is accepted must be well-formed. The message-size check must give the same
//! verdict however the body is chunked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use scistream_api::DataChannel;
use scistream_control_endpoint::{auth, http, legacy, limit::FrameScanner, proto};

fuzz_target!(|data: &[u8]| {
    let placement =
        legacy::Placement { namespace: "science".into(), gateway: "dtn".into(), data_channel: DataChannel::Plain };
    if let Ok(r) = proto::Request::decode(data)
        && let Ok(new) = legacy::new_stream(&r.uid, &r.role, r.num_conn, r.rate, &placement, "token")
    {
        let sr: scistream_api::StreamRequest =
            serde_json::from_value(new.object).expect("an accepted req builds a valid StreamRequest");
        assert_eq!(sr.spec.stream_id.len(), 36);
        assert!((1..=256).contains(&sr.spec.num_connections));
    }
    if let Ok(h) = proto::Hello::decode(data) {
        let _ = legacy::lookup_uid(&h.uid);
        let _ = legacy::parse_hello_role(&h.role);
        let _ = legacy::endpoints(&h.prod_listeners, "prod_listeners", true);
    }
    if let Ok(u) = proto::UpdateTargets::decode(data)
        && let Ok(role) = legacy::parse_role(&u.role)
    {
        let _ = legacy::update_patch(role, &u.remote_listeners);
    }
    if let Ok(r) = proto::Release::decode(data) {
        let _ = legacy::lookup_uid(&r.uid);
    }
    let _ = http::parse_body(data);
    // The message-size check sees the body in chunks of any size: the verdict must not depend
    // on where the chunks split (the first byte picks the limit and the split point).
    if let Some((&pick, body)) = data.split_first() {
        let limit = usize::from(pick) * 4;
        let whole = FrameScanner::new(limit).feed(body);
        let mut split = FrameScanner::new(limit);
        let at = usize::from(pick).min(body.len());
        let chunked = split.feed(&body[..at]).and_then(|()| split.feed(&body[at..]));
        assert_eq!(whole, chunked, "limit {limit}, split at {at}");
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(token) = auth::credential(Some(text))
    {
        assert!(!token.is_empty());
        let _ = auth::hello_accepted(token, Some(data), Some("00"));
    }
});
