//! Arbitrary bytes in place of a peer's TLS records (the seeds are sealed
//! streams: mutations split, repeat, truncate and corrupt them): our
//! receiver must not panic or spin, and must end the same way whether the
//! bytes come at once or cut anywhere. See `s2ds::relay::check::targets::records`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| s2ds::relay::check::targets::records(data));
