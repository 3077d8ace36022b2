//! The coordinator's gRPC API is usable with stock tools: `grpcurl` lists
//! its services through server reflection and calls them.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use rackboot_tests::daemon::{LoopbackCoordinator, run_with_timeout};
use rackboot_tests::require_commands_or_skip;

const SERVICES: &[&str] = &[
    "rackboot.v1.NodeService",
    "rackboot.v1.RackService",
    "rackboot.v1.ImageService",
    "rackboot.v1.AssignmentService",
    "rackboot.v1.AgentService",
    "rackboot.v1.ClusterService",
    "rackboot.v1.MetaService",
    "grpc.health.v1.Health",
];

fn grpcurl(args: &[&str]) -> Result<rackboot_tests::daemon::CliOutput> {
    let mut cmd = std::process::Command::new("grpcurl");
    cmd.args(args);
    run_with_timeout(cmd, Duration::from_secs(30))
}

/// `grpcurl list` shows every rackboot service and the health service;
/// Health/Check says SERVING; ClusterService/Status names a leader.
#[test]
fn grpcurl_lists_services_via_reflection() -> Result<()> {
    require_commands_or_skip!(["grpcurl"], Ok(()));
    let coord = LoopbackCoordinator::start()?;
    let addr = coord.addr.to_string();
    let logs = || coord.daemon.report();

    let list = grpcurl(&["-plaintext", &addr, "list"])?.success()?;
    let listed: Vec<&str> = list.stdout.lines().map(str::trim).collect();
    for service in SERVICES {
        ensure!(
            listed.contains(service),
            "`grpcurl list` does not list {service}:\n{list}\n{}",
            logs()
        );
    }

    let health = grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"])?.success()?;
    ensure!(
        health.stdout.contains("\"SERVING\""),
        "health check is not SERVING:\n{health}\n{}",
        logs()
    );

    // A single replica elects itself quickly; give it a few seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = grpcurl(&[
            "-plaintext",
            "-d",
            "{}",
            &addr,
            "rackboot.v1.ClusterService/Status",
        ])?
        .success()?;
        let has_leader = status.stdout.contains("\"leaderId\"")
            && !status.stdout.contains("\"leaderId\": \"0\"")
            && status.stdout.contains("\"leader\"");
        if has_leader {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "ClusterService/Status shows no leader after 10 s:\n{status}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
