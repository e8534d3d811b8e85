//! Two of our record layers talking both ways at once, every read and write
//! cut short, each updating its keys every few records: each side must read
//! exactly what the other wrote. See `s2ds::relay::check::targets::duplex`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| s2ds::relay::check::targets::duplex(data));
