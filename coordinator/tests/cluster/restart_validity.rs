//! Restart validity: whatever the coordinator accepted at runtime it loads
//! again after a restart (the same validation on write and on load).
//!
//! `RACKBOOT_RESTART_OPS` (default 10,000) random operations of every kind
//! the API takes — racks registering, machines discovered (some held for
//! acceptance, then accepted), nodes added, replaced and retired, images
//! committed and tagged, assignments at every level, site metadata set and
//! unset, cache reports and boot events — go through a 3-replica cluster
//! (snapshots every 500 entries, so both snapshot loading and log replay
//! are exercised). Then every replica is SIGKILLed and restarted, and then
//! stopped and restarted again: each restart must succeed and every replica
//! must come back with the very state (digest) it had.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rackboot_image::Outboard;
use rackboot_proto::v1 as pb;
use tonic::transport::Channel;

use crate::blobs::{images, random_blob};
use crate::harness::{Cluster, Opts, Rng, exclusive};

fn agents(ch: Channel) -> pb::agent_service_client::AgentServiceClient<Channel> {
    pb::agent_service_client::AgentServiceClient::new(ch)
}
fn nodes(ch: Channel) -> pb::node_service_client::NodeServiceClient<Channel> {
    pb::node_service_client::NodeServiceClient::new(ch)
}
fn assignments(ch: Channel) -> pb::assignment_service_client::AssignmentServiceClient<Channel> {
    pb::assignment_service_client::AssignmentServiceClient::new(ch)
}
fn meta(ch: Channel) -> pb::meta_service_client::MetaServiceClient<Channel> {
    pb::meta_service_client::MetaServiceClient::new(ch)
}

fn mac(rng: &mut Rng) -> String {
    let b = rng.next().to_le_bytes();
    // Locally administered, unicast.
    format!(
        "52:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_10k_random_operations() {
    let _one = exclusive();
    let n: u64 = std::env::var("RACKBOOT_RESTART_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut cluster = Cluster::new(
        3,
        Opts {
            snapshot_every: 500,
            ..Opts::default()
        },
    );
    cluster.start_all();
    let ep = cluster.endpoints();
    let leader = ep
        .wait_leader(Duration::from_secs(15))
        .await
        .expect("a leader");
    let ch = ep.channel(leader);

    // A few blobs every image is made of.
    let mut blobs = Vec::new();
    for i in 0..4u64 {
        let b = random_blob(900 + i, 3000 + i as usize);
        let ob = Outboard::compute(&b.data).to_bytes();
        images(ch.clone())
            .put_blob(tokio_stream::iter(vec![pb::PutBlobChunk {
                header: Some(b.blob.clone()),
                data: b.data.clone(),
                offset: 0,
                outboard: ob,
            }]))
            .await
            .expect("push a blob");
        blobs.push(b.blob.clone());
    }

    let mut rng = Rng::new(77);
    let mut racks: Vec<String> = Vec::new();
    let mut numbers: Vec<u32> = Vec::new();
    let mut image_names: Vec<String> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let mut outcomes: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let started = Instant::now();
    for i in 0..n {
        let kind = match rng.next() % 100 {
            _ if racks.is_empty() => "register",
            // At most 200 racks (their subnets are 10.K.0.0/16).
            0..=2 if racks.len() < 200 => "register",
            3..=34 => "discover",
            35..=39 => "discover held",
            40..=42 => "accept",
            43..=47 => "add nodes",
            48..=52 => "commit image",
            53..=56 => "tag",
            57..=68 => "assign",
            69..=76 => "meta",
            77..=80 => "retire",
            81..=84 => "replace",
            85..=92 => "cache report",
            _ => "boot events",
        };
        let r = rng.next();
        let rack = racks
            .get((r % racks.len().max(1) as u64) as usize)
            .cloned()
            .unwrap_or_default();
        let res: Result<(), tonic::Status> = match kind {
            "register" => {
                let k = racks.len() + 1;
                let name = format!("r{k}");
                let req = pb::RegisterRequest {
                    rack: Some(pb::Rack {
                        name: name.clone(),
                        subnet: format!("10.{k}.0.0/16"),
                        server_address: format!("10.{k}.0.1"),
                        node_base: format!("10.{k}.0.100"),
                        gateway: String::new(),
                    }),
                    agent_id: format!("agent-{k}"),
                    agent_version: "test".into(),
                };
                let out = agents(ch.clone()).register(req).await.map(|_| ());
                if out.is_ok() {
                    racks.push(name);
                }
                out
            }
            "discover" | "discover held" => {
                let m = mac(&mut rng);
                let req = pb::DiscoverNodeRequest {
                    rack: rack.clone(),
                    mac: m.clone(),
                    macs: if r.is_multiple_of(3) {
                        vec![mac(&mut rng)]
                    } else {
                        Vec::new()
                    },
                    uuid: String::new(),
                    hold: kind == "discover held",
                    inventory: [("cpus".to_string(), (r % 128).to_string())].into(),
                    idempotency_key: String::new(),
                };
                let node = agents(ch.clone())
                    .discover_node(req)
                    .await
                    .map(|n| n.into_inner());
                match node {
                    Ok(node) if node.pending => {
                        pending.push(m);
                        Ok(())
                    }
                    Ok(node) => {
                        numbers.push(node.number);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            "accept" => match pending.pop() {
                Some(m) => nodes(ch.clone())
                    .accept_machine(pb::AcceptMachineRequest {
                        mac: m,
                        idempotency_key: String::new(),
                    })
                    .await
                    .map(|n| numbers.push(n.into_inner().number)),
                None => Ok(()),
            },
            "add nodes" => {
                let req = pb::AddNodesRequest {
                    rack: rack.clone(),
                    machines: vec![
                        pb::add_nodes_request::Machine {
                            macs: vec![mac(&mut rng)],
                        },
                        pb::add_nodes_request::Machine {
                            macs: vec![mac(&mut rng), mac(&mut rng)],
                        },
                    ],
                    idempotency_key: String::new(),
                };
                nodes(ch.clone()).add_nodes(req).await.map(|a| {
                    numbers.extend(a.into_inner().nodes.iter().map(|n| n.number));
                })
            }
            "commit image" => {
                let name = format!("img:{i}");
                let k = &blobs[(r % 4) as usize];
                let d = &blobs[((r >> 8) % 4) as usize];
                let req = pb::CommitImageRequest {
                    name: name.clone(),
                    kernel: Some(k.clone()),
                    initrd: Some(d.clone()),
                    cmdline: format!("console=ttyS0 op={i}"),
                    kernel_version: "6.1.0-test".into(),
                    modules: None,
                    dtb: None,
                    idempotency_key: String::new(),
                };
                let out = images(ch.clone()).commit_image(req).await.map(|_| ());
                if out.is_ok() {
                    image_names.push(name);
                }
                out
            }
            "tag" if !image_names.is_empty() => {
                let image = image_names[(r % image_names.len() as u64) as usize].clone();
                images(ch.clone())
                    .tag_image(pb::TagImageRequest {
                        tag: format!("tag:{}", r % 5),
                        image,
                    })
                    .await
                    .map(|_| ())
            }
            "assign" if !image_names.is_empty() => {
                let image = if r.is_multiple_of(4) {
                    format!("tag:{}", (r >> 4) % 5)
                } else {
                    image_names[(r % image_names.len() as u64) as usize].clone()
                };
                let target = match (r >> 12) % 4 {
                    0 => pb::assign_request::Target::ClusterDefault(true),
                    1 => pb::assign_request::Target::Rack(rack.clone()),
                    2 if !numbers.is_empty() => pb::assign_request::Target::Node(
                        numbers[((r >> 16) % numbers.len() as u64) as usize],
                    ),
                    _ => pb::assign_request::Target::Discovery(true),
                };
                assignments(ch.clone())
                    .assign(pb::AssignRequest {
                        target: Some(target),
                        image,
                        idempotency_key: String::new(),
                    })
                    .await
                    .map(|_| ())
            }
            "meta" => meta(ch.clone())
                .set_meta(pb::SetMetaRequest {
                    key: format!("site_key{}", r % 40),
                    value: format!("v{i}"),
                    unset: r.is_multiple_of(7),
                    idempotency_key: String::new(),
                })
                .await
                .map(|_| ()),
            "retire" if !numbers.is_empty() => nodes(ch.clone())
                .retire_node(pb::RetireNodeRequest {
                    number: numbers[(r % numbers.len() as u64) as usize],
                    idempotency_key: String::new(),
                })
                .await
                .map(|_| ()),
            "replace" if !numbers.is_empty() => nodes(ch.clone())
                .replace_node(pb::ReplaceNodeRequest {
                    number: numbers[(r % numbers.len() as u64) as usize],
                    macs: vec![mac(&mut rng)],
                    idempotency_key: String::new(),
                })
                .await
                .map(|_| ()),
            "cache report" => agents(ch.clone())
                .report_cache(pb::ReportCacheRequest {
                    rack: rack.clone(),
                    agent_id: format!("agent-{rack}"),
                    held: blobs.iter().take((r % 5) as usize).cloned().collect(),
                    bytes: r % 100_000,
                    max_bytes: 1 << 30,
                    evicted: r % 3,
                    repaired_groups: r % 2,
                    problems: vec![],
                })
                .await
                .map(|_| ()),
            "boot events" if !numbers.is_empty() => agents(ch.clone())
                .report_boot_events(pb::ReportBootEventsRequest {
                    rack: rack.clone(),
                    events: vec![pb::BootEvent {
                        session_id: format!("s{i}"),
                        node: numbers[(r % numbers.len() as u64) as usize],
                        mac: mac(&mut rng),
                        image: String::new(),
                        kernel_blake3: blobs[0].blake3.clone(),
                        kernel_version: "6.1.0-test".into(),
                        transport: "tftp".into(),
                        unix_millis: 1_700_000_000_000 + i,
                        phases: [("dhcp".to_string(), i)].into(),
                    }],
                })
                .await
                .map(|_| ()),
            _ => Ok(()),
        };
        let e = outcomes.entry(kind.to_string()).or_default();
        match res {
            Ok(()) => e.0 += 1,
            // Deterministic refusals (a full rack, a retired node, a MAC
            // already taken…) are valid outcomes too: nothing is stored.
            Err(s) if s.code() != tonic::Code::Unavailable && s.code() != tonic::Code::Internal => {
                e.1 += 1
            }
            Err(s) => panic!(
                "operation {i} ({kind}) failed: {s}\n{}",
                cluster.log_tails(20)
            ),
        }
    }
    let elapsed = started.elapsed();
    let all = [1u64, 2, 3];
    let (index, digest) = ep
        .converge(&all, Duration::from_secs(60))
        .await
        .expect("converge");

    // SIGKILL every replica, start them again.
    for id in all {
        cluster.kill(id);
    }
    cluster.start_all();
    let (index2, digest2) = ep
        .converge(&all, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("after SIGKILL: {e}\n{}", cluster.log_tails(30)));
    assert_eq!(digest2, digest, "the state after a crash restart differs");
    assert!(index2 >= index);

    // A clean stop (SIGTERM) and start again.
    for id in all {
        if let Some(c) = cluster.procs.get(&id).and_then(|p| p.child.as_ref()) {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.start_all();
    let (_, digest3) = ep
        .converge(&all, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("after SIGTERM: {e}\n{}", cluster.log_tails(30)));
    assert_eq!(digest3, digest, "the state after a clean restart differs");
    println!(
        "restart validity: {n} operations in {elapsed:.1?} (accepted, refused by kind: {outcomes:?}); \
         index {index}, digest {}…; identical after SIGKILL of all 3 replicas and after a clean restart",
        &digest[..12]
    );
}
