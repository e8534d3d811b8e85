//! Fuzzes the config parser and validator: any input must yield `Ok` or a
//! `ConfigError`, never a panic; a valid config's target selection must stay
//! in bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(cfg) = s2ds::config::Config::parse(text) {
        for l in &cfg.listeners {
            if let Some(t) = cfg.target_for(*l) {
                assert!(cfg.targets.contains(t));
            }
        }
        let _ = cfg.listeners.iter().map(ToString::to_string).count();
    }
    for line in text.lines() {
        let _ = s2ds::endpoint::Endpoint::parse(line, false);
        let _ = s2ds::config::parse_fingerprint(line);
    }
});
