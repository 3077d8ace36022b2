#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;
use crate::types::{Blake3Digest, BlobRef};

fn rack(name: &str, third: u8) -> Rack {
    Rack {
        name: name.parse().unwrap(),
        subnet: format!("10.{third}.0.0/24").parse().unwrap(),
        server_address: Ipv4Addr::new(10, third, 0, 1),
        node_base: Ipv4Addr::new(10, third, 0, 100),
        gateway: None,
    }
}

fn mac(i: u8) -> Mac {
    Mac([0x52, 0x54, 0, 0, 0, i])
}

fn cmd(command: Command) -> Envelope {
    Envelope {
        idempotency_key: None,
        command,
    }
}

fn image(name: &str, seed: &[u8]) -> Image {
    Image {
        name: name.parse().unwrap(),
        kernel: BlobRef {
            digest: Blake3Digest::of(seed),
            size: 10,
        },
        initrd: BlobRef {
            digest: Blake3Digest::of(b"initrd"),
            size: 20,
        },
        cmdline: "console=ttyS0".into(),
        kernel_version: String::new(),
        modules: None,
        dtb: None,
        committed_at: 1,
    }
}

fn discover(state: &mut State, rack: &str, macs: &[Mac]) -> Result<Node, StateError> {
    match state.apply(cmd(Command::DiscoverNode {
        rack: rack.parse().unwrap(),
        macs: macs.to_vec(),
        uuid: None,
        inventory: BTreeMap::new(),
        hold: false,
        seen_at: 0,
    }))? {
        Outcome::Node(n) => Ok(n),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn discovery_numbers_nodes_persistently() {
    let mut s = State::default();
    s.apply(cmd(Command::RegisterRack {
        rack: rack("r1", 1),
    }))
    .unwrap();
    let a = discover(&mut s, "r1", &[mac(1)]).unwrap();
    let b = discover(&mut s, "r1", &[mac(2)]).unwrap();
    assert_eq!((a.number, a.slot), (NodeNumber(1), 0));
    assert_eq!((b.number, b.slot), (NodeNumber(2), 1));
    // Seen again: same node, no revision bump.
    let rev = s.revision();
    assert_eq!(discover(&mut s, "r1", &[mac(1)]).unwrap(), a);
    assert_eq!(s.revision(), rev);
    // A report naming a known node's MAC beside a new one never changes
    // the node: it is held for an administrator, whose accept joins it.
    let held = s
        .apply(cmd(Command::DiscoverNode {
            rack: "r1".parse().unwrap(),
            macs: vec![mac(1), mac(9)],
            uuid: Some("forged".into()),
            inventory: BTreeMap::from([("cpus".into(), "1".into())]),
            hold: false,
            seen_at: 0,
        }))
        .unwrap();
    assert!(matches!(held, Outcome::Pending(ref p) if p.macs == vec![mac(1), mac(9)]));
    assert_eq!(s.node_by_mac(&mac(9)), None);
    assert_eq!(s.node_by_mac(&mac(1)).unwrap(), &a, "node 1 unchanged");
    let joined = s
        .apply(cmd(Command::AcceptMachine { mac: mac(9) }))
        .unwrap();
    assert!(matches!(joined, Outcome::Node(ref n) if n.number == a.number));
    assert_eq!(s.node_by_mac(&mac(9)).unwrap().number, a.number);
    assert_eq!(s.pending().count(), 0);
    // MACs of two nodes together are refused.
    assert!(matches!(
        discover(&mut s, "r1", &[mac(1), mac(2)]),
        Err(StateError::MacTaken { .. })
    ));
}

#[test]
fn unknown_rack_and_full_rack_are_refused() {
    let mut s = State::default();
    assert_eq!(
        discover(&mut s, "nope", &[mac(1)]),
        Err(StateError::RackNotFound("nope".parse().unwrap()))
    );
    let mut small = rack("r1", 1);
    small.node_base = Ipv4Addr::new(10, 1, 0, 253);
    s.apply(cmd(Command::RegisterRack { rack: small })).unwrap();
    discover(&mut s, "r1", &[mac(1)]).unwrap();
    discover(&mut s, "r1", &[mac(2)]).unwrap();
    assert!(matches!(
        discover(&mut s, "r1", &[mac(3)]),
        Err(StateError::RackFull { .. })
    ));
}

#[test]
fn images_are_immutable_and_assignments_resolve() {
    let mut s = State::default();
    s.apply(cmd(Command::RegisterRack {
        rack: rack("r1", 1),
    }))
    .unwrap();
    let n = discover(&mut s, "r1", &[mac(1)]).unwrap();
    let unknown: ImageName = "ghost".parse().unwrap();
    assert_eq!(
        s.apply(cmd(Command::Assign {
            target: AssignTarget::Default,
            image: unknown.clone()
        })),
        Err(StateError::ImageNotFound(unknown))
    );
    s.apply(cmd(Command::CommitImage {
        image: image("a:1", b"k1"),
    }))
    .unwrap();
    // Same content again: fine, first commit kept.
    let mut again = image("a:1", b"k1");
    again.committed_at = 99;
    assert_eq!(
        s.apply(cmd(Command::CommitImage { image: again })).unwrap(),
        Outcome::Image(Box::new(image("a:1", b"k1")))
    );
    assert!(matches!(
        s.apply(cmd(Command::CommitImage {
            image: image("a:1", b"k2")
        })),
        Err(StateError::ImageExists { .. })
    ));
    s.apply(cmd(Command::CommitImage {
        image: image("b:1", b"k2"),
    }))
    .unwrap();
    s.apply(cmd(Command::Assign {
        target: AssignTarget::Default,
        image: "a:1".parse().unwrap(),
    }))
    .unwrap();
    assert_eq!(s.resolved_image(&n).unwrap().1, "default");
    s.apply(cmd(Command::Assign {
        target: AssignTarget::Node(n.number),
        image: "b:1".parse().unwrap(),
    }))
    .unwrap();
    assert_eq!(
        s.resolved_image(&n).unwrap(),
        ("b:1".parse().unwrap(), "node")
    );
    let view = s.rack_view(&"r1".parse().unwrap()).unwrap();
    assert_eq!(view.images.len(), 1);
    assert_eq!(view.images[0].name.as_str(), "b:1");
}

#[test]
fn idempotency_key_returns_first_outcome() {
    let mut s = State::default();
    s.apply(cmd(Command::RegisterRack {
        rack: rack("r1", 1),
    }))
    .unwrap();
    let e = Envelope {
        idempotency_key: Some("k".into()),
        command: Command::DiscoverNode {
            rack: "r1".parse().unwrap(),
            macs: vec![mac(1)],
            uuid: None,
            inventory: BTreeMap::new(),
            hold: false,
            seen_at: 0,
        },
    };
    let first = s.apply(e.clone()).unwrap();
    let rev = s.revision();
    assert_eq!(s.apply(e).unwrap(), first);
    assert_eq!(s.revision(), rev);
}

proptest! {
    /// Any sequence of discoveries across racks: numbers unique, MACs owned by
    /// one node, addresses unique per rack, and the state survives a snapshot
    /// round trip unchanged.
    #[test]
    fn numbering_invariants(ops in proptest::collection::vec((0u8..3, proptest::collection::vec(0u8..40, 1..3)), 1..120)) {
        let mut s = State::default();
        for (i, name) in ["r0", "r1", "r2"].iter().enumerate() {
            let third = u8::try_from(i).unwrap();
            s.apply(cmd(Command::RegisterRack { rack: rack(name, third) })).unwrap();
        }
        for (r, macs) in ops {
            let macs: Vec<Mac> = macs.into_iter().map(mac).collect();
            // Numbered, held (new MACs beside a node's) or refused: all fine.
            let _ = s.apply(cmd(Command::DiscoverNode {
                rack: format!("r{r}").parse().unwrap(),
                macs,
                uuid: None,
                inventory: BTreeMap::new(),
                hold: false,
                seen_at: 0,
            }));
        }
        let mut numbers = BTreeSet::new();
        let mut slots = BTreeSet::new();
        let mut seen_macs = BTreeSet::new();
        for n in s.nodes() {
            prop_assert!(numbers.insert(n.number));
            prop_assert!(slots.insert((n.rack.clone(), n.slot)));
            for m in &n.macs {
                prop_assert!(seen_macs.insert(*m));
                prop_assert_eq!(s.node_by_mac(m).map(|x| x.number), Some(n.number));
            }
        }
        let json = serde_json::to_vec(&s).unwrap();
        let mut back: State = serde_json::from_slice(&json).unwrap();
        prop_assert_eq!(&back, &s);
        // The rebuilt slot index assigns what the maintained one does.
        for r in ["r0", "r1", "r2"] {
            let fresh = [mac(200)];
            prop_assert_eq!(discover(&mut back, r, &fresh), discover(&mut s, r, &fresh));
        }
    }
}

#[test]
fn lowest_free_finds_first_gap() {
    let set = |v: &[u32]| v.iter().copied().collect::<BTreeSet<u32>>();
    assert_eq!(lowest_free(&set(&[]), 0), 0);
    assert_eq!(lowest_free(&set(&[0, 1, 2]), 0), 3);
    assert_eq!(lowest_free(&set(&[0, 2, 3]), 0), 1);
    assert_eq!(lowest_free(&set(&[1, 2]), 0), 0);
    assert_eq!(lowest_free(&set(&[1, 2, 3]), 1), 4);
    assert_eq!(lowest_free(&set(&[2, 3]), 1), 1);
}

#[test]
fn meta_is_validated_revisioned_and_in_every_rack_view() {
    let mut s = State::default();
    s.apply(cmd(Command::RegisterRack {
        rack: rack("r1", 1),
    }))
    .unwrap();
    let set = |s: &mut State, k: &str, v: Option<&str>| {
        s.apply(cmd(Command::SetMeta {
            key: k.into(),
            value: v.map(str::to_string),
        }))
    };
    let r0 = s.revision();
    assert_eq!(
        set(&mut s, "NTP_SERVER", Some("10.0.0.1")),
        Ok(Outcome::Meta { revision: r0 + 1 })
    );
    // The same value again changes nothing.
    assert_eq!(
        set(&mut s, "NTP_SERVER", Some("10.0.0.1")),
        Ok(Outcome::Meta { revision: r0 + 1 })
    );
    let view = s.rack_view(&"r1".parse().unwrap()).unwrap();
    assert_eq!(view.meta["NTP_SERVER"], "10.0.0.1");
    for (k, v) in [
        ("", "x"),
        ("1ABC", "x"),
        ("A-B", "x"),
        ("A B", "x"),
        ("OK", "two\nlines"),
    ] {
        let before = s.clone();
        assert!(
            matches!(set(&mut s, k, Some(v)), Err(StateError::InvalidMeta { .. })),
            "{k:?}={v:?}"
        );
        assert_eq!(s, before, "a refused command changes nothing");
    }
    assert!(set(&mut s, "BIG", Some(&"x".repeat(crate::MAX_META_VALUE + 1))).is_err());
    assert_eq!(
        set(&mut s, "NTP_SERVER", None),
        Ok(Outcome::Meta { revision: r0 + 2 })
    );
    assert!(s.meta().is_empty());
    // Survives a snapshot round trip.
    set(&mut s, "SITE", Some("lab")).unwrap();
    let back: State = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
    assert_eq!(back.meta()["SITE"], "lab");
}

fn two_racks() -> State {
    let mut s = State::default();
    s.apply(cmd(Command::RegisterRack {
        rack: rack("r1", 1),
    }))
    .unwrap();
    s
}

#[test]
fn held_machine_waits_for_accept_then_gets_the_next_number_with_all_macs() {
    let mut s = two_racks();
    let a = discover(&mut s, "r1", &[mac(1)]).unwrap();
    let inventory: BTreeMap<String, String> = [("cpus".to_string(), "2".to_string())].into();
    let held = s
        .apply(cmd(Command::DiscoverNode {
            rack: "r1".parse().unwrap(),
            macs: vec![mac(2), mac(3)],
            uuid: Some("00".repeat(16)),
            inventory: inventory.clone(),
            hold: true,
            seen_at: 5,
        }))
        .unwrap();
    assert!(matches!(&held, Outcome::Pending(p) if p.macs == vec![mac(2), mac(3)]));
    assert!(s.node_by_mac(&mac(2)).is_none());
    assert_eq!(s.pending().count(), 1);
    assert_eq!(
        s.apply(cmd(Command::AcceptMachine { mac: mac(9) })),
        Err(StateError::NotPending(mac(9)))
    );
    let Outcome::Node(b) = s
        .apply(cmd(Command::AcceptMachine { mac: mac(3) }))
        .unwrap()
    else {
        panic!("not a node");
    };
    assert_eq!(b.number, NodeNumber(a.number.0 + 1));
    assert_eq!(b.macs, vec![mac(2), mac(3)]);
    assert_eq!(b.inventory, inventory);
    assert_eq!(s.pending().count(), 0);
    // Accepting again is idempotent.
    assert_eq!(
        s.apply(cmd(Command::AcceptMachine { mac: mac(2) })),
        Ok(Outcome::Node(b))
    );
}

#[test]
fn replace_gives_number_address_and_assignment_to_new_hardware() {
    let mut s = two_racks();
    let a = discover(&mut s, "r1", &[mac(1), mac(2)]).unwrap();
    let _b = discover(&mut s, "r1", &[mac(5)]).unwrap();
    s.apply(cmd(Command::CommitImage {
        image: image("img", b"k"),
    }))
    .unwrap();
    s.apply(cmd(Command::Assign {
        target: AssignTarget::Node(a.number),
        image: "img".parse().unwrap(),
    }))
    .unwrap();
    // A MAC of another node cannot be taken.
    assert!(matches!(
        s.apply(cmd(Command::ReplaceNode {
            number: a.number,
            macs: vec![mac(5)],
        })),
        Err(StateError::MacTaken { .. })
    ));
    let Outcome::Node(r) = s
        .apply(cmd(Command::ReplaceNode {
            number: a.number,
            macs: vec![mac(7)],
        }))
        .unwrap()
    else {
        panic!("not a node");
    };
    assert_eq!(
        (r.number, r.slot, r.macs.clone()),
        (a.number, a.slot, vec![mac(7)])
    );
    assert!(s.node_by_mac(&mac(1)).is_none() && s.node_by_mac(&mac(2)).is_none());
    assert_eq!(
        s.resolved_image(&r).map(|(i, _)| i.to_string()),
        Some("img".to_string())
    );
    // The old hardware, seen again, is a new machine.
    let old = discover(&mut s, "r1", &[mac(1)]).unwrap();
    assert_ne!(old.number, a.number);
}

#[test]
fn retire_keeps_the_number_and_slot_reserved() {
    let mut s = two_racks();
    let a = discover(&mut s, "r1", &[mac(1)]).unwrap();
    let Outcome::Node(r) = s
        .apply(cmd(Command::RetireNode { number: a.number }))
        .unwrap()
    else {
        panic!("not a node");
    };
    assert!(r.retired && r.macs.is_empty());
    let b = discover(&mut s, "r1", &[mac(2)]).unwrap();
    assert_ne!(b.number, a.number);
    assert_ne!(b.slot, a.slot);
    // Replacing un-retires it.
    let Outcome::Node(n) = s
        .apply(cmd(Command::ReplaceNode {
            number: a.number,
            macs: vec![mac(3)],
        }))
        .unwrap()
    else {
        panic!("not a node");
    };
    assert!(!n.retired);
    assert_eq!(s.node_by_mac(&mac(3)).map(|n| n.number), Some(a.number));
}

#[test]
fn discovery_image_is_in_every_rack_view() {
    let mut s = two_racks();
    s.apply(cmd(Command::CommitImage {
        image: image("probe", b"p"),
    }))
    .unwrap();
    s.apply(cmd(Command::Assign {
        target: AssignTarget::Discovery,
        image: "probe".parse().unwrap(),
    }))
    .unwrap();
    let v = s.rack_view(&"r1".parse().unwrap()).unwrap();
    assert_eq!(
        v.discovery_image.map(|i| i.to_string()),
        Some("probe".into())
    );
    assert_eq!(v.images.len(), 1);
}

#[test]
fn rack_cache_reports_are_bounded_unrevisioned_and_survive_a_snapshot() {
    let mut s = State::default();
    s.apply(cmd(Command::RegisterRack {
        rack: rack("r1", 1),
    }))
    .unwrap();
    let held: Vec<BlobRef> = (0..RackCacheReport::MAX_HELD as u32 + 10)
        .map(|i| BlobRef {
            digest: Blake3Digest::of(&i.to_le_bytes()),
            size: u64::from(i),
        })
        .collect();
    let report = RackCacheReport {
        agent_id: "a1".into(),
        held,
        bytes: 7,
        max_bytes: 9,
        evicted: 1,
        repaired_groups: 2,
        unix_millis: 3,
        problems: vec!["ü".repeat(400); RackCacheReport::MAX_PROBLEMS + 1],
    };
    let rev = s.revision();
    let out = s
        .apply(cmd(Command::RecordRackCache {
            rack: "r1".parse::<RackName>().unwrap(),
            report: report.clone(),
        }))
        .unwrap();
    assert_eq!(
        out,
        Outcome::Recorded {
            kept: RackCacheReport::MAX_HELD as u64
        }
    );
    assert_eq!(s.revision(), rev, "a cache report changes no rack view");
    let kept = s.rack_cache(&"r1".parse::<RackName>().unwrap()).unwrap();
    assert_eq!(kept.held.len(), RackCacheReport::MAX_HELD);
    assert_eq!(kept.repaired_groups, 2);
    // Problems are cut to their bounds, on character boundaries.
    assert_eq!(kept.problems.len(), RackCacheReport::MAX_PROBLEMS);
    assert!(
        kept.problems
            .iter()
            .all(|p| p.len() <= RackCacheReport::MAX_PROBLEM_LEN && p.chars().all(|c| c == 'ü'))
    );
    // Through a snapshot and back.
    let json = serde_json::to_vec(&s).unwrap();
    let back: State = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, s);
    assert!(matches!(
        s.apply(cmd(Command::RecordRackCache {
            rack: "r9".parse::<RackName>().unwrap(),
            report,
        })),
        Err(StateError::RackNotFound(_))
    ));
}

#[test]
fn a_tag_moves_and_nodes_assigned_it_follow() {
    let mut s = State::default();
    s.apply(cmd(Command::RegisterRack {
        rack: rack("r1", 1),
    }))
    .unwrap();
    let n = discover(&mut s, "r1", &[mac(1)]).unwrap();
    for (name, seed) in [("compute:1", b"a"), ("compute:2", b"b")] {
        s.apply(cmd(Command::CommitImage {
            image: image(name, seed),
        }))
        .unwrap();
    }
    let tag: ImageName = "compute:latest".parse().unwrap();
    let v1: ImageName = "compute:1".parse().unwrap();
    let v2: ImageName = "compute:2".parse().unwrap();
    // A tag must point at an existing image, not be one.
    assert!(matches!(
        s.apply(cmd(Command::TagImage {
            tag: v1.clone(),
            image: v2.clone()
        })),
        Err(StateError::InvalidTag { .. })
    ));
    assert!(matches!(
        s.apply(cmd(Command::TagImage {
            tag: tag.clone(),
            image: "nope:1".parse().unwrap()
        })),
        Err(StateError::ImageNotFound(_))
    ));
    s.apply(cmd(Command::TagImage {
        tag: tag.clone(),
        image: v1.clone(),
    }))
    .unwrap();
    s.apply(cmd(Command::Assign {
        target: AssignTarget::Node(n.number),
        image: tag.clone(),
    }))
    .unwrap();
    let view = |s: &State| s.rack_view(&"r1".parse().unwrap()).unwrap();
    assert_eq!(view(&s).nodes[0].1.as_ref().unwrap().0, v1);
    assert_eq!(view(&s).images.len(), 1);
    let rev = s.revision();
    let out = s
        .apply(cmd(Command::TagImage {
            tag: tag.clone(),
            image: v2.clone(),
        }))
        .unwrap();
    assert_eq!(
        out,
        Outcome::Tagged {
            previous: Some(v1.clone()),
            revision: rev + 1
        }
    );
    let v = view(&s);
    assert_eq!(
        v.nodes[0].1.as_ref().unwrap().0,
        v2,
        "the node follows the tag"
    );
    assert_eq!(v.images[0].name, v2, "and its rack gets the new image");
    // A tag's name cannot be pushed as an image, nor point at a tag.
    assert!(matches!(
        s.apply(cmd(Command::CommitImage {
            image: image("compute:latest", b"c")
        })),
        Err(StateError::InvalidTag { .. })
    ));
    assert!(matches!(
        s.apply(cmd(Command::TagImage {
            tag: "compute:stable".parse().unwrap(),
            image: tag.clone()
        })),
        Err(StateError::InvalidTag { .. })
    ));
    let back: State = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}
