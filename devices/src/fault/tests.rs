//! The rules engine on its own: parsing, validation messages, every rule field, logging and
//! replay. The device-level effect of each action is tested with real descriptor chains in
//! the block, net and vsock tests.

use std::time::Duration;

use super::net::Headers;
use super::*;

const ISSUE_EXAMPLE: &str = r#"
seed = 7
[[block]]
disk = 0
op = "read"
from = 1048576
to = 1052672
action = "eio"
after = 0
count = 0
probability = 1.0
[[block]]
disk = 1
action = "delay"
delay_ms = 200
[[block]]
action = "torn"
keep_bytes = 2048
[[net]]
nic = 0
dir = "tx"
action = "drop"
probability = 0.1
[[net]]
action = "delay"
delay_ms = 50
ethertype = 0x0800
ip_proto = 6
port = 80
[[vsock]]
port = 52
action = "reset"
count = 1
"#;

fn engine_with(text: &str) -> std::sync::Arc<FaultEngine> {
    let engine = FaultEngine::new();
    engine
        .set_rules(FaultRules::from_toml(text, "test.toml").unwrap())
        .unwrap();
    engine
}

fn read(offset: u64, len: u64) -> BlockOp {
    BlockOp::Read { offset, len }
}

fn write(offset: u64, len: u64) -> BlockOp {
    BlockOp::Write { offset, len }
}

fn errors(text: &str) -> Vec<String> {
    FaultRules::from_toml(text, "f.toml").unwrap_err().0
}

#[test]
fn parses_the_documented_example_and_round_trips_as_json() {
    let rules = FaultRules::from_toml(ISSUE_EXAMPLE, "example.toml").unwrap();
    assert_eq!(rules.seed, 7);
    assert_eq!(
        (rules.block.len(), rules.net.len(), rules.vsock.len()),
        (3, 2, 1)
    );
    assert_eq!(rules.block[0].from, Some(1 << 20));
    assert_eq!(rules.net[1].ethertype, Some(0x800));
    assert_eq!(rules.block[1].probability, 1.0, "probability defaults to 1");
    let json = serde_json::to_value(&rules).unwrap();
    assert_eq!(FaultRules::from_json(json).unwrap(), rules);
    // `{}` is the empty rule set.
    assert!(FaultRules::from_json(serde_json::json!({}))
        .unwrap()
        .is_empty());
}

#[test]
fn syntax_and_type_mistakes_are_one_line_naming_the_place() {
    let e = errors("seed = 1\n[[block]]\nacton = \"eio\"\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("f.toml line "), "{e:?}");
    assert!(e[0].contains("acton") && !e[0].contains('\n'), "{e:?}");
    let e = errors("[[block]]\naction = \"explode\"\n");
    assert!(e[0].contains("explode") && e[0].contains("eio"), "{e:?}");
    let e = errors("[[net]]\naction = \"drop\"\nethertype = 70000\n");
    assert!(e[0].contains("line 3"), "{e:?}");
    let e = FaultRules::from_json(serde_json::json!({"block": [{"action": 3}]})).unwrap_err();
    assert_eq!(e.0.len(), 1);
}

#[test]
fn every_semantic_mistake_gets_its_own_line() {
    let e = errors(
        r#"
[[block]]
action = "delay"
[[block]]
action = "eio"
delay_ms = 5
keep_bytes = 3
[[block]]
action = "torn"
op = "read"
[[block]]
action = "corrupt"
op = "write"
from = 10
to = 10
probability = 1.5
[[block]]
op = "flush"
action = "eio"
to = 4096
[[block]]
action = "delay"
delay_ms = 0
[[net]]
action = "drop"
ip_proto = 1
port = 80
[[vsock]]
action = "reset"
probability = -0.5
"#,
    );
    let want = [
        "block[0]: action \"delay\" needs delay_ms",
        "block[1]: delay_ms only applies",
        "block[1]: keep_bytes only applies",
        "block[2]: action \"torn\" applies to writes only",
        "block[2]: action \"torn\" needs keep_bytes",
        "block[3]: probability = 1.5",
        "block[3]: the range is empty",
        "block[3]: action \"corrupt\" changes what reads return",
        "block[4]: flush requests have no byte range",
        "block[5]: delay_ms = 0",
        "net[0]: port only matches TCP",
        "vsock[0]: probability = -0.5",
    ];
    for w in want {
        assert!(
            e.iter().any(|l| l.starts_with(&format!("f.toml: {w}"))),
            "missing {w:?} in {e:#?}"
        );
    }
    assert_eq!(e.len(), want.len(), "{e:#?}");
    assert!(e.iter().all(|l| !l.contains('\n')));
}

#[test]
fn device_indices_are_checked_against_the_vm() {
    let rules = FaultRules::from_toml(ISSUE_EXAMPLE, "x").unwrap();
    assert!(rules.check_devices(2, 1).is_ok());
    let e = rules.check_devices(1, 0).unwrap_err().0;
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].starts_with("block[1]: disk 1 does not exist"));
    assert!(e[1].starts_with("net[0]: nic 0 does not exist"));
}

#[test]
fn no_rules_means_nothing_happens_and_nothing_is_counted() {
    let f = BlockFaults::none();
    assert!(!f.armed());
    assert_eq!(f.decide(0, &read(0, 512)), None);
    assert!(!NetFaults::none().armed());
    assert!(!VsockFaults::none().reset_connection(0, 1, 2));
}

#[test]
fn disk_op_and_range_filters() {
    let e = engine_with(
        r#"
[[block]]
disk = 1
op = "write"
from = 4096
to = 8192
action = "eio"
"#,
    );
    let d0 = BlockFaults::new(e.clone(), 0);
    let d1 = BlockFaults::new(e.clone(), 1);
    assert_eq!(d0.decide(0, &write(4096, 512)), None, "other disk");
    assert_eq!(d1.decide(0, &read(4096, 512)), None, "other op");
    assert_eq!(d1.decide(0, &BlockOp::Flush), None, "flush has no range");
    assert_eq!(
        d1.decide(0, &write(0, 4096)),
        None,
        "ends where the range starts"
    );
    assert_eq!(
        d1.decide(0, &write(8192, 512)),
        None,
        "starts where the range ends"
    );
    assert_eq!(
        d1.decide(0, &write(3584, 1024)),
        Some(BlockFault::Eio),
        "overlaps the start"
    );
    assert_eq!(d1.decide(0, &write(8191 - 511, 512)), Some(BlockFault::Eio));
    assert_eq!(
        d1.decide(0, &write(0, 1 << 20)),
        Some(BlockFault::Eio),
        "covers it"
    );
    let r = e.report();
    assert_eq!(
        (r.block[0].counters.matched, r.block[0].counters.hits),
        (3, 3)
    );
}

#[test]
fn op_any_and_flush_rules() {
    let e = engine_with(
        "[[block]]\naction = \"eio\"\n[[block]]\nop=\"flush\"\naction=\"delay\"\ndelay_ms=7\n",
    );
    let f = BlockFaults::new(e.clone(), 3);
    assert_eq!(
        f.decide(0, &BlockOp::Flush),
        Some(BlockFault::Eio),
        "first rule wins"
    );
    e.set_rules(
        FaultRules::from_toml(
            "[[block]]\nop=\"flush\"\naction=\"delay\"\ndelay_ms=7\n",
            "x",
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(f.decide(1, &read(0, 512)), None);
    assert_eq!(
        f.decide(2, &BlockOp::Flush),
        Some(BlockFault::Delay(Duration::from_millis(7)))
    );
}

#[test]
fn after_and_count_bound_the_hits() {
    let e = engine_with("[[block]]\naction = \"eio\"\nafter = 2\ncount = 3\n");
    let f = BlockFaults::new(e.clone(), 0);
    let got: Vec<bool> = (0..8)
        .map(|n| f.decide(n, &read(0, 512)).is_some())
        .collect();
    assert_eq!(got, [false, false, true, true, true, false, false, false]);
    let r = e.report();
    assert_eq!(
        r.block[0].counters,
        RuleCounters {
            matched: 8,
            hits: 3
        }
    );
    // Replacing the rules zeroes the counters.
    e.set_rules(e.rules()).unwrap();
    assert_eq!(e.report().block[0].counters, RuleCounters::default());
}

#[test]
fn probability_hits_about_that_fraction() {
    let e = engine_with("seed = 11\n[[block]]\naction = \"eio\"\nprobability = 0.25\n");
    let f = BlockFaults::new(e, 0);
    let hits = (0..4000)
        .filter(|n| f.decide(*n, &read(0, 512)).is_some())
        .count();
    assert!((850..1150).contains(&hits), "{hits} of 4000 at 0.25");
    let never = engine_with("[[block]]\naction = \"eio\"\nprobability = 0.0\n");
    let f = BlockFaults::new(never, 0);
    assert!((0..100).all(|n| f.decide(n, &read(0, 512)).is_none()));
}

#[test]
fn each_block_action_becomes_its_fault() {
    let e = engine_with(
        r#"
[[block]]
from = 0
to = 512
action = "lose"
[[block]]
from = 512
to = 1024
action = "torn"
keep_bytes = 1536
[[block]]
from = 1024
to = 2048
action = "corrupt"
[[block]]
from = 2048
to = 4096
action = "delay"
delay_ms = 250
"#,
    );
    let f = BlockFaults::new(e, 0);
    assert_eq!(f.decide(0, &write(0, 512)), Some(BlockFault::Lose));
    assert_eq!(
        f.decide(1, &write(512, 4096)),
        Some(BlockFault::Torn { keep_bytes: 1536 })
    );
    // A read of sectors 1..5: only sectors 2 and 3 lie in the corrupt range.
    let Some(BlockFault::Corrupt(flips)) = f.decide(2, &read(1024 - 512, 2048)) else {
        panic!("expected corrupt");
    };
    assert_eq!(flips.len(), 2);
    assert!((512..1024).contains(&flips[0].at), "{flips:?}");
    assert!((1024..1536).contains(&flips[1].at), "{flips:?}");
    assert!(flips.iter().all(|f| f.mask.count_ones() == 1));
    assert_eq!(
        f.decide(3, &read(2048, 512)),
        Some(BlockFault::Delay(Duration::from_millis(250)))
    );
}

#[test]
fn same_seed_and_sequence_give_the_same_faults() {
    let rules = r#"
seed = 42
[[block]]
action = "eio"
probability = 0.3
[[block]]
action = "corrupt"
probability = 0.5
[[net]]
action = "corrupt"
probability = 0.4
"#;
    let run = |text: &str| {
        let e = engine_with(text);
        let b = BlockFaults::new(e.clone(), 0);
        let n = NetFaults::new(e, 0);
        let frame = [0xabu8; 64];
        (0..300u64)
            .map(|i| {
                let op = if i % 3 == 0 {
                    write(i * 512, 512)
                } else {
                    read(i * 512, 4096)
                };
                (
                    format!("{:?}", b.decide(i, &op)),
                    format!("{:?}", n.decide(NetDirection::ToGuest, i, &frame)),
                )
            })
            .collect::<Vec<_>>()
    };
    let a = run(rules);
    assert_eq!(a, run(rules));
    assert!(
        a.iter().any(|(b, _)| b.contains("Eio")) && a.iter().any(|(b, _)| b.contains("Corrupt"))
    );
    assert_ne!(
        a,
        run(&rules.replace("seed = 42", "seed = 43")),
        "the seed matters"
    );
}

#[test]
fn every_fault_is_logged_as_a_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("faults.jsonl");
    let e = engine_with("[[block]]\ndisk = 2\naction = \"eio\"\nafter = 1\n[[net]]\naction=\"drop\"\n[[vsock]]\naction=\"reset\"\nport=52\n");
    e.log_to(&path).unwrap();
    let f = BlockFaults::new(e.clone(), 2);
    assert_eq!(f.decide(0, &read(4096, 1024)), None);
    assert_eq!(f.decide(1, &write(8192, 512)), Some(BlockFault::Eio));
    assert_eq!(
        NetFaults::new(e.clone(), 1).decide(NetDirection::FromGuest, 9, &[0; 60]),
        Some(NetFault::Drop)
    );
    let v = VsockFaults::new(e);
    assert!(!v.reset_connection(0, 1024, 5000));
    assert!(v.reset_connection(1, 52, 5000));
    let log = read_log(&path).unwrap();
    assert_eq!(log.len(), 3, "{log:#?}");
    assert_eq!(
        (log[0].device.as_str(), log[0].op.as_str(), log[0].request),
        ("disk2", "write", 1)
    );
    assert_eq!((log[0].offset, log[0].len), (Some(8192), Some(512)));
    assert_eq!(
        (log[0].rule.as_str(), log[0].action.as_str()),
        ("block[0]", "eio")
    );
    assert!(log[0].time > 1.7e9);
    assert_eq!(
        (log[1].device.as_str(), log[1].op.as_str(), log[1].request),
        ("nic1", "tx", 9)
    );
    assert_eq!(
        (log[2].device.as_str(), log[2].action.as_str()),
        ("vsock", "reset")
    );
}

fn ipv4_frame(proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14] = 0x45;
    f[14 + 9] = proto;
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f
}

#[test]
fn frame_headers_are_parsed_defensively() {
    let h = Headers::parse(&ipv4_frame(6, 1234, 80));
    assert_eq!(
        (h.ethertype, h.ip_proto, h.ports),
        (Some(0x800), Some(6), Some((1234, 80)))
    );
    assert_eq!(
        Headers::parse(&ipv4_frame(1, 1, 2)).ports,
        None,
        "ICMP has no ports"
    );
    let mut frag = ipv4_frame(17, 53, 53);
    frag[20..22].copy_from_slice(&0x0010u16.to_be_bytes());
    assert_eq!(Headers::parse(&frag).ports, None, "later fragment");
    let mut v6 = vec![0u8; 14 + 40 + 4];
    v6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    v6[14 + 6] = 17;
    v6[54..56].copy_from_slice(&5353u16.to_be_bytes());
    assert_eq!(Headers::parse(&v6).ports, Some((5353, 0)));
    let mut vlan = vec![0u8; 18];
    vlan[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    vlan[16..18].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(Headers::parse(&vlan).ethertype, Some(0x806));
    for n in 0..40 {
        Headers::parse(&ipv4_frame(6, 1, 2)[..n]);
    }
    assert_eq!(Headers::parse(&[]), Headers::default());
}

#[test]
fn net_filters_and_actions() {
    let e = engine_with(
        r#"
[[net]]
nic = 1
dir = "rx"
action = "duplicate"
[[net]]
dir = "tx"
ip_proto = 17
action = "reorder"
[[net]]
ethertype = 0x0806
action = "delay"
delay_ms = 30
[[net]]
port = 443
action = "corrupt"
"#,
    );
    let n0 = NetFaults::new(e.clone(), 0);
    let n1 = NetFaults::new(e, 1);
    let tcp = ipv4_frame(6, 40000, 443);
    let udp = ipv4_frame(17, 40000, 53);
    let mut arp = vec![0u8; 42];
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    use NetDirection::*;
    assert_eq!(n1.decide(ToGuest, 0, &udp), Some(NetFault::Duplicate));
    assert_eq!(
        n0.decide(ToGuest, 0, &udp),
        None,
        "rule 0 is nic 1 only, rule 1 tx only"
    );
    assert_eq!(n0.decide(FromGuest, 0, &udp), Some(NetFault::Reorder));
    assert_eq!(
        n0.decide(FromGuest, 1, &tcp)
            .map(|f| matches!(f, NetFault::Corrupt { .. })),
        Some(true)
    );
    assert_eq!(
        n0.decide(ToGuest, 1, &arp),
        Some(NetFault::Delay(Duration::from_millis(30)))
    );
    assert_eq!(
        n0.decide(ToGuest, 2, &ipv4_frame(6, 1, 2)),
        None,
        "no rule matches"
    );
    if let Some(NetFault::Corrupt { at, .. }) = n0.decide(ToGuest, 3, &tcp) {
        assert!(at < tcp.len());
    } else {
        panic!("port 443 corrupts");
    }
}

#[test]
fn vsock_port_filter() {
    let e = engine_with("[[vsock]]\nport = 52\naction = \"reset\"\nafter = 1\n");
    let v = VsockFaults::new(e.clone());
    assert!(!v.reset_connection(0, 1 << 30, 53), "other ports");
    assert!(!v.reset_connection(1, 1 << 30, 52), "after = 1");
    assert!(
        v.reset_connection(2, 52, 9999),
        "host side port matches too"
    );
    assert_eq!(
        e.report().vsock[0].counters,
        RuleCounters {
            matched: 2,
            hits: 1
        }
    );
}
