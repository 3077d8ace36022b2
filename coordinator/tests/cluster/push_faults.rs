//! Pushes under faults: a blob's name never lies and nothing partial is ever
//! visible.
//!
//! `push_faults_never_store_a_lie` pushes `RACKBOOT_PUSH_FAULT_BLOBS` (default
//! 1,000) random-size blobs to a 3-replica cluster (real processes), each
//! with one injected fault: truncated data, a flipped bit, duplicated
//! groups, groups out of order, a lying outboard, a client killed
//! mid-stream, a push without an outboard that is short or corrupt; every
//! 100th blob its receiving replica is SIGKILLed mid-stream and restarted.
//! After each faulty attempt the blob must not be visible (`MissingBlobs`
//! lists it, `FetchBlob` does not serve it); it is then resumed as the CLI
//! does (only the missing groups) and must be stored. At the end every file
//! in every replica's store hashes to its name and no temporary data is left.
//!
//! `abandoned_uploads_and_unreferenced_blobs_are_reclaimed`: with a 2 s grace
//! period, interrupted pushes nobody resumes and blobs no image names are
//! removed; the blobs of a committed image stay.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rackboot_image::outboard::{self, GROUP, Outboard};
use rackboot_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::blobs::{Blob, commit, fetch, images, random_blob};
use crate::harness::{Cluster, Opts, Rng, exclusive};

/// The groups of a blob as (offset, bytes).
fn groups(b: &Blob) -> Vec<(u64, Vec<u8>)> {
    (0..outboard::groups(b.blob.size))
        .filter_map(|g| outboard::group_range(b.blob.size, g))
        .map(|(off, len)| (off, b.data[off as usize..(off + len) as usize].to_vec()))
        .collect()
}

fn msg(b: &Blob, first: bool, offset: u64, data: Vec<u8>, ob: &[u8]) -> pb::PutBlobChunk {
    pb::PutBlobChunk {
        header: first.then(|| b.blob.clone()),
        data,
        offset,
        outboard: if first { ob.to_vec() } else { Vec::new() },
    }
}

/// Messages carrying `parts` (offset, bytes), the first with header and outboard.
fn messages(b: &Blob, parts: Vec<(u64, Vec<u8>)>, ob: &[u8]) -> Vec<pb::PutBlobChunk> {
    if parts.is_empty() {
        return vec![msg(b, true, 0, Vec::new(), ob)];
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(i, (off, d))| msg(b, i == 0, off, d, ob))
        .collect()
}

async fn put(
    ch: Channel,
    msgs: Vec<pb::PutBlobChunk>,
) -> Result<pb::PutBlobResponse, tonic::Status> {
    images(ch)
        .put_blob(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

/// (missing, bytes an interrupted upload left) as `MissingBlobs` says.
async fn missing(ch: Channel, b: &Blob) -> (bool, u64) {
    let r = images(ch)
        .missing_blobs(pb::MissingBlobsRequest {
            blobs: vec![b.blob.clone()],
        })
        .await
        .expect("MissingBlobs")
        .into_inner();
    let held = r
        .partial
        .iter()
        .find(|p| p.blob.as_ref() == Some(&b.blob))
        .map(|p| p.bytes_held)
        .unwrap_or(0);
    (r.missing.iter().any(|m| m == &b.blob), held)
}

/// Resume as the CLI does: ask what is held, send the rest. Returns the
/// bytes sent.
async fn resume(ch: Channel, b: &Blob) -> Result<u64, tonic::Status> {
    let r = images(ch.clone())
        .missing_blobs(pb::MissingBlobsRequest {
            blobs: vec![b.blob.clone()],
        })
        .await?
        .into_inner();
    if !r.missing.iter().any(|m| m == &b.blob) {
        return Ok(0);
    }
    let bitmap = r
        .partial
        .iter()
        .find(|p| p.blob.as_ref() == Some(&b.blob))
        .map(|p| p.groups_held.clone())
        .unwrap_or_default();
    let parts: Vec<(u64, Vec<u8>)> = groups(b)
        .into_iter()
        .enumerate()
        .filter(|(g, _)| {
            bitmap
                .get(g / 8)
                .is_none_or(|byte| byte & (1 << (g % 8)) == 0)
        })
        .map(|(_, p)| p)
        .collect();
    let sent = parts.iter().map(|(_, d)| d.len() as u64).sum();
    let ob = Outboard::compute(&b.data).to_bytes();
    put(ch, messages(b, parts, &ob)).await?;
    Ok(sent)
}

/// Not visible: listed missing, not served.
async fn assert_invisible(ch: Channel, b: &Blob, what: &str) {
    let (is_missing, _) = missing(ch.clone(), b).await;
    assert!(
        is_missing,
        "{what}: the blob must not be visible after a failed push"
    );
    let served = fetch(ch, &b.blob.blake3).await;
    assert!(
        served.is_err(),
        "{what}: a blob never completed must not be served"
    );
}

/// Every stored file hashes to its name; returns (files, bytes).
fn audit_store(dir: &Path) -> (u64, u64, Vec<String>) {
    let (mut files, mut bytes, mut lies) = (0, 0, Vec::new());
    let Ok(rd) = std::fs::read_dir(dir) else {
        return (0, 0, lies);
    };
    for d in rd.flatten() {
        if d.file_name().len() != 2 {
            continue;
        }
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            let data = std::fs::read(f.path()).unwrap();
            let name = f.file_name().to_string_lossy().to_string();
            if blake3::hash(&data).to_hex().as_str() != name {
                lies.push(name);
            }
            files += 1;
            bytes += data.len() as u64;
        }
    }
    (files, bytes, lies)
}

fn dir_bytes(dir: &Path) -> (usize, u64) {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .fold((0, 0), |(n, b), m| (n + 1, b + m.len()))
        })
        .unwrap_or((0, 0))
}

fn store_dir(cluster: &Cluster, id: u64) -> PathBuf {
    cluster.procs[&id].data.join("blobs")
}

async fn wait_up(cluster: &Cluster, id: u64) {
    let ep = cluster.endpoints();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if ep.status(id).await.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("replica {id} did not come back:\n{}", cluster.log_tails(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_faults_never_store_a_lie() {
    let _one = exclusive();
    let n: u64 = std::env::var("RACKBOOT_PUSH_FAULT_BLOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut cluster = Cluster::new(3, Opts::default());
    cluster.start_all();
    let ep = cluster.endpoints();
    ep.wait_leader(Duration::from_secs(15))
        .await
        .expect("a leader");
    let mut rng = Rng::new(4242);
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    let mut resumed_bytes_saved = 0u64;
    let started = Instant::now();
    let mut total_bytes = 0u64;
    let mut pushed = Vec::new();
    for i in 0..n {
        // Mostly small blobs, some spanning several 1 MiB groups.
        let size = match rng.next() % 100 {
            // Every 100th push loses its replica mid-stream: several groups.
            _ if i % 100 == 50 => (2 * GROUP + rng.next() % GROUP) as usize,
            0..=79 => (rng.next() % (64 << 10)) as usize,
            80..=97 => (GROUP + rng.next() % (2 * GROUP)) as usize,
            _ => (3 * GROUP + rng.next() % GROUP) as usize,
        };
        let b = random_blob(10_000 + i, size);
        total_bytes += size as u64;
        let id = 1 + rng.next() % 3;
        let ch = ep.channel(id);
        let ob = Outboard::compute(&b.data).to_bytes();
        let gs = groups(&b);
        let kind = if i % 100 == 50 && gs.len() >= 2 {
            "coordinator killed mid-stream"
        } else {
            match rng.next() % 9 {
                0 => "clean",
                1 => "truncated",
                2 => "bit flip",
                3 => "duplicate groups",
                4 => "out of order",
                5 => "lying outboard",
                6 => "client killed mid-stream",
                7 => "no outboard, truncated",
                _ => "no outboard, bit flip",
            }
        };
        *faults.entry(kind).or_default() += 1;
        let what = format!("blob {i} ({size} bytes, {kind}, replica {id})");
        match kind {
            "clean" => {
                let r = put(ch.clone(), messages(&b, gs, &ob)).await;
                assert!(r.expect(&what).stored, "{what}");
            }
            "duplicate groups" => {
                let mut parts = gs.clone();
                parts.extend(gs.iter().take(2).cloned());
                parts.insert(0, gs[0].clone());
                let r = put(ch.clone(), messages(&b, parts, &ob)).await;
                assert!(r.expect(&what).stored, "{what}");
            }
            "out of order" => {
                let mut parts = gs.clone();
                parts.reverse();
                let r = put(ch.clone(), messages(&b, parts, &ob)).await;
                assert!(r.expect(&what).stored, "{what}");
            }
            "truncated" | "bit flip" | "lying outboard" => {
                let mut parts = gs.clone();
                let mut lie = ob.clone();
                let last = parts.len() - 1;
                match kind {
                    "truncated" => {
                        let (_, d) = &mut parts[last];
                        let keep = (rng.next() as usize) % d.len().max(1);
                        d.truncate(keep);
                        if d.is_empty() && b.blob.size == 0 {
                            // An empty blob cannot be cut: send a byte too many.
                            d.push(0);
                        }
                    }
                    "bit flip" => {
                        let g = (rng.next() as usize) % parts.len();
                        let (_, d) = &mut parts[g];
                        if d.is_empty() {
                            d.push(1);
                        } else {
                            let at = (rng.next() as usize) % d.len();
                            d[at] ^= 1 << (rng.next() % 8);
                        }
                    }
                    _ => {
                        let at = (rng.next() as usize) % lie.len();
                        lie[at] ^= 1 << (rng.next() % 8);
                    }
                }
                let r = put(ch.clone(), messages(&b, parts, &lie)).await;
                let s = r.expect_err(&format!("{what}: must be refused"));
                assert_eq!(s.code(), tonic::Code::InvalidArgument, "{what}: {s}");
                assert_invisible(ch.clone(), &b, &what).await;
                let (_, held) = missing(ch.clone(), &b).await;
                resumed_bytes_saved += held;
                resume(ch.clone(), &b).await.expect(&what);
            }
            "client killed mid-stream" => {
                let (tx, rx) = mpsc::channel(1);
                let call = tokio::spawn({
                    let ch = ch.clone();
                    async move { images(ch).put_blob(ReceiverStream::new(rx)).await }
                });
                let half = gs.len().div_ceil(2);
                for m in messages(&b, gs.clone(), &ob).into_iter().take(half) {
                    if tx.send(m).await.is_err() {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                call.abort();
                drop(tx);
                let _ = call.await;
                // The server may still be finishing the group it was writing.
                tokio::time::sleep(Duration::from_millis(20)).await;
                // A one-group blob may have been completed before the kill:
                // then it is whole, or else invisible.
                let (is_missing, held) = missing(ch.clone(), &b).await;
                if is_missing {
                    assert_invisible(ch.clone(), &b, &what).await;
                    resumed_bytes_saved += held;
                }
                retry_resume(ch.clone(), &b, &what).await;
            }
            "coordinator killed mid-stream" => {
                let (tx, rx) = mpsc::channel(1);
                let call = tokio::spawn({
                    let ch = ch.clone();
                    async move { images(ch).put_blob(ReceiverStream::new(rx)).await }
                });
                for m in messages(&b, gs.clone(), &ob).into_iter().take(gs.len() - 1) {
                    let _ = tx.send(m).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                cluster.kill(id);
                let r = call.await.expect("put task");
                assert!(
                    r.is_err(),
                    "{what}: an interrupted push is not acknowledged"
                );
                cluster.start(id);
                wait_up(&cluster, id).await;
                let (is_missing, held) = missing(ch.clone(), &b).await;
                assert!(is_missing, "{what}");
                assert_invisible(ch.clone(), &b, &what).await;
                assert!(
                    held > 0,
                    "{what}: the groups that arrived before the kill are kept across the restart"
                );
                resumed_bytes_saved += held;
                retry_resume(ch.clone(), &b, &what).await;
            }
            "no outboard, truncated" | "no outboard, bit flip" => {
                let mut data = b.data.clone();
                if kind.ends_with("truncated") {
                    if data.is_empty() {
                        data.push(7);
                    } else {
                        data.truncate((rng.next() as usize) % data.len());
                    }
                } else if data.is_empty() {
                    data.push(7);
                } else {
                    let at = (rng.next() as usize) % data.len();
                    data[at] ^= 0x80;
                }
                let mut msgs: Vec<pb::PutBlobChunk> = data
                    .chunks(GROUP as usize)
                    .enumerate()
                    .map(|(k, c)| pb::PutBlobChunk {
                        header: (k == 0).then(|| b.blob.clone()),
                        data: c.to_vec(),
                        offset: k as u64 * GROUP,
                        outboard: Vec::new(),
                    })
                    .collect();
                if msgs.is_empty() {
                    msgs.push(pb::PutBlobChunk {
                        header: Some(b.blob.clone()),
                        ..Default::default()
                    });
                }
                let r = put(ch.clone(), msgs).await;
                assert!(r.is_err(), "{what}: must be refused");
                assert_invisible(ch.clone(), &b, &what).await;
                resume(ch.clone(), &b).await.expect(&what);
            }
            other => unreachable!("{other}"),
        }
        let (is_missing, _) = missing(ch.clone(), &b).await;
        assert!(!is_missing, "{what}: stored after the resume");
        pushed.push(b.blob.blake3.clone());
    }
    let elapsed = started.elapsed();

    // Let replication of the last pushes settle, then audit every replica.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut report = Vec::new();
    for id in [1u64, 2, 3] {
        let dir = store_dir(&cluster, id);
        let (files, bytes, lies) = audit_store(&dir);
        assert!(
            lies.is_empty(),
            "replica {id}: files whose hash differs from their name: {lies:?}"
        );
        let (partials, _) = dir_bytes(&dir.join("partial"));
        let (tmps, _) = dir_bytes(&dir.join("tmp"));
        assert_eq!(
            partials, 0,
            "replica {id}: partial uploads left after every push completed"
        );
        assert_eq!(tmps, 0, "replica {id}: temporary files left");
        report.push(format!(
            "replica {id}: {files} blobs, {bytes} bytes, all verified"
        ));
    }
    println!(
        "push faults: {n} blobs ({total_bytes} bytes) in {elapsed:.1?}; faults {faults:?}; \
         {resumed_bytes_saved} bytes kept by interrupted pushes and not sent again; {}",
        report.join("; ")
    );
}

/// Resume until it succeeds (a replica just restarted may still be
/// catching up, or the server may still hold the killed push's lock).
async fn retry_resume(ch: Channel, b: &Blob, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match resume(ch.clone(), b).await {
            Ok(_) => return,
            Err(s) if Instant::now() < deadline => {
                tracing_free_log(what, &s);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(s) => panic!("{what}: resume failed: {s}"),
        }
    }
}

fn tracing_free_log(what: &str, s: &tonic::Status) {
    eprintln!("{what}: resume attempt failed ({}), retrying", s.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_and_unreferenced_blobs_are_reclaimed() {
    let _one = exclusive();
    let mut cluster = Cluster::new(1, Opts::default());
    cluster.procs.get_mut(&1).unwrap().args = vec!["--upload-grace-secs".into(), "2".into()];
    cluster.start_all();
    let ep = cluster.endpoints();
    ep.wait_leader(Duration::from_secs(15))
        .await
        .expect("a leader");
    let ch = ep.channel(1);
    let dir = store_dir(&cluster, 1);

    // Five pushes interrupted after their first group, never resumed.
    for i in 0..5u64 {
        let b = random_blob(500 + i, 3 * GROUP as usize + 10);
        let ob = Outboard::compute(&b.data).to_bytes();
        let gs = groups(&b);
        let r = put(ch.clone(), messages(&b, gs[..1].to_vec(), &ob)).await;
        let s = r.expect_err("an incomplete push is not acknowledged");
        assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s}");
        assert_eq!(missing(ch.clone(), &b).await, (true, GROUP));
    }
    let (partials, partial_bytes) = dir_bytes(&dir.join("partial"));
    assert_eq!(partials, 10, "five partial files and their outboards");
    // Three blobs pushed but never named by an image.
    let orphans: Vec<Blob> = (0..3).map(|i| random_blob(600 + i, 100_000)).collect();
    for b in &orphans {
        let ob = Outboard::compute(&b.data).to_bytes();
        assert!(
            put(ch.clone(), messages(b, groups(b), &ob))
                .await
                .unwrap()
                .stored
        );
    }
    // An image: its blobs must stay.
    let kernel = random_blob(700, 2 * GROUP as usize);
    let initrd = random_blob(701, 5000);
    for b in [&kernel, &initrd] {
        let ob = Outboard::compute(&b.data).to_bytes();
        assert!(
            put(ch.clone(), messages(b, groups(b), &ob))
                .await
                .unwrap()
                .stored
        );
    }
    commit(
        &ep,
        &[1],
        "kept:1",
        &kernel,
        &initrd,
        Duration::from_secs(20),
    )
    .await;

    let started = Instant::now();
    let deadline = started + Duration::from_secs(40);
    loop {
        let (partials, _) = dir_bytes(&dir.join("partial"));
        let orphans_left = orphans
            .iter()
            .filter(|b| dir.join(&b.blob.blake3[..2]).join(&b.blob.blake3).exists())
            .count();
        if partials == 0 && orphans_left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {:?}: {partials} partial files and {orphans_left} unreferenced blobs left\n{}",
            started.elapsed(),
            cluster.log_tails(20)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (files, _, lies) = audit_store(&dir);
    assert!(lies.is_empty());
    assert_eq!(files, 2, "the committed image's two blobs stay");
    assert_eq!(
        fetch(ch.clone(), &kernel.blob.blake3).await.unwrap(),
        kernel.data
    );
    assert_eq!(fetch(ch, &initrd.blob.blake3).await.unwrap(), initrd.data);
    println!(
        "reclaimed {partial_bytes} bytes of 5 abandoned pushes and 3 unreferenced blobs within {:?}",
        started.elapsed()
    );
}
