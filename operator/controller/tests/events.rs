//! The operator's event publisher against the test cluster: a repeat within the series window
//! is one Event with a series (as client-go and kube-runtime publish them), its first note
//! kept; what it remembers is bounded, the least recently published forgotten first, and a
//! forgotten event is published again as a new object, never lost.

use std::num::NonZeroUsize;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{ListParams, PostParams};
use kube::{Api, Resource};
use scistream_controller::events::{Event, EventType, Publisher};
use scistream_testkit::{Facility, USER_NS};

fn normal<'a>(reason: &'a str, note: &'a str) -> Event<'a> {
    Event { type_: EventType::Normal, reason, note, action: "Reconcile" }
}

async fn events_about(api: &Api<K8sEvent>, name: &str) -> Vec<K8sEvent> {
    let all = api.list(&ListParams::default()).await.expect("list events").items;
    all.into_iter().filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)).collect()
}

fn count(e: &K8sEvent) -> i32 {
    e.series.as_ref().map_or(1, |s| s.count)
}

#[tokio::test]
async fn repeats_are_a_series_and_the_memory_of_them_is_bounded() {
    let f = Facility::start("events").await;
    let cms: Api<ConfigMap> = Api::namespaced(f.client.clone(), USER_NS);
    let mut refs: Vec<ObjectReference> = Vec::new();
    for name in ["a", "b", "c"] {
        let cm = ConfigMap {
            metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
            ..Default::default()
        };
        refs.push(cms.create(&PostParams::default(), &cm).await.expect("create").object_ref(&()));
    }
    let events: Api<K8sEvent> = Api::namespaced(f.client.clone(), USER_NS);
    let capacity = NonZeroUsize::new(2).expect("non-zero");
    let p = Publisher::new(f.client.clone(), "scistream-operator".into(), "test-0".into(), capacity);

    // A repeat is the same object, counted; its first note stays.
    p.publish(normal("Ready", "Ready: first"), &refs[0]).await.expect("publish");
    p.publish(normal("Ready", "Ready: again"), &refs[0]).await.expect("publish");
    p.publish(normal("Ready", "Ready: third"), &refs[0]).await.expect("publish");
    let about_a = events_about(&events, "a").await;
    assert_eq!(about_a.len(), 1, "{about_a:?}");
    assert_eq!(count(&about_a[0]), 3);
    assert_eq!(about_a[0].note.as_deref(), Some("Ready: first"));
    assert_eq!(about_a[0].reporting_controller.as_deref(), Some("scistream-operator"));
    assert_eq!(about_a[0].reporting_instance.as_deref(), Some("test-0"));
    assert!(
        about_a[0]
            .series
            .as_ref()
            .is_some_and(|s| s.last_observed_time.0 >= about_a[0].event_time.as_ref().expect("time").0)
    );

    // Another type or reason is another event.
    p.publish(Event { type_: EventType::Warning, ..normal("Ready", "odd") }, &refs[0]).await.expect("publish");
    assert_eq!(events_about(&events, "a").await.len(), 2);
    assert_eq!(p.remembered(), 2);

    // Two more objects: the publisher remembers two events, and forgot a's first.
    p.publish(normal("Ready", "Ready"), &refs[1]).await.expect("publish");
    p.publish(normal("Ready", "Ready"), &refs[2]).await.expect("publish");
    assert_eq!(p.remembered(), 2);
    p.publish(normal("Ready", "Ready: after"), &refs[0]).await.expect("publish");
    let about_a = events_about(&events, "a").await;
    assert_eq!(about_a.len(), 3, "a forgotten event is published again as a new object: {about_a:?}");
    let newest = about_a.iter().find(|e| e.note.as_deref() == Some("Ready: after")).expect("the new event");
    assert_eq!(count(newest), 1);
    // ... and c, the most recent, is still counted as a series.
    p.publish(normal("Ready", "Ready"), &refs[2]).await.expect("publish");
    let about_c = events_about(&events, "c").await;
    assert_eq!(about_c.iter().map(count).collect::<Vec<_>>(), [2]);

    // A repeat of an event whose object is gone (deleted, or expired by the API server's TTL)
    // is published anew rather than lost.
    let first = events_about(&events, "c").await.remove(0);
    events.delete(first.metadata.name.as_deref().expect("named"), &Default::default()).await.expect("delete");
    p.publish(normal("Ready", "Ready: anew"), &refs[2]).await.expect("publish");
    let about_c = events_about(&events, "c").await;
    assert_eq!(about_c.iter().map(|e| (count(e), e.note.as_deref())).collect::<Vec<_>>(), [(1, Some("Ready: anew"))]);

    // A note longer than the API's 1 kB is cut, not refused.
    let long = "x".repeat(5000);
    p.publish(normal("Long", &long), &refs[1]).await.expect("publish");
    let cut = events_about(&events, "b").await.into_iter().find(|e| e.reason.as_deref() == Some("Long")).expect("long");
    assert_eq!(cut.note.map(|n| n.len()), Some(1000));
    f.shutdown().await;
}
