//! A peer's record stream from a script (data, key updates whole and split,
//! tickets, alerts of any level, raw handshake bytes, other inner types,
//! padding, corrupted bytes, records in the clear, oversized and short
//! records, truncation), sealed with the right keys: our receiver must
//! deliver and end exactly as the script's judgement says. See
//! `s2ds::relay::check::targets::sequence`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| s2ds::relay::check::targets::sequence(data));
