//! Crash at every persistence step: a follower F runs with a fail point
//! (`RACKBOOT_FAILPOINT`, see `raft::faults`) that aborts the process at one
//! site — before/after appending entries, before a HardState-only write,
//! before/after saving a snapshot, before installing one, before/after
//! applying an entry.
//!
//! The scenario is built so that a replica that lies about durability loses
//! acknowledged writes: the other follower G is frozen (SIGSTOP), so every
//! write acknowledged meanwhile is on the leader L and F only. F crashes at
//! its fail point; then L is SIGKILLed, G resumed and F restarted, so the
//! next leader comes from {F, G} and whatever F did not really persist is
//! gone. A correct replica only acknowledged what was durable, so nothing
//! acknowledged is lost; afterwards L restarts and all three must converge
//! to one state digest. The `mutant-no-fsync` and
//! `mutant-send-before-persist` builds fail here (scripts/mutants.sh).
//!
//! `snapshot-install` is reached differently: F is down while the leader
//! compacts its log, restarts armed and crashes installing the snapshot it is
//! sent, then restarts again and must catch up to the same digest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::harness::{Cluster, Opts, Workload, exclusive, run_workload};
use crate::history::{History, check};

const IDS: [u64; 3] = [1, 2, 3];

async fn wait_exit(cluster: &mut Cluster, id: u64, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = cluster.exited(id) {
            return Some(format!("{status}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn arm_env(site: &str, arm: Option<&std::path::Path>) -> Vec<(String, String)> {
    let mut env = vec![
        ("RACKBOOT_FAILPOINT".to_string(), site.to_string()),
        ("RACKBOOT_FAILPOINT_DELAY_MS".to_string(), "300".to_string()),
    ];
    if let Some(a) = arm {
        env.push((
            "RACKBOOT_FAILPOINT_ARM".to_string(),
            a.display().to_string(),
        ));
    }
    env
}

async fn crash_case(site: &str) {
    let _one = exclusive();
    let mut cluster = Cluster::new(
        3,
        Opts {
            snapshot_every: 100,
            ..Opts::default()
        },
    );
    cluster.start_all();
    let ep = cluster.endpoints();
    let leader = ep
        .wait_leader(Duration::from_secs(15))
        .await
        .expect("a leader");
    ep.register_rack(Duration::from_secs(15))
        .await
        .expect("rack");
    let followers: Vec<u64> = IDS.iter().copied().filter(|i| *i != leader).collect();
    let (f, g) = (followers[0], followers[1]);
    let arm = cluster.dir.join("arm");

    let history = Arc::new(History::new());
    let stop = CancellationToken::new();
    let wl = Workload {
        clients: 4,
        rate: 40.0,
        read_every: 8,
        dup_every: 0,
        op_timeout: Duration::from_secs(20),
        attempt_timeout: Duration::from_millis(1000),
        ..Workload::default()
    };

    let crashed = if site == "snapshot-install" {
        cluster.kill(f);
        let load = tokio::spawn(run_workload(
            ep.clone(),
            Workload {
                targets: vec![leader, g],
                ..wl.clone()
            },
            history.clone(),
            stop.clone(),
        ));
        // Enough writes for the leader to compact past F.
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.procs.get_mut(&f).unwrap().env = arm_env(site, None);
        cluster.start(f);
        let crashed = wait_exit(&mut cluster, f, Duration::from_secs(30)).await;
        cluster.procs.get_mut(&f).unwrap().env.clear();
        cluster.start(f);
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.cancel();
        load.await.expect("load");
        crashed
    } else {
        // F restarts with the fail point configured but not yet armed.
        cluster.kill(f);
        cluster.procs.get_mut(&f).unwrap().env = arm_env(site, Some(&arm));
        cluster.start(f);
        if let Err(e) = ep.converge(&IDS, Duration::from_secs(20)).await {
            panic!("{e}\n{}", cluster.log_tails(20));
        }
        // Every client talks to L: its writes are acknowledged by L itself
        // (a write forwarded through F would only be answered by F).
        let wl = Workload {
            prefer: Some(leader),
            ..wl
        };
        let load = tokio::spawn(run_workload(ep.clone(), wl, history.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        // From now on, acknowledged writes live on L and F only.
        cluster.pause(g);
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(&arm, b"armed").expect("arm");
        let crashed = wait_exit(&mut cluster, f, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.kill(leader);
        cluster.resume(g);
        cluster.procs.get_mut(&f).unwrap().env.clear();
        cluster.start(f);
        // F and G elect a leader and go on; then L comes back.
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.start(leader);
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.cancel();
        load.await.expect("load");
        crashed
    };

    let Some(status) = crashed else {
        panic!(
            "fail point {site} was never reached on replica {f}\n{}",
            cluster.log_tails(20)
        );
    };
    for id in IDS {
        if !cluster.running(id) {
            cluster.start(id);
        }
    }
    let converged = ep.converge(&IDS, Duration::from_secs(30)).await;
    let final_state = ep.final_state().await.expect("final state");
    let report = check(&history.ops(), &final_state);
    println!(
        "crash at {site} on replica {f} ({status}): converged {:?}; {}",
        converged
            .as_ref()
            .map(|(i, d)| format!("index {i} digest {}…", d.get(..12).unwrap_or(""))),
        report.summary()
    );
    if converged.is_err() || !report.ok() {
        eprintln!("{}", cluster.log_tails(30));
    }
    assert!(report.ok(), "crash at {site}: {}", report.summary());
    assert!(report.acked > 0, "no write was acknowledged");
    converged.expect("identical state digests after the crash");
    cluster.keep_if_asked();
}

macro_rules! crash_tests {
    ($($name:ident => $site:literal),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                crash_case($site).await;
            }
        )*
    };
}

crash_tests! {
    crash_before_append => "append",
    crash_after_append => "append-done",
    crash_before_hard_state => "hard-state",
    crash_before_snapshot_save => "snapshot-save",
    crash_after_snapshot_save => "snapshot-saved",
    crash_installing_snapshot => "snapshot-install",
    crash_before_apply => "apply",
    crash_after_apply => "apply-done",
}
