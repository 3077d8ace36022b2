//! Membership at runtime: a fourth replica started with `--join` (empty
//! storage, no voters) is added through `ClusterService.AddMember` after the
//! leader compacted its log, so it must catch up by snapshot; then the
//! leader itself is removed (it hands leadership over and points the caller
//! at the new leader). Writes go on throughout; nothing acknowledged is lost
//! and the remaining replicas converge to one digest.

use std::sync::Arc;
use std::time::Duration;

use rackboot_proto::v1 as pb;
use tokio_util::sync::CancellationToken;

use crate::harness::{Cluster, Endpoints, Opts, Workload, exclusive, run_workload};
use crate::history::{History, check};

fn leader_hint(s: &tonic::Status) -> Option<String> {
    s.metadata()
        .get("rackboot-leader")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn cluster_client(
    ep: &Endpoints,
    id: u64,
) -> pb::cluster_service_client::ClusterServiceClient<tonic::transport::Channel> {
    pb::cluster_service_client::ClusterServiceClient::new(ep.channel(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_by_snapshot_then_remove_the_leader() {
    let _one = exclusive();
    let mut cluster = Cluster::new(
        3,
        Opts {
            snapshot_every: 100,
            ..Opts::default()
        },
    );
    // Replica 4 starts later, joining.
    let addr4 = cluster.add_joiner(4);
    for id in 1..=3 {
        cluster.start(id);
    }
    let ep = cluster.endpoints();
    let leader = ep
        .wait_leader(Duration::from_secs(15))
        .await
        .expect("leader");
    ep.register_rack(Duration::from_secs(15))
        .await
        .expect("rack");

    let history = Arc::new(History::new());
    let stop = CancellationToken::new();
    let wl = Workload {
        clients: 4,
        rate: 40.0,
        targets: vec![1, 2, 3],
        ..Workload::default()
    };
    let load = tokio::spawn(run_workload(ep.clone(), wl, history.clone(), stop.clone()));
    // Well past a snapshot: the joiner cannot be sent the log from index 1.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.start(4);

    // Asked of a follower: UNAVAILABLE naming the leader.
    let follower = (1..=3).find(|i| *i != leader).expect("a follower");
    let add = pb::AddMemberRequest {
        id: 4,
        address: addr4.to_string(),
        learner_only: false,
        catch_up_timeout_ms: 20_000,
    };
    let err = cluster_client(&ep, follower)
        .await
        .add_member(add.clone())
        .await
        .expect_err("a follower refuses membership changes");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let hint = leader_hint(&err).expect("leader hint");
    let leader_idx = ep.index_of(&hint).expect("hint names a replica");
    let status = cluster_client(&ep, ep.list[leader_idx].0)
        .await
        .add_member(add)
        .await
        .expect("add member")
        .into_inner();
    let m4 = status.members.iter().find(|m| m.id == 4).expect("member 4");
    assert!(m4.voter, "promoted to voter once caught up: {status:?}");
    let log4 = std::fs::read_to_string(cluster.dir.join("r4.log")).unwrap_or_default();
    assert!(
        log4.contains("snapshot installed"),
        "the joiner caught up by snapshot"
    );
    // Writes go on: replica 4 keeps up with the leader's commit index.
    let target = ep
        .status(ep.list[leader_idx].0)
        .await
        .expect("leader status")
        .commit_index;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let applied4 = ep.status(4).await.map(|s| s.applied_index).unwrap_or(0);
        if applied4 >= target {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica 4 stuck at {applied4} < {target}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Remove the leader: it hands over, the caller follows the hint.
    let leader = ep.leader().await.expect("leader");
    let err = cluster_client(&ep, leader)
        .await
        .remove_member(pb::RemoveMemberRequest { id: leader })
        .await
        .expect_err("the leader hands over first");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    let hint = leader_hint(&err).expect("new leader hint");
    let new_leader = ep.list[ep.index_of(&hint).expect("replica")].0;
    assert_ne!(new_leader, leader);
    let status = cluster_client(&ep, new_leader)
        .await
        .remove_member(pb::RemoveMemberRequest { id: leader })
        .await
        .expect("remove member")
        .into_inner();
    assert!(status.members.iter().all(|m| m.id != leader));
    assert_eq!(status.members.len(), 3);

    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    load.await.expect("load");
    cluster.kill(leader);
    let rest: Vec<u64> = (1..=4).filter(|i| *i != leader).collect();
    let converged = ep.converge(&rest, Duration::from_secs(30)).await;
    let final_state = ep.final_state().await.expect("final state");
    let report = check(&history.ops(), &final_state);
    println!(
        "membership: joined 4 by snapshot, removed leader {leader}; {}",
        report.summary()
    );
    assert!(report.ok(), "{}", report.summary());
    converged.expect("converged after the removal");
    cluster.keep_if_asked();
}
