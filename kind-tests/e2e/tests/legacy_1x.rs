//! What a user of the unchanged SciStream 1.x clients meets (issue 23), each across the two
//! facilities with the Python `grpcio` replay of `s2uc` and `appctrl` (`py/s2uc.py`, the call
//! sequences of PROTOCOL.md): streams at full speed with their rate still reserved, both sides
//! of a stream on one endpoint, `release`/`update` only of the caller's own legacy streams, a
//! second Hello after `update`, and authentication (introspected `s2uc login` tokens, failed
//! logins counted per address and identity).

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, ensure};

use scistream_api::{Phase, StreamRequest};
use scistream_e2e::{
    faults,
    introspection::{Introspection, globus_claims},
    legacy::{self, Client, S2ucStream, code, strings},
    stream, workload,
    world::{self, PRODUCER_HOST, World},
};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(120);
/// How long the replay waits for a `req` reply (1.x's `s2uc` waits 5 s; a loaded machine).
const REPLY_WAIT: u64 = 30;
/// A 1.x stream's default rate: s2uc sends 10000 kb/s.
const DEFAULT_RATE_BPS: i64 = 10_000_000;
const MIB: u64 = 1 << 20;

fn uid(n: u8) -> String {
    format!("1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e{n:02x}")
}

/// Runs `scenario` in two facilities started with `opts`, with users `scientist` and
/// `colleague` allowed to manage StreamRequests in the users' namespace, and a 1.x client
/// (user `scientist`'s token).
async fn run<F>(opts: world::Options, scenario: F)
where
    F: AsyncFnOnce(&World, &Client) -> anyhow::Result<()>,
{
    if world::embedded_only("a user token its API servers issue") {
        return;
    }
    let python = tokio::task::spawn_blocking(python).await.unwrap().expect("grpcio venv");
    let w = World::start(&opts).await.expect("both facilities start");
    let result = async {
        legacy::grant(&w, &["scientist", "colleague"]).await?;
        let client = Client::new(&w, python, &opts.root).await?;
        scenario(&w, &client).await
    }
    .await;
    let state = if result.is_err() { stream::describe(&w).await } else { String::new() };
    w.shutdown().await;
    if let Err(e) = result {
        panic!("{e:#}\n{state}");
    }
}

/// The grpcio virtualenv's python (made once; blocking).
fn python() -> anyhow::Result<PathBuf> {
    legacy::python(&PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("control-endpoint-py"))
}

fn options() -> world::Options {
    world::Options::for_tests("S2ds").expect("s2ds is built")
}

/// The stream `uid` of `num_conn` connections at s2uc's default rate, made as `s2uc` makes it
/// (inbound-request, then outbound-request on `consumer_at`). Returns (producer listeners,
/// consumer listeners).
async fn legacy_stream(
    client: &Client,
    uid: &str,
    num_conn: usize,
    endpoints: &[String],
    consumer_at: &str,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    legacy_stream_at(client, uid, num_conn, 10_000, endpoints, consumer_at).await
}

/// [`legacy_stream`] with `rate` kb/s in both `req`s (0: unset).
async fn legacy_stream_at(
    client: &Client,
    uid: &str,
    num_conn: usize,
    rate: i32,
    endpoints: &[String],
    consumer_at: &str,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let stream = S2ucStream { uid, num_conn, rate, endpoints, consumer_at, wait: REPLY_WAIT };
    client.s2uc_stream(&stream).await
}

/// `bytes` rounded up to a multiple of `connections` (each connection carries the same share).
fn at_least(bytes: u64, connections: usize) -> u64 {
    bytes.div_ceil(connections as u64) * connections as u64
}

fn addresses(listeners: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    listeners.iter().map(|l| l.parse().with_context(|| format!("listener {l}"))).collect()
}

/// Rounds of the applications (the producer serving on `endpoints`, the consumer reading
/// through `targets`, `bytes_per_connection` each) until one is verified, at most 10 of at
/// most 20 s: the relays pick new targets up by reloading. Returns the bytes verified.
async fn until_verified(
    w: &World,
    endpoints: &[String],
    targets: &[SocketAddr],
    bytes_per_connection: u64,
) -> anyhow::Result<u64> {
    let mut last = None;
    for attempt in 0..10u64 {
        let mut listeners = Vec::new();
        for e in endpoints {
            let port = e.parse::<SocketAddr>()?.port();
            listeners.push(w.listen(PRODUCER_HOST, port).await.with_context(|| format!("listen on {e}"))?);
        }
        let n = targets.len();
        let deadline = Duration::from_secs(20);
        let mut producer = faults::AbortOnDrop(tokio::spawn(workload::produce(
            listeners,
            n,
            bytes_per_connection,
            attempt * 8,
            deadline,
        )));
        let (apps, all) = (w.apps(), targets.to_vec());
        let consumer = workload::consume(n, move |i| {
            let (apps, addr) = (apps.clone(), all[i]);
            async move { apps.connect(world::CONSUMER_HOST, addr).await }
        });
        match tokio::time::timeout(deadline, consumer).await {
            Ok(Ok(received)) if received.iter().all(|t| t.bytes == bytes_per_connection) => {
                let sent = (&mut producer.0).await?.context("producer application")?;
                ensure!(sent == received, "data differs between the ends: {sent:?} vs {received:?}");
                return Ok(received.iter().map(|t| t.bytes).sum());
            }
            Ok(Ok(received)) => last = Some(anyhow::anyhow!("cut connections: {received:?}")),
            Ok(Err(e)) => last = Some(e.into()),
            Err(_) => last = Some(anyhow::anyhow!("no data within {}s", deadline.as_secs())),
        }
        drop(producer);
        tokio::time::sleep(Duration::from_millis(500)).await; // pacing between rounds, not synchronisation
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no round ran"))).context("10 rounds, none verified")
}

fn names(uid: &str) -> (String, String) {
    (format!("legacy-{uid}-prod"), format!("legacy-{uid}-cons"))
}

fn ready(sr: &StreamRequest) -> bool {
    faults::phase(sr) == Some(Phase::Ready)
}

/// Releases `uid` at both endpoints as the stream's creator and checks nothing is left.
async fn release_both(w: &World, client: &Client, uid: &str) -> anyhow::Result<()> {
    let seen =
        client.actions(uid, json!([{"do": "release", "at": "producer"}, {"do": "release", "at": "consumer"}])).await?;
    ensure!(seen.iter().all(|r| code(r) == "OK"), "release: {seen:?}");
    let (p, c) = names(uid);
    faults::wait_gone(w, 0, &p, LONG).await?;
    faults::wait_gone(w, 1, &c, LONG).await?;
    stream::assert_nothing_left(w, uid).await
}

/// Makes the legacy stream `u` at `rate_kbps` as an unchanged `s2uc` does, waits for both
/// sides Ready and streams 64 MiB through it over 5 connections; returns the seconds taken.
async fn timed_64_mib(w: &World, client: &Client, u: &str, rate_kbps: i32) -> anyhow::Result<f64> {
    let (producer, endpoints) = stream::app_listeners(w, 5).await?;
    let (_, consumer) = legacy_stream_at(client, u, 5, rate_kbps, &endpoints, "consumer").await?;
    let (p, c) = names(u);
    faults::wait_request(w, 0, &p, LONG, "Ready", ready).await?;
    faults::wait_request(w, 1, &c, LONG, "Ready", ready).await?;
    let bytes = at_least(64 * MIB, 5);
    let moved = stream::transfer(w, producer, &addresses(&consumer)?, bytes).await?;
    ensure!(moved.bytes() == bytes, "verified {} bytes", moved.bytes());
    Ok(moved.seconds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unchanged_s2uc_streams_run_at_full_speed_with_their_rate_reserved() {
    run(options(), async |w, client| {
        // The same 64 MiB through a stream with the rate unset (`rate` 0 on the wire) and one
        // at the 10000 kb/s an unchanged s2uc always sends, one after the other in one run.
        let unset = uid(9);
        let unset_seconds = timed_64_mib(w, client, &unset, 0).await?;
        release_both(w, client, &unset).await?;
        let u = uid(1);
        let seconds = timed_64_mib(w, client, &u, 10_000).await?;
        let bytes = at_least(64 * MIB, 5);
        let limited = (bytes * 8) as f64 / DEFAULT_RATE_BPS as f64;
        eprintln!(
            "64 MiB through an unchanged s2uc stream: {seconds:.2} s ({:.2} Gbit/s); with the rate unset {unset_seconds:.2} s (ratio {:.2}); enforcing its 10 Mbit/s would take {limited:.1} s",
            (bytes * 8) as f64 / seconds / 1e9,
            seconds / unset_seconds,
        );
        ensure!(
            seconds < limited / 2.0,
            "64 MiB took {seconds:.1}s (rate unset: {unset_seconds:.2}s): the relays limit the stream to the 10 Mbit/s s2uc sends by default ({limited:.1}s)"
        );
        let (p, c) = names(&u);
        // The rate is still counted against each Gateway's bandwidth, and status says it is not enforced.
        for (i, name) in [(0, &p), (1, &c)] {
            let sr = legacy::raw_request(w, i, name).await?;
            ensure!(sr["status"]["rateEnforcement"] == "ReservationOnly", "{name}: {}", sr["status"]);
            let held: Vec<i64> = stream::holdings(&w.facilities[i].client)
                .await?
                .iter()
                .filter(|r| r.stream_id == u)
                .map(|r| r.bandwidth_bps)
                .collect();
            ensure!(held == [DEFAULT_RATE_BPS], "{}: reserved {held:?}", w.facilities[i].name);
            let configs = stream::relay_configs(w, i, &u).await?;
            ensure!(!configs.is_empty() && configs.iter().all(|c| !c.contains("rateBitsPerSecond")), "{configs:?}");
        }
        release_both(w, client, &u).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_sides_of_a_legacy_stream_on_one_endpoint() {
    run(options(), async |w, client| {
        let u = uid(2);
        let (producer, endpoints) = stream::app_listeners(w, 3).await?;
        // outbound-request to the producer facility's endpoint too: its Hello says PROD and
        // lists the consumer application's address.
        let (_, consumer) = legacy_stream(client, &u, 3, &endpoints, "producer").await?;
        let (p, c) = names(&u);
        let prod = faults::wait_request(w, 0, &p, LONG, "Ready", ready).await?;
        faults::wait_request(w, 0, &c, LONG, "Ready", ready).await?;
        let recorded = prod.status.as_ref().map(|s| s.prod_listeners.clone()).unwrap_or_default();
        ensure!(recorded == endpoints, "the producer's prodListeners were overwritten: {recorded:?}");
        ensure!(prod.spec.targets.as_ref() == Some(&endpoints), "targets: {:?}", prod.spec.targets);
        // Both relays in one facility; the consumer application on its LAN.
        let bytes = at_least(8 * MIB, 3);
        let moved = stream::transfer_from(w, PRODUCER_HOST, producer, &addresses(&consumer)?, bytes, 1).await?;
        ensure!(moved.bytes() == bytes, "verified {} bytes", moved.bytes());
        let released = client.action(&u, json!({"do": "release", "at": "producer"})).await?;
        ensure!(code(&released) == "OK", "{released}");
        faults::wait_gone(w, 0, &p, LONG).await?;
        faults::wait_gone(w, 0, &c, LONG).await?;
        stream::assert_nothing_left(w, &u).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn legacy_release_and_update_touch_only_the_callers_own_legacy_streams() {
    run(options(), async |w, client| {
        // A stream made with kubectl scistream create, in the namespace legacy streams use.
        let opts = stream::StreamOptions::new("made-by-plugin", MIB, 2, "1Gbps", "Plain")?;
        let made = stream::create(w, &opts).await?;
        let id = made.stream_id.as_str();
        let refused = client
            .actions(id, json!([{"do": "release", "at": "producer"}, {"do": "release", "at": "consumer"},
                {"do": "update", "at": "producer", "role": "PROD", "remote": ["192.0.2.1:1"]}]))
            .await?;
        ensure!(refused.iter().all(|r| code(r) == "PERMISSION_DENIED"), "{refused:?}");
        for i in 0..2 {
            let sr = faults::request(w, i, &opts.name).await?;
            ensure!(sr.metadata.deletion_timestamp.is_none() && sr.spec.targets.is_none(), "{}: touched", w.facilities[i].name);
        }
        // Scientist's legacy stream: not colleague's to change, though both may manage
        // StreamRequests in the namespace.
        let u = uid(3);
        let (_, endpoints) = stream::app_listeners(w, 2).await?;
        legacy_stream(client, &u, 2, &endpoints, "consumer").await?;
        let colleague = w.colleague_token.as_str();
        let refused = client
            .actions(&u, json!([{"do": "release", "at": "producer", "token": colleague},
                {"do": "update", "at": "consumer", "role": "CONS", "remote": ["198.51.100.9:5100"], "token": colleague}]))
            .await?;
        ensure!(refused.iter().all(|r| code(r) == "PERMISSION_DENIED"), "{refused:?}");
        ensure!(refused[0]["details"].as_str().unwrap_or_default().contains("scientist"), "{refused:?}");
        let (p, _) = names(&u);
        ensure!(faults::request(w, 0, &p).await?.metadata.deletion_timestamp.is_none(), "released by colleague");
        release_both(w, client, &u).await?;
        stream::release(w, &opts, id).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_the_none_mode_an_anonymous_release_leaves_streams_it_did_not_create() {
    let mut opts = options();
    opts.operator_args = vec!["--control-auth".into(), "none".into()];
    run(opts, async |w, client| {
        let opts = stream::StreamOptions::new("made-by-plugin", MIB, 2, "1Gbps", "Plain")?;
        let made = stream::create(w, &opts).await?;
        let anonymous = client
            .actions(
                &made.stream_id,
                json!([{"do": "release", "at": "producer", "token": "INVALID_TOKEN"},
                {"do": "release", "at": "consumer", "token": "INVALID_TOKEN"}]),
            )
            .await?;
        ensure!(anonymous.iter().all(|r| code(r) == "PERMISSION_DENIED"), "{anonymous:?}");
        for i in 0..2 {
            ensure!(faults::request(w, i, &opts.name).await?.metadata.deletion_timestamp.is_none(), "released");
        }
        // Its own legacy streams it releases, as in 1.x's trusted testbed.
        let u = uid(4);
        let (_, endpoints) = stream::app_listeners(w, 1).await?;
        legacy_stream(client, &u, 1, &endpoints, "consumer").await?;
        release_both(w, client, &u).await?;
        stream::release(w, &opts, &made.stream_id).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_hello_after_update_moves_the_relays_to_its_endpoints() {
    run(options(), async |w, client| {
        let u = uid(5);
        let (first, endpoints) = stream::app_listeners(w, 2).await?;
        let (_, consumer) = legacy_stream(client, &u, 2, &endpoints, "consumer").await?;
        let (p, c) = names(&u);
        faults::wait_request(w, 0, &p, LONG, "Ready", ready).await?;
        faults::wait_request(w, 1, &c, LONG, "Ready", ready).await?;
        let targets = addresses(&consumer)?;
        stream::transfer(w, first, &targets, 4 * MIB).await?;
        // The producer application restarts elsewhere; its controller says Hello again.
        let app = w.apps().address(PRODUCER_HOST)?;
        let moved_to: Vec<String> = (0..2).map(|i| SocketAddr::new(app, 7300 + i).to_string()).collect();
        let token = w.scientist_token.as_str();
        let hello = client
            .action(
                &u,
                json!({"do": "appctrl", "at": "producer", "role": "PROD", "key": token, "prod_listeners": moved_to}),
            )
            .await?;
        ensure!(code(&hello) == "OK", "{hello}");
        let sr = faults::wait_request(w, 0, &p, LONG, "retargeted", |sr| sr.spec.targets.as_ref() == Some(&moved_to))
            .await?;
        let recorded = sr.status.as_ref().map(|s| s.prod_listeners.clone()).unwrap_or_default();
        ensure!(recorded == moved_to, "status says {recorded:?}, the relays forward to {moved_to:?}");
        // The relays reload their targets (no restart): rounds until the data arrives there.
        let moved = until_verified(w, &moved_to, &targets, 2 * MIB).await?;
        ensure!(moved == 4 * MIB, "verified {moved} bytes");
        release_both(w, client, &u).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_clients_failed_logins_do_not_lock_out_its_neighbours() {
    run(options(), async |w, client| {
        // A client with an expired token retries: after 20 failures in a minute it is refused
        // (kubernetes mode; the default limit), from 127.0.0.1 like every client here.
        let bad = client
            .action(
                &uid(6),
                json!({"do": "reqs", "at": "producer", "count": 24, "token": "expired-token",
                "uid_prefix": "6c2d3e4f-5a6b-4c7d-8e9f-"}),
            )
            .await?;
        let codes = strings(&bad["codes"]);
        ensure!(codes[..20].iter().all(|c| c == "UNAUTHENTICATED"), "{codes:?}");
        ensure!(codes[20..].iter().all(|c| c == "RESOURCE_EXHAUSTED"), "{codes:?}");
        // Its neighbour on the same host streams.
        let u = uid(7);
        let (producer, endpoints) = stream::app_listeners(w, 2).await?;
        let (_, consumer) = legacy_stream(client, &u, 2, &endpoints, "consumer").await?;
        let (p, c) = names(&u);
        faults::wait_request(w, 0, &p, LONG, "Ready", ready).await?;
        faults::wait_request(w, 1, &c, LONG, "Ready", ready).await?;
        stream::transfer(w, producer, &addresses(&consumer)?, MIB).await?;
        let still = client
            .action(
                &uid(6),
                json!({"do": "reqs", "at": "producer", "count": 1, "token": "expired-token",
                "uid_prefix": "6c2d3e4f-5a6b-4c7d-8e9f-"}),
            )
            .await?;
        ensure!(strings(&still["codes"]) == ["RESOURCE_EXHAUSTED"], "{still}");
        release_both(w, client, &u).await
    })
    .await;
}

/// The scope a facility's SciStream resource server registers at Globus Auth (1.x's form).
const SCOPE: &str = "https://auth.globus.org/scopes/5f8a7e36-facility-client/scistream";
const CLIENT_ID: &str = "5f8a7e36-facility-client";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s2uc_login_users_keep_their_workflow_with_introspected_tokens() {
    let tokens = BTreeMap::from([
        ("scientist-globus-token".to_owned(), globus_claims("scientist@uni.edu", SCOPE, CLIENT_ID)),
        ("stranger-globus-token".to_owned(), globus_claims("stranger@uni.edu", SCOPE, CLIENT_ID)),
        (
            "scientist-transfer-token".to_owned(),
            globus_claims(
                "scientist@uni.edu",
                "urn:globus:auth:scope:transfer.api.globus.org:all",
                "transfer.api.globus.org",
            ),
        ),
    ]);
    let idp = Introspection::start(CLIENT_ID, "facility-secret", tokens).await.expect("introspection server");
    let mut opts = options();
    #[rustfmt::skip]
    let args = [
        "--control-auth", "introspection", "--control-introspection-url", &idp.url(),
        "--control-introspection-secret", "globus-client", "--control-identity-prefix", "globus:",
        "--control-introspection-scope", SCOPE, "--control-introspection-audience", CLIENT_ID,
    ];
    opts.operator_args = args.iter().map(|s| s.to_string()).collect();
    let creds = BTreeMap::from([
        ("client_id".to_owned(), CLIENT_ID.to_owned()),
        ("client_secret".to_owned(), "facility-secret".to_owned()),
    ]);
    opts.control_secrets = vec![("globus-client".to_owned(), creds)];
    run(opts, async |w, client| {
        legacy::grant(w, &["globus:scientist@uni.edu"]).await?;
        let u = uid(8);
        // Refused, each with its reason: not logged in, a token for another service, a user
        // the facility has not let in.
        let refused = client
            .actions(&u, json!([
                {"do": "update", "at": "producer", "role": "PROD", "remote": ["192.0.2.1:1"], "token": "INVALID_TOKEN"},
                {"do": "update", "at": "producer", "role": "PROD", "remote": ["192.0.2.1:1"], "token": "scientist-transfer-token"},
                {"do": "update", "at": "producer", "role": "PROD", "remote": ["192.0.2.1:1"], "token": "stranger-globus-token"},
            ]))
            .await?;
        let codes: Vec<&str> = refused.iter().map(code).collect();
        ensure!(codes == ["UNAUTHENTICATED", "UNAUTHENTICATED", "NOT_FOUND"], "{refused:?}");
        ensure!(refused[1]["details"].as_str().unwrap_or_default().contains("scope"), "{refused:?}");
        let stranger = client
            .action(&u, json!({"do": "inbound", "at": "producer", "num_conn": 1, "prod_listeners": ["192.0.2.9:1"],
                "token": "stranger-globus-token", "wait": REPLY_WAIT}))
            .await?;
        ensure!(code(&stranger) == "PERMISSION_DENIED", "{stranger}");
        ensure!(stranger["details"].as_str().unwrap_or_default().contains("globus:stranger@uni.edu"), "{stranger}");
        // The logged-in user's whole flow, Hello included (with the same token, as s2uc sends it).
        let logged_in = Client::new(w, python()?, &options().root).await?.with_token("scientist-globus-token");
        let (producer, endpoints) = stream::app_listeners(w, 2).await?;
        let (_, consumer) = legacy_stream(&logged_in, &u, 2, &endpoints, "consumer").await?;
        let (p, c) = names(&u);
        let sr = faults::wait_request(w, 0, &p, LONG, "Ready", ready).await?;
        let creator = sr.metadata.annotations.unwrap_or_default().get("scistream.io/legacy-creator").cloned();
        ensure!(creator.as_deref() == Some("globus:scientist@uni.edu"), "creator {creator:?}");
        faults::wait_request(w, 1, &c, LONG, "Ready", ready).await?;
        stream::transfer(w, producer, &addresses(&consumer)?, MIB).await?;
        release_both(w, &logged_in, &u).await
    })
    .await;
    drop(idp);
}

/// What the scenarios above get from the replay, checked once on its own: a Value per action.
#[test]
fn results_read_as_codes() {
    assert_eq!(code(&json!({"code": "OK"})), "OK");
    assert_eq!(code(&Value::Null), "");
    assert_eq!(strings(&json!(["a", 1, "b"])), ["a", "b"]);
}
