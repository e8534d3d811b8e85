//! `host:port` parsing as the control endpoint applies it to `prod_listeners` and
//! `remote_listeners`: never panics, and whatever parses prints back to a string that parses to
//! the same endpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scistream_api::Endpoint;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(endpoint) = text.parse::<Endpoint>() {
        let printed = endpoint.to_string();
        let again: Endpoint = printed.parse().expect("a printed endpoint parses");
        assert_eq!(again, endpoint);
    }
    let list: Vec<String> = text.split(',').map(str::to_owned).collect();
    let _ = scistream_control_endpoint::legacy::endpoints(&list, "remote_listeners", false);
});
