use super::*;
use proptest::prelude::*;

const FULL: &str = r#"
streamId: 3f2b-a
mode: tls-client
listeners:
  - 198.51.100.10:5100
  - "[2001:db8::1]:5101"
  - 198.51.100.10:5102
targets:
  - 10.0.0.5:7000
  - gw.example.org:7001
rateBitsPerSecond: 10000000000
tls:
  certFile: /etc/s2ds/tls/tls.crt
  keyFile: /etc/s2ds/tls/tls.key
  peerFingerprintSha256: "ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89"
metricsAddress: 127.0.0.1:9100
drainSeconds: 5
bufferBytes: 131072
"#;

fn invalid(text: &str) -> Vec<String> {
    match Config::parse(text) {
        Err(ConfigError::Invalid(v)) => v.iter().map(ToString::to_string).collect(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn full_config_parses() {
    let c = Config::parse(FULL).unwrap();
    assert_eq!(c.mode, Mode::TlsClient);
    assert_eq!(c.listeners.len(), 3);
    assert_eq!(c.targets.len(), 2);
    assert_eq!(c.rate_bits_per_second, Some(10_000_000_000));
    assert_eq!(c.drain_seconds, 5);
    assert_eq!(c.buffer_bytes, 131_072);
    let tls = c.tls.as_ref().unwrap();
    assert!(matches!(tls.peer, PeerPin::Fingerprint(fp) if fp[0] == 0xab && fp[31] == 0x89));
    assert!(tls.kernel_tls, "kernel TLS where available unless switched off");
    // listener i -> target i mod 2
    assert_eq!(c.target_for(c.listeners[0]), Some(&c.targets[0]));
    assert_eq!(c.target_for(c.listeners[1]), Some(&c.targets[1]));
    assert_eq!(c.target_for(c.listeners[2]), Some(&c.targets[0]));
    assert_eq!(c.target_for("127.0.0.1:1".parse().unwrap()), None);
}

#[test]
fn the_record_layer_is_ours_unless_rustls_is_asked_for() {
    assert_eq!(Config::parse(FULL).unwrap().tls.unwrap().record_layer, RecordLayer::S2ds);
    let c = Config::parse(&FULL.replace("  keyFile:", "  recordLayer: rustls\n  keyFile:")).unwrap();
    let tls = c.tls.unwrap();
    assert_eq!(tls.record_layer, RecordLayer::Rustls);
    assert!(!tls.kernel_tls, "kernel TLS replaces our record layer, never rustls's");
    let errs = invalid(&FULL.replace("  keyFile:", "  recordLayer: rustls\n  kernelTls: true\n  keyFile:"));
    assert!(errs.iter().any(|e| e.contains("tls.kernelTls") && e.contains("recordLayer: s2ds")), "{errs:?}");
    let errs = Config::parse(&FULL.replace("  keyFile:", "  recordLayer: openssl\n  keyFile:")).unwrap_err();
    assert!(
        errs.to_string().contains("tls.recordLayer: unknown variant `openssl`, expected `s2ds` or `rustls`"),
        "{errs}"
    );
}

#[test]
fn kernel_tls_can_be_switched_off() {
    let c = Config::parse(&FULL.replace("  keyFile:", "  kernelTls: false\n  keyFile:")).unwrap();
    assert!(!c.tls.unwrap().kernel_tls);
    let errs = Config::parse(&FULL.replace("  keyFile:", "  kernelTls: maybe\n  keyFile:")).unwrap_err();
    assert!(errs.to_string().contains("kernelTls"), "{errs}");
}

#[test]
fn minimal_plain_uses_defaults() {
    let c = Config::parse("streamId: s\nmode: plain\nlisteners: [127.0.0.1:0]\n").unwrap();
    assert!(c.targets.is_empty());
    assert_eq!(c.drain_seconds, DEFAULT_DRAIN_SECONDS);
    assert_eq!(c.buffer_bytes, DEFAULT_BUFFER_BYTES);
    assert_eq!(c.target_for(c.listeners[0]), None, "no targets: refuse");
}

#[test]
fn errors_name_field_and_value() {
    let errs = invalid("streamId: s\nmode: plain\nlisteners: [127.0.0.1:1, 127.0.0.1:2, 1.2.3.4]\ntargets: ['x:0']\n");
    assert_eq!(
        errs,
        vec![
            r#"listeners[2]: "1.2.3.4" is not host:port (missing :port)"#,
            r#"targets[0]: "x:0" is not host:port (port must be a number in 1..=65535)"#,
        ]
    );
}

#[test]
fn listener_rules() {
    let errs = invalid("streamId: s\nmode: plain\nlisteners: [a.b:1, 127.0.0.1:1, 127.0.0.1:1]\n");
    assert!(errs[0].starts_with(r#"listeners[0]: "a.b:1" is not an IP"#), "{errs:?}");
    assert!(errs[1].starts_with("listeners[2]"), "{errs:?}");
    let errs = invalid("streamId: s\nmode: plain\nlisteners: []\n");
    assert!(errs[0].starts_with("listeners: must list"));
}

#[test]
fn tls_rules() {
    let base = "streamId: s\nlisteners: [127.0.0.1:1]\n";
    let errs = invalid(&format!("{base}mode: tls-server\n"));
    assert_eq!(errs, vec!["tls: is required when mode is tls-server"]);
    let errs = invalid(&format!("{base}mode: plain\ntls: {{certFile: a, keyFile: b, peerCertFile: c}}\n"));
    assert_eq!(errs, vec!["tls: must be absent when mode is plain"]);
    let errs = invalid(&format!(
        "{base}mode: tls-client\ntls: {{certFile: a, keyFile: b, peerCertFile: c, peerFingerprintSha256: '00'}}\n"
    ));
    assert!(errs[0].contains("exactly one of"), "{errs:?}");
    let errs =
        invalid(&format!("{base}mode: tls-client\ntls: {{certFile: a, keyFile: b, peerFingerprintSha256: 'zz'}}\n"));
    assert_eq!(errs, vec![r#"tls.peerFingerprintSha256: "zz" is not 32 hex bytes (colons optional)"#]);
}

#[test]
fn scalar_rules() {
    let base = "streamId: s\nmode: plain\nlisteners: [127.0.0.1:1]\n";
    assert!(invalid(&format!("{base}rateBitsPerSecond: 0\n"))[0].starts_with("rateBitsPerSecond"));
    assert!(invalid(&format!("{base}bufferBytes: 10\n"))[0].starts_with("bufferBytes: 10 "));
    assert!(invalid(&format!("{base}drainSeconds: 99999\n"))[0].starts_with("drainSeconds"));
    assert!(invalid(&format!("{base}metricsAddress: x\n"))[0].starts_with("metricsAddress"));
    assert!(invalid("streamId: 'a b'\nmode: plain\nlisteners: [127.0.0.1:1]\n")[0].starts_with(r#"streamId: "a b""#));
}

#[test]
fn unknown_fields_and_modes_are_syntax_errors() {
    let e = Config::parse("streamId: s\nmode: plain\nlisteners: []\nbogus: 1\n").unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
    let e = Config::parse("streamId: s\nmode: fast\nlisteners: []\n").unwrap_err();
    assert!(e.to_string().contains("fast"), "{e}");
}

#[test]
fn fingerprint_forms() {
    let fp: [u8; 32] = core::array::from_fn(|i| u8::try_from(i * 7).unwrap());
    let colons = format_fingerprint(&fp);
    assert_eq!(parse_fingerprint(&colons), Some(fp));
    assert_eq!(parse_fingerprint(&colons.replace(':', "").to_lowercase()), Some(fp));
    assert_eq!(parse_fingerprint(&colons[3..]), None);
    assert_eq!(parse_fingerprint("é"), None);
}

proptest! {
    #[test]
    fn parse_never_panics(s in "\\PC{0,200}") {
        let _ = Config::parse(&s);
    }

    #[test]
    fn fingerprint_round_trips(fp in any::<[u8; 32]>()) {
        prop_assert_eq!(parse_fingerprint(&format_fingerprint(&fp)), Some(fp));
    }

    #[test]
    fn target_selection_is_modular(n_l in 1usize..20, n_t in 0usize..5, pick in 0usize..20) {
        let listeners: Vec<SocketAddr> =
            (0..n_l).map(|i| SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16))).collect();
        let targets: Vec<Endpoint> = (0..n_t)
            .map(|i| Endpoint::parse(&format!("10.0.0.{i}:80"), false).unwrap())
            .collect();
        let i = pick % n_l;
        let got = select_target(&listeners, &targets, listeners[i]);
        if n_t == 0 { prop_assert!(got.is_none()); }
        else { prop_assert_eq!(got, Some(&targets[i % n_t])); }
    }
}
