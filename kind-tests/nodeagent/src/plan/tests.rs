use super::*;
use crate::topology::{NodeSpec, lan};

#[test]
fn two_facilities_addresses() {
    let plan = Topology::two_facilities().plan("sna-1-ab-").expect("plan");
    let gw_a = plan.member("gw-a").expect("gw-a");
    assert_eq!(gw_a.netns, "sna-1-ab-n-gw-a");
    assert_eq!(gw_a.lan_address(), Some(Ipv4Addr::new(198, 51, 100, 1)));
    assert_eq!(gw_a.wan_address(), Some(Ipv4Addr::new(192, 0, 2, 1)));
    let gw_b = plan.member("gw-b").expect("gw-b");
    assert_eq!(gw_b.lan_address(), Some(Ipv4Addr::new(203, 0, 113, 1)));
    assert_eq!(gw_b.wan_address(), Some(Ipv4Addr::new(192, 0, 2, 2)));
    let app_a = plan.member("app-a").expect("app-a");
    assert!(!app_a.is_node);
    assert_eq!(app_a.primary_address(), Some(Ipv4Addr::new(198, 51, 100, 2)));
    assert_eq!(app_a.wan_address(), None);
    assert_eq!(plan.namespaces().len(), 5);
}

#[test]
fn commands_build_everything_in_private_namespaces() {
    let plan = Topology::two_facilities().plan("p-").expect("plan");
    let cmds = plan.commands();
    // Every command after `netns add` targets one of our namespaces.
    for c in &cmds {
        match c[0].as_str() {
            "netns" => assert!(c[2].starts_with("p-")),
            "-n" => assert!(c[1].starts_with("p-"), "{c:?}"),
            other => panic!("unexpected {other}"),
        }
    }
    let veths = cmds.iter().filter(|c| c.contains(&"veth".to_string())).count();
    assert_eq!(veths, 6);
    assert!(cmds.iter().any(|c| c.join(" ") == "-n p-n-gw-a addr add 192.0.2.1/24 dev eth1"));
    // Namespaces are added before they are used.
    let first_use = cmds.iter().position(|c| c.join(" ").contains("netns p-h-app-b")).expect("used");
    let added = cmds.iter().position(|c| c.join(" ") == "netns add p-h-app-b").expect("added");
    assert!(added < first_use);
}

#[test]
fn many_networks_get_slash_26() {
    let mut t = Topology::new();
    for i in 0..5 {
        t = t.network(&format!("n{i}"));
    }
    let t = t.node(NodeSpec::new("x").on("n4"));
    let plan = t.plan("p-").expect("plan");
    assert_eq!(plan.networks[4].base, Ipv4Addr::new(203, 0, 113, 0));
    assert_eq!(plan.networks[1].base, Ipv4Addr::new(198, 51, 100, 64));
    assert_eq!(plan.member("x").and_then(|m| m.address_on("n4")), Some(Ipv4Addr::new(203, 0, 113, 1)));
}

#[test]
fn errors_name_the_problem() {
    let t = Topology::new().node(NodeSpec::gateway("g", "a"));
    let e = t.plan("p-").expect_err("unknown network");
    assert!(e.to_string().contains(&lan("a")));
    let e = Topology::new().network_cidr("x", "10.0.0.0/24").plan("p-").expect_err("not doc");
    assert!(matches!(e, TopologyError::Addressing { .. }));
    let ok = Topology::new().network_cidr("x", "192.0.2.128/25").plan("p-").expect("doc");
    assert_eq!(ok.networks[0].base, Ipv4Addr::new(192, 0, 2, 128));
    let dup = Topology::new().node(NodeSpec::new("a")).app_host("a", "x");
    assert!(matches!(dup.plan("p-"), Err(TopologyError::Duplicate(_))));
}

#[test]
fn yaml_topology() {
    let y = "networks: [{name: a-lan}, {name: wan}]\nnodes:\n- name: gw\n  networks: [a-lan, wan]\n  labels: {role: gw}\nhosts:\n- name: app\n  networks: [a-lan]\n";
    let t = Topology::from_yaml(y).expect("yaml");
    let plan = t.plan("p-").expect("plan");
    assert_eq!(plan.member("app").and_then(|m| m.lan_address()), Some(Ipv4Addr::new(198, 51, 100, 2)));
}

#[test]
fn loopback_and_owner() {
    let a = loopback_addresses(0x0003, 2);
    assert_eq!(a, vec![Ipv4Addr::new(127, 1, 3, 1), Ipv4Addr::new(127, 1, 3, 2)]);
    assert_eq!(owner_pid("sna", "sna-4242-abcd-n-gw"), Some(4242));
    assert_eq!(owner_pid("sna", "other-1-n"), None);
}
