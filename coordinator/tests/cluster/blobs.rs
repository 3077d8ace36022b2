//! Blob replication: an image's blobs pushed to one replica are durable on a
//! quorum before the push is acknowledged, survive the loss of the leader
//! and of the replica that received the upload, are served (verified) by
//! every survivor, and reach a replica that was down during the push once
//! it is back. A rack agent (its real sync task and blob cache, in this
//! process) that was following the killed leader gets the image from a
//! survivor. A push to a replica that cannot reach a quorum is not
//! acknowledged.
//!
//! `RACKBOOT_BLOB_INITRD_MIB` sets the size of the first image's initrd
//! (default 8), to measure replication of larger pushes.

use std::path::Path;
use std::time::{Duration, Instant};

use rackboot_proto::v1 as pb;
use tonic::transport::Channel;

use crate::harness::{Cluster, Endpoints, Opts, Rng, exclusive};

const MIB: usize = 1 << 20;

/// A blob of random bytes and its reference.
pub(crate) struct Blob {
    pub(crate) data: Vec<u8>,
    pub(crate) blob: pb::BlobRef,
}

pub(crate) fn random_blob(seed: u64, size: usize) -> Blob {
    let mut rng = Rng::new(seed);
    let mut data = Vec::with_capacity(size + 8);
    while data.len() < size {
        data.extend_from_slice(&rng.next().to_le_bytes());
    }
    data.truncate(size);
    let blob = pb::BlobRef {
        blake3: blake3::hash(&data).to_hex().to_string(),
        size: size as u64,
    };
    Blob { data, blob }
}

pub(crate) fn images(ch: Channel) -> pb::image_service_client::ImageServiceClient<Channel> {
    pb::image_service_client::ImageServiceClient::new(ch)
        .max_decoding_message_size(16 * MIB)
        .max_encoding_message_size(16 * MIB)
}

/// `PutBlob` in 1 MiB chunks with the outboard, as the CLI sends it.
async fn put_blob(ch: Channel, b: &Blob) -> Result<pb::PutBlobResponse, tonic::Status> {
    let mut msgs = Vec::new();
    for (i, chunk) in b.data.chunks(MIB).enumerate() {
        msgs.push(pb::PutBlobChunk {
            header: (i == 0).then(|| b.blob.clone()),
            data: chunk.to_vec(),
            offset: (i * MIB) as u64,
            outboard: if i == 0 {
                rackboot_image::Outboard::compute(&b.data).to_bytes()
            } else {
                Vec::new()
            },
        });
    }
    images(ch)
        .put_blob(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

/// `CommitImage` against the given replicas in turn (same idempotency key),
/// until one answers with the manifest.
pub(crate) async fn commit(
    ep: &Endpoints,
    ids: &[u64],
    name: &str,
    kernel: &Blob,
    initrd: &Blob,
    limit: Duration,
) -> pb::ImageManifest {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    let mut i = 0usize;
    while Instant::now() < deadline {
        let id = ids[i % ids.len()];
        i += 1;
        let req = pb::CommitImageRequest {
            name: name.to_string(),
            kernel: Some(kernel.blob.clone()),
            initrd: Some(initrd.blob.clone()),
            cmdline: "console=ttyS0".into(),
            kernel_version: String::new(),
            modules: None,
            dtb: None,
            idempotency_key: format!("commit-{name}"),
        };
        match tokio::time::timeout(
            Duration::from_secs(20),
            images(ep.channel(id)).commit_image(req),
        )
        .await
        {
            Ok(Ok(m)) => return m.into_inner(),
            Ok(Err(s)) if s.code() == tonic::Code::Unavailable => {
                last = format!("replica {id}: {s}");
            }
            Ok(Err(s)) => panic!("commit {name} on replica {id}: {s}"),
            Err(_) => last = format!("replica {id}: timeout"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("commit {name}: no replica took it within {limit:?}: {last}");
}

/// `AgentService/FetchBlob` of a whole blob, as an agent fetches it.
pub(crate) async fn fetch(ch: Channel, blake3: &str) -> Result<Vec<u8>, tonic::Status> {
    let mut c =
        pb::agent_service_client::AgentServiceClient::new(ch).max_decoding_message_size(16 * MIB);
    let mut stream = c
        .fetch_blob(pb::FetchBlobRequest {
            blake3: blake3.to_string(),
            offset: 0,
            length: 0,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await? {
        assert_eq!(chunk.offset, out.len() as u64, "chunks arrive in order");
        out.extend_from_slice(&chunk.data);
    }
    Ok(out)
}

/// The blob's file under a replica's data directory, if it is there; the
/// file must hash to its name.
fn on_disk(data_dir: &Path, b: &Blob) -> bool {
    let hex = &b.blob.blake3;
    let path = data_dir.join("blobs").join(&hex[..2]).join(hex);
    match std::fs::read(&path) {
        Ok(bytes) => {
            assert_eq!(
                blake3::hash(&bytes).to_hex().to_string(),
                *hex,
                "{} does not hash to its name",
                path.display()
            );
            assert_eq!(bytes.len() as u64, b.blob.size);
            true
        }
        Err(_) => false,
    }
}

/// Wait until every blob is on the replica's disk; how long it took.
async fn wait_on_disk(cluster: &Cluster, id: u64, blobs: &[&Blob], limit: Duration) -> Duration {
    let started = Instant::now();
    let dir = cluster.procs[&id].data.clone();
    while !blobs.iter().all(|b| on_disk(&dir, b)) {
        if started.elapsed() > limit {
            panic!(
                "replica {id} still lacks blobs after {limit:?}\n{}",
                cluster.log_tails(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Every survivor: the image is readable, `FetchBlob` serves every blob with
/// the right bytes (pulling it from a peer first if it lacks it), and the
/// blobs end up on its disk, hashing to their names.
async fn check_survivors(
    cluster: &Cluster,
    ep: &Endpoints,
    survivors: &[u64],
    name: &str,
    blobs: &[&Blob],
) {
    for &id in survivors {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = images(ep.channel(id))
                .get_image(pb::GetImageRequest { name: name.into() })
                .await;
            match r {
                Ok(m) => {
                    let m = m.into_inner();
                    let kernel = m.kernel.expect("kernel");
                    assert_eq!(kernel.blake3, blobs[0].blob.blake3);
                    break;
                }
                Err(s) if Instant::now() < deadline && s.code() == tonic::Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(s) => panic!("replica {id}: image {name}: {s}"),
            }
        }
        for b in blobs {
            let t = Instant::now();
            let got = fetch(ep.channel(id), &b.blob.blake3)
                .await
                .unwrap_or_else(|s| panic!("replica {id}: FetchBlob {}: {s}", b.blob.blake3));
            assert!(
                got == b.data,
                "replica {id} served other bytes for {}",
                b.blob.blake3
            );
            println!(
                "  replica {id}: FetchBlob {} ({} MiB) served in {:?}",
                &b.blob.blake3[..12],
                b.blob.size as usize / MIB,
                t.elapsed()
            );
        }
        let waited = wait_on_disk(cluster, id, blobs, Duration::from_secs(20)).await;
        println!("  replica {id}: every blob on disk, verified (waited {waited:?})");
    }
}

fn on_disk_ids(cluster: &Cluster, ids: &[u64], blobs: &[&Blob]) -> Vec<u64> {
    ids.iter()
        .copied()
        .filter(|id| blobs.iter().all(|b| on_disk(&cluster.procs[id].data, b)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_survives_leader_and_uploader_kill() {
    let _one = exclusive();
    let started = Instant::now();
    let mut cluster = Cluster::new(3, Opts::default());
    cluster.start_all();
    let ep = cluster.endpoints();
    let all = [1u64, 2, 3];

    // 1. Push to the leader, commit there, kill it at once.
    let leader = ep
        .wait_leader(Duration::from_secs(15))
        .await
        .expect("a leader");
    // RACKBOOT_BLOB_INITRD_MIB: size of the first image's initrd (default 8).
    let initrd_mib = std::env::var("RACKBOOT_BLOB_INITRD_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(8);
    let kernel_a = random_blob(1, 4 * MIB);
    let initrd_a = random_blob(2, initrd_mib * MIB + 123);
    let t = Instant::now();
    for b in [&kernel_a, &initrd_a] {
        let r = put_blob(ep.channel(leader), b)
            .await
            .expect("push to leader");
        assert!(r.stored);
    }
    let push_a = t.elapsed();
    let with_copies = on_disk_ids(&cluster, &all, &[&kernel_a, &initrd_a]);
    assert!(
        with_copies.len() >= 2,
        "acknowledged pushes are on a quorum, found on {with_copies:?}"
    );
    commit(
        &ep,
        &[leader],
        "a",
        &kernel_a,
        &initrd_a,
        Duration::from_secs(20),
    )
    .await;
    println!(
        "image a: {} MiB pushed to leader {leader} and acknowledged on a quorum in {push_a:?} \
         (on {with_copies:?} at acknowledgement); leader killed",
        4 + initrd_mib
    );
    cluster.kill(leader);
    let survivors: Vec<u64> = all.iter().copied().filter(|i| *i != leader).collect();
    check_survivors(&cluster, &ep, &survivors, "a", &[&kernel_a, &initrd_a]).await;

    // 2. Push to a follower, kill it right after the push is acknowledged,
    //    commit through a survivor (what the CLI does on failover).
    cluster.start(leader);
    ep.converge(&all, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(30)));
    let leader = ep
        .wait_leader(Duration::from_secs(15))
        .await
        .expect("a leader");
    let uploader = *all.iter().find(|i| **i != leader).expect("a follower");
    let kernel_b = random_blob(3, 2 * MIB);
    let initrd_b = random_blob(4, 6 * MIB + 7);
    let t = Instant::now();
    for b in [&kernel_b, &initrd_b] {
        put_blob(ep.channel(uploader), b)
            .await
            .expect("push to follower");
    }
    let push_b = t.elapsed();
    cluster.kill(uploader);
    let survivors: Vec<u64> = all.iter().copied().filter(|i| *i != uploader).collect();
    commit(
        &ep,
        &survivors,
        "b",
        &kernel_b,
        &initrd_b,
        Duration::from_secs(30),
    )
    .await;
    println!(
        "image b: 8 MiB pushed to follower {uploader} in {push_b:?}; uploader killed; \
         committed through a survivor"
    );
    check_survivors(&cluster, &ep, &survivors, "b", &[&kernel_b, &initrd_b]).await;

    // 3. A replica down during a push catches up once back (background
    //    repair), and also serves the older images.
    cluster.start(uploader);
    ep.converge(&all, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(30)));
    let leader = ep
        .wait_leader(Duration::from_secs(15))
        .await
        .expect("a leader");
    let down = *all.iter().find(|i| **i != leader).expect("a follower");
    cluster.kill(down);
    let kernel_c = random_blob(5, 3 * MIB);
    let initrd_c = random_blob(6, 5 * MIB);
    for b in [&kernel_c, &initrd_c] {
        put_blob(ep.channel(leader), b)
            .await
            .expect("push with one replica down");
    }
    commit(
        &ep,
        &[leader],
        "c",
        &kernel_c,
        &initrd_c,
        Duration::from_secs(20),
    )
    .await;
    cluster.start(down);
    let caught_up = wait_on_disk(
        &cluster,
        down,
        &[
            &kernel_a, &initrd_a, &kernel_b, &initrd_b, &kernel_c, &initrd_c,
        ],
        Duration::from_secs(30),
    )
    .await;
    println!(
        "replica {down}, down during the push of image c, has every blob {caught_up:?} after its restart"
    );
    check_survivors(&cluster, &ep, &[down], "c", &[&kernel_c, &initrd_c]).await;

    // 4. A stored blob that rots (same size, one byte flipped) is caught when
    //    read: the read fails with DATA_LOSS, the file is dropped, and the
    //    next FetchBlob pulls a good copy from a peer first.
    let hex = &initrd_a.blob.blake3;
    let path = cluster.procs[&down]
        .data
        .join("blobs")
        .join(&hex[..2])
        .join(hex);
    let mut bytes = std::fs::read(&path).expect("blob file");
    bytes[12345] ^= 0x40;
    std::fs::write(&path, &bytes).expect("corrupt it");
    let s = fetch(ep.channel(down), hex)
        .await
        .expect_err("a rotten blob is not served as good");
    assert_eq!(s.code(), tonic::Code::DataLoss, "{s}");
    let t = Instant::now();
    let got = fetch(ep.channel(down), hex).await.unwrap_or_else(|s| {
        panic!(
            "FetchBlob after the rot was found: {s}\n{}",
            cluster.log_tails(20)
        )
    });
    assert!(got == initrd_a.data, "the good bytes are served again");
    assert!(on_disk(&cluster.procs[&down].data, &initrd_a));
    println!(
        "replica {down}: rotten blob refused (DATA_LOSS), pulled again and served in {:?}",
        t.elapsed()
    );
    println!("blob replication test: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_without_quorum_is_not_acknowledged() {
    let _one = exclusive();
    let mut cluster = Cluster::new(3, Opts::default());
    cluster.start_all();
    let ep = cluster.endpoints();
    ep.wait_leader(Duration::from_secs(15))
        .await
        .expect("a leader");

    // Only replica 1 left: the push is refused after the quorum wait.
    cluster.kill(2);
    cluster.kill(3);
    let lonely = random_blob(10, MIB);
    let t = Instant::now();
    let r = put_blob(ep.channel(1), &lonely).await;
    let waited = t.elapsed();
    let s = r.expect_err("a push that only one replica holds is not acknowledged");
    assert_eq!(s.code(), tonic::Code::Unavailable, "{s}");
    assert!(s.message().contains("1 of 3"), "{s}");
    assert!(waited < Duration::from_secs(20), "answered in {waited:?}");
    println!(
        "push with 1 of 3 replicas: refused after {waited:?}: {}",
        s.message()
    );

    // A peer is back but frozen: the push waits, and is acknowledged only
    // once the peer resumes and holds the blob.
    cluster.start(2);
    let up = Instant::now();
    while ep.status(2).await.is_none() {
        assert!(
            up.elapsed() < Duration::from_secs(15),
            "replica 2 does not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.pause(2);
    let b = random_blob(11, 2 * MIB);
    let ch = ep.channel(1);
    let data = Blob {
        data: b.data.clone(),
        blob: b.blob.clone(),
    };
    let push = tokio::spawn(async move { put_blob(ch, &data).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !push.is_finished(),
        "no acknowledgement while only one replica holds the blob"
    );
    cluster.resume(2);
    let t = Instant::now();
    let r = push.await.expect("push task");
    let r = r.unwrap_or_else(|s| {
        panic!(
            "push after the peer resumed: {s}\n{}",
            cluster.log_tails(30)
        )
    });
    assert_eq!(r.blob.expect("blob").blake3, b.blob.blake3);
    assert!(on_disk(&cluster.procs[&2].data, &b), "the peer holds it");
    println!(
        "push with a frozen peer: acknowledged {:?} after the peer resumed",
        t.elapsed()
    );

    // The refused blob: a retried push completes its replication.
    let r = put_blob(ep.channel(1), &lonely)
        .await
        .expect("retried push");
    assert!(!r.stored, "already stored on replica 1");
    assert!(on_disk(&cluster.procs[&2].data, &lonely));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_gets_the_image_after_the_leader_is_killed() {
    use std::sync::Arc;

    use rackboot_agent::store::cache::BlobCache;
    use rackboot_agent::upstream::follow::{SyncConfig, run};
    use rackboot_agent_domain::discovery::Unknown;
    use rackboot_agent_domain::view::RackView;
    use tokio::sync::{Notify, mpsc, watch};
    use tokio_util::sync::CancellationToken;

    let _one = exclusive();
    let started = Instant::now();
    let mut cluster = Cluster::new(3, Opts::default());
    cluster.start_all();
    let ep = cluster.endpoints();
    let leader = ep
        .wait_leader(Duration::from_secs(15))
        .await
        .expect("a leader");

    // The agent follows the leader first, the others after it.
    let mut urls = vec![format!("http://{}", cluster.procs[&leader].addr)];
    for (id, p) in &cluster.procs {
        if *id != leader {
            urls.push(format!("http://{}", p.addr));
        }
    }
    let agent_dir = cluster.dir.join("agent");
    std::fs::create_dir_all(&agent_dir).expect("agent dir");
    let cache = Arc::new(BlobCache::open(&agent_dir.join("cache")).expect("cache"));
    let (view_tx, mut view_rx) = watch::channel(Arc::new(RackView::default()));
    let (unknown_tx, unknown_rx) = mpsc::channel::<Unknown>(16);
    let stop = CancellationToken::new();
    let agent = tokio::spawn(run(
        SyncConfig {
            coordinators: urls,
            rack: pb::Rack {
                name: crate::harness::RACK.into(),
                subnet: "10.0.0.0/16".into(),
                server_address: "10.0.0.1".into(),
                node_base: "10.0.0.10".into(),
                gateway: String::new(),
            },
            agent_id: "blob-test".into(),
            view_path: agent_dir.join("rack-view.pb"),
            stats: Default::default(),
            problems: watch::channel(Arc::new(Vec::new())).1,
        },
        view_tx,
        unknown_rx,
        cache.clone(),
        Arc::new(Notify::new()),
        stop.clone(),
    ));
    // Registered and watching: a machine it reports becomes a node.
    unknown_tx
        .send(Unknown {
            mac: "52:54:00:00:00:01".parse().expect("mac"),
            macs: Vec::new(),
            uuid: None,
            inventory: Vec::new(),
            hold: false,
        })
        .await
        .expect("agent running");
    let deadline = Instant::now() + Duration::from_secs(20);
    while view_rx.borrow().nodes.is_empty() {
        assert!(Instant::now() < deadline, "the agent never saw its node");
        let _ = tokio::time::timeout(Duration::from_millis(200), view_rx.changed()).await;
    }

    // Push and commit on the leader, then kill it: the agent loses its
    // coordinator before it is told about the image.
    let kernel = random_blob(21, 4 * MIB);
    let initrd = random_blob(22, 8 * MIB);
    for b in [&kernel, &initrd] {
        put_blob(ep.channel(leader), b).await.expect("push");
    }
    commit(
        &ep,
        &[leader],
        "img",
        &kernel,
        &initrd,
        Duration::from_secs(20),
    )
    .await;
    cluster.kill(leader);
    let killed = Instant::now();
    let survivors: Vec<u64> = [1u64, 2, 3].into_iter().filter(|i| *i != leader).collect();

    // Assigned through a survivor; the agent reconnects to one and fetches.
    let assign_deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0usize;
    loop {
        let id = survivors[i % survivors.len()];
        i += 1;
        let mut c = pb::assignment_service_client::AssignmentServiceClient::new(ep.channel(id));
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            c.assign(pb::AssignRequest {
                target: Some(pb::assign_request::Target::ClusterDefault(true)),
                image: "img".into(),
                idempotency_key: "assign-img".into(),
            }),
        )
        .await;
        match r {
            Ok(Ok(_)) => break,
            _ if Instant::now() < assign_deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("assign through survivors: {other:?}"),
        }
    }
    let wait = Instant::now() + Duration::from_secs(60);
    for b in [&kernel, &initrd] {
        let digest: rackboot_state::Blake3Digest = b.blob.blake3.parse().expect("digest");
        loop {
            if let Some(file) = cache.get(&digest) {
                let bytes = rackboot_agent::store::disk::Body::Verified(file)
                    .read_all()
                    .expect("the verified file reads");
                assert!(bytes[..] == b.data[..], "the agent holds the pushed bytes");
                break;
            }
            assert!(
                Instant::now() < wait,
                "the agent never got blob {} after the leader was killed\n{}",
                b.blob.blake3,
                cluster.log_tails(30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "agent: image (12 MiB) in its verified cache {:?} after leader {leader} was killed (test {:?})",
        killed.elapsed(),
        started.elapsed()
    );
    stop.cancel();
    let _ = agent.await;
}
