//! Leader kill: three replicas, the leader SIGKILLed every few seconds (and
//! restarted a second later) under a paced load of node registrations from 8
//! clients, each retrying with its idempotency key. Checks: no acknowledged
//! registration lost, no number handed out twice, the history linearizable,
//! all replicas converge to one state digest; reports failover times (kill →
//! first successful write invoked after the kill).
//!
//! `RACKBOOT_LEADER_KILL_SECS` (default 30; the full run is 120),
//! `RACKBOOT_KILL_EVERY_SECS` (default 5), `RACKBOOT_CLIENT_RATE` (writes/s
//! per client, default 40), `RACKBOOT_MIN_WRITE_RATE` (acknowledged writes/s
//! the run must reach, default 0 = report only).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::harness::{Cluster, Opts, Workload, env_secs, exclusive, percentile, run_workload};
use crate::history::{History, OpKind, OpResult, check};

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_loses_nothing() {
    let _one = exclusive();
    let duration = env_secs("RACKBOOT_LEADER_KILL_SECS", 30);
    let every = env_secs("RACKBOOT_KILL_EVERY_SECS", 5);
    let rate = env_f64("RACKBOOT_CLIENT_RATE", 40.0);
    let min_rate = env_f64("RACKBOOT_MIN_WRITE_RATE", 0.0);

    let mut cluster = Cluster::new(3, Opts::default());
    cluster.start_all();
    let ep = cluster.endpoints();
    ep.wait_leader(Duration::from_secs(15))
        .await
        .expect("a leader");
    ep.register_rack(Duration::from_secs(15))
        .await
        .expect("rack");

    let history = Arc::new(History::new());
    let stop = CancellationToken::new();
    let wl = Workload {
        rate,
        ..Workload::default()
    };
    let load = tokio::spawn(run_workload(ep.clone(), wl, history.clone(), stop.clone()));
    let started = Instant::now();
    let mut kills: Vec<(u64, u64)> = Vec::new();
    while started.elapsed() + every <= duration + Duration::from_millis(100) {
        tokio::time::sleep(every.saturating_sub(Duration::from_secs(1))).await;
        let Some(leader) = ep.leader().await else {
            eprintln!("no leader to kill at {:?}", started.elapsed());
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let at = history.now();
        cluster.kill(leader);
        kills.push((at, leader));
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.start(leader);
    }
    tokio::time::sleep(duration.saturating_sub(started.elapsed())).await;
    // Keep the load on until a write invoked after the last kill succeeded
    // (at most 30 s more), so every kill has its failover time.
    if let Some((last, _)) = kills.last().copied() {
        let grace = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < grace
            && !history.ops().iter().any(|o| {
                matches!(o.kind, OpKind::Discover { .. })
                    && matches!(o.result, OpResult::Number(_))
                    && o.invoke >= last
            })
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    stop.cancel();
    let elapsed = started.elapsed();
    let (acked, counters) = load.await.expect("load");

    let ids: Vec<u64> = (1..=3).collect();
    for id in &ids {
        if !cluster.running(*id) {
            cluster.start(*id);
        }
    }
    let converged = ep.converge(&ids, Duration::from_secs(60)).await;
    let final_state = ep.final_state().await;
    let (index, digest) = match converged {
        Ok(c) => c,
        Err(e) => panic!("{e}\n{}", cluster.log_tails(30)),
    };
    let final_state = final_state.expect("final state");
    let ops = history.ops();
    let report = check(&ops, &final_state);

    // Failover: kill → first write invoked after it that succeeded.
    let mut failovers = Vec::new();
    for (at, _) in &kills {
        let first = ops
            .iter()
            .filter(|o| matches!(o.kind, OpKind::Discover { .. }))
            .filter(|o| matches!(o.result, OpResult::Number(_)) && o.invoke >= *at)
            .filter_map(|o| o.complete)
            .min();
        if let Some(done) = first {
            failovers.push(Duration::from_micros(done - at));
        }
    }
    let writes = ops
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Discover { .. }))
        .count();
    let write_rate = acked.len() as f64 / elapsed.as_secs_f64();
    println!(
        "leader kill: {:.0} s, {} kills, {} writes ({} acked, {:.0} acked/s), {} retries; \
         final index {index} digest {}…; failover p50 {:?} p99 {:?} max {:?}; {}",
        elapsed.as_secs_f64(),
        kills.len(),
        writes,
        acked.len(),
        write_rate,
        counters.retries.load(std::sync::atomic::Ordering::Relaxed),
        digest.get(..12).unwrap_or(""),
        percentile(&failovers, 50.0),
        percentile(&failovers, 99.0),
        failovers.iter().max().copied().unwrap_or_default(),
        report.summary()
    );
    if !report.ok() {
        eprintln!("{}", cluster.log_tails(40));
    }
    assert!(report.ok(), "{}", report.summary());
    assert_eq!(
        failovers.len(),
        kills.len(),
        "a write succeeded after every kill"
    );
    assert!(
        write_rate >= min_rate,
        "{write_rate:.0} acknowledged writes/s < {min_rate}"
    );
    cluster.keep_if_asked();
}
