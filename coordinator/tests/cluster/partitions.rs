//! Partitions: five replicas in a private network namespace, links between
//! them cut with nftables, under a paced load of registrations and
//! linearizable reads from 8 clients spread over all replicas.
//!
//! How: `partitions` re-runs this test binary under `unshare --net` (a new,
//! anonymous network namespace that disappears with the process: nothing on
//! the host changes and nothing is left behind). Inside, each replica listens
//! on its own loopback address (127.0.1.1 … 127.0.1.5) and binds its outgoing
//! peer connections to it, so one nftables rule per direction (`ip saddr A
//! ip daddr B drop` on the output hook) cuts exactly the link A→B. Clients
//! connect from 127.0.0.1, which is never cut: they can still reach a
//! replica on the losing side, which is how we see that it answers nothing.
//!
//! Scenarios (each `RACKBOOT_PARTITION_SECS` on, then as long healed;
//! default 3, full run 10):
//! - minority: two followers cut off from the other three;
//! - majority: the leader and one follower cut off from the other three (who
//!   must elect a new leader);
//! - leader-isolated: the leader alone;
//! - bridge: {a, b} and {d, e} cannot talk, c talks to everyone (both sides
//!   are majorities through c).
//!
//! Checks: no replica on a minority side answers a write or read invoked
//! after the cut and answered before the heal; the whole history is
//! linearizable (so no stale read) and nothing acknowledged is lost; all
//! replicas converge to one state digest after the last heal.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::harness::{Cluster, Endpoints, Opts, Workload, env_secs, exclusive, run_workload};
use crate::history::{History, OpResult, check};

const INNER: &str = "RACKBOOT_NETNS_INNER";
const IDS: [u64; 5] = [1, 2, 3, 4, 5];

fn ip(id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, id as u8))
}

#[test]
fn partitions() {
    let _one = exclusive();
    let exe = std::env::current_exe().expect("test binary");
    let status = Command::new("unshare")
        .arg("--net")
        .arg("--")
        .arg(exe)
        .args([
            "partitions::partitions_in_netns",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER, "1")
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) if s.code() == Some(77) => {
            eprintln!("partitions skipped: cannot set up a network namespace (needs root)");
        }
        Ok(s) => panic!("partition test failed inside the namespace: {s}"),
        Err(e) => eprintln!("partitions skipped: cannot run unshare: {e}"),
    }
}

fn sh(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Drop every link between replicas not allowed to talk.
fn cut(pairs: &[(u64, u64)]) {
    for &(a, b) in pairs {
        for (x, y) in [(a, b), (b, a)] {
            let rule = format!("ip saddr {} ip daddr {} drop", ip(x), ip(y));
            let mut args = vec!["add", "rule", "inet", "rbpart", "out"];
            args.extend(rule.split(' '));
            sh("nft", &args).expect("nft rule");
        }
    }
}

fn heal() {
    sh("nft", &["flush", "chain", "inet", "rbpart", "out"]).expect("nft flush");
}

/// Pairs across two sides.
fn across(a: &[u64], b: &[u64]) -> Vec<(u64, u64)> {
    a.iter()
        .flat_map(|x| b.iter().map(move |y| (*x, *y)))
        .collect()
}

struct Window {
    name: &'static str,
    minority: BTreeSet<u64>,
    from: u64,
    to: u64,
}

async fn current_leader(ep: &Endpoints) -> u64 {
    ep.wait_leader(Duration::from_secs(20))
        .await
        .expect("a leader before the next partition")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run inside a network namespace by `partitions`"]
async fn partitions_in_netns() {
    assert!(
        std::env::var_os(INNER).is_some(),
        "run through the `partitions` test"
    );
    if sh("ip", &["link", "set", "lo", "up"]).is_err()
        || sh("nft", &["add", "table", "inet", "rbpart"]).is_err()
    {
        std::process::exit(77);
    }
    sh(
        "nft",
        &[
            "add", "chain", "inet", "rbpart", "out", "{", "type", "filter", "hook", "output",
            "priority", "0", ";", "policy", "accept", ";", "}",
        ],
    )
    .expect("nft chain");
    let span = env_secs("RACKBOOT_PARTITION_SECS", 3);

    let mut cluster = Cluster::new(
        5,
        Opts {
            ips: Some(IDS.iter().map(|i| ip(*i)).collect()),
            ..Opts::default()
        },
    );
    cluster.start_all();
    let ep = cluster.endpoints();
    ep.wait_leader(Duration::from_secs(20))
        .await
        .expect("a leader");
    ep.register_rack(Duration::from_secs(20))
        .await
        .expect("rack");

    let history = Arc::new(History::new());
    let stop = CancellationToken::new();
    let wl = Workload {
        rate: 20.0,
        read_every: 4,
        attempt_timeout: Duration::from_millis(1000),
        ..Workload::default()
    };
    let load = tokio::spawn(run_workload(ep.clone(), wl, history.clone(), stop.clone()));
    tokio::time::sleep(span).await;

    let mut windows = Vec::new();
    for name in ["minority", "majority", "leader-isolated", "bridge"] {
        let l = current_leader(&ep).await;
        let f: Vec<u64> = IDS.iter().copied().filter(|i| *i != l).collect();
        let (pairs, minority): (Vec<(u64, u64)>, Vec<u64>) = match name {
            "minority" => (across(&f[..2], &[f[2], f[3], l]), f[..2].to_vec()),
            "majority" => (across(&[l, f[0]], &f[1..]), vec![l, f[0]]),
            "leader-isolated" => (across(&[l], &f), vec![l]),
            _ => (across(&[l, f[0]], &[f[2], f[3]]), Vec::new()), // f[1] bridges
        };
        cut(&pairs);
        let from = history.now();
        tokio::time::sleep(span).await;
        let to = history.now();
        heal();
        println!("partition {name}: leader was {l}, minority {minority:?}, cut {pairs:?}");
        windows.push(Window {
            name,
            minority: minority.into_iter().collect(),
            from,
            to,
        });
        tokio::time::sleep(span).await;
    }
    stop.cancel();
    let (acked, _) = load.await.expect("load");

    let converged = ep.converge(&IDS, Duration::from_secs(60)).await;
    let final_state = ep.final_state().await.expect("final state");
    let ops = history.ops();
    let report = check(&ops, &final_state);
    let mut minority_answers = Vec::new();
    for w in &windows {
        let answered = ops
            .iter()
            .filter(|o| w.minority.contains(&o.served_by))
            .filter(|o| o.last_attempt >= w.from && o.complete.is_some_and(|c| c < w.to))
            .filter(|o| !matches!(o.result, OpResult::Unknown))
            .count();
        let during = ops
            .iter()
            .filter(|o| o.complete.is_some_and(|c| c >= w.from && c < w.to))
            .filter(|o| !matches!(o.result, OpResult::Unknown))
            .count();
        println!(
            "  {}: {} operations answered during the cut, {} of them by the minority {:?}",
            w.name, during, answered, w.minority
        );
        if answered > 0 {
            minority_answers.push((w.name, answered));
        }
    }
    println!(
        "partitions: {} acknowledged writes; converged {:?}; {}",
        acked.len(),
        converged
            .as_ref()
            .map(|(i, d)| format!("index {i} digest {}…", d.get(..12).unwrap_or(""))),
        report.summary()
    );
    if !report.ok() || converged.is_err() || !minority_answers.is_empty() {
        eprintln!("{}", cluster.log_tails(30));
    }
    assert!(
        minority_answers.is_empty(),
        "a minority answered: {minority_answers:?}"
    );
    assert!(report.ok(), "{}", report.summary());
    converged.expect("convergence after the partitions");
    cluster.keep_if_asked();
}
