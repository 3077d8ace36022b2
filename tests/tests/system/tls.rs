//! Mutual TLS with `rackboot certs` (loopback, no root): a cluster CA and
//! certificates for a coordinator, an agent (rack r1) and an admin; the
//! coordinator serves gRPC over mutual TLS; the admin's CLI and the agent
//! connect with their certificates (the agent registers its rack); a
//! plaintext client and a client with a certificate of another CA are
//! refused.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rackboot_tests::daemon::{self, CliOutput, Daemon, free_loopback_port, run_with_timeout};

const TIMEOUT: Duration = Duration::from_secs(60);

fn rackboot(args: &[&str]) -> Result<CliOutput> {
    let mut cmd = std::process::Command::new(daemon::binary(daemon::CLI)?);
    cmd.args(args);
    run_with_timeout(cmd, TIMEOUT)
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn mutual_tls_with_rackboot_certs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca");
    let other = dir.path().join("other");
    rackboot(&["certs", "init", "--dir", &p(&ca), "--cluster", "lab"])?.success()?;
    rackboot(&[
        "certs",
        "issue",
        "coordinator",
        "--dir",
        &p(&ca),
        "--name",
        "c1",
        "--ip",
        "127.0.0.1",
    ])?
    .success()?;
    rackboot(&["certs", "issue", "agent", "--dir", &p(&ca), "--rack", "r1"])?.success()?;
    rackboot(&["certs", "issue", "admin", "--dir", &p(&ca), "--name", "ops"])?.success()?;
    rackboot(&["certs", "init", "--dir", &p(&other)])?.success()?;
    rackboot(&[
        "certs",
        "issue",
        "admin",
        "--dir",
        &p(&other),
        "--name",
        "mallory",
    ])?
    .success()?;
    let key_mode = std::fs::metadata(ca.join("ca.key"))?.permissions();
    ensure!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o077 == 0,
        "the CA key must not be readable by others"
    );
    // Issuing over an existing file is refused.
    let again = rackboot(&["certs", "issue", "admin", "--dir", &p(&ca), "--name", "ops"])?;
    ensure!(
        !again.status.success(),
        "an existing certificate must not be overwritten:\n{again}"
    );

    let port = free_loopback_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = std::process::Command::new(daemon::binary(daemon::COORDINATOR)?);
    cmd.args(["--listen", &listen, "--data"])
        .arg(dir.path().join("coord"))
        .args(["--tls-ca", &p(&ca.join("ca.pem"))])
        .args(["--tls-cert", &p(&ca.join("c1.pem"))])
        .args(["--tls-key", &p(&ca.join("c1.key"))]);
    let mut coord = Daemon::spawn("coordinator", cmd, &dir.path().join("coord.log"))?;
    coord.wait_for_tcp(listen.parse()?, None, Duration::from_secs(30))?;
    coord.wait_for_log("gRPC over mutual TLS", Duration::from_secs(10))?;
    let url = format!("https://{listen}");
    let admin = |cert: &str, dirp: &Path, args: &[&str]| -> Result<CliOutput> {
        let mut all = vec![
            "--coordinator".to_string(),
            url.clone(),
            "--tls-ca".to_string(),
            p(&ca.join("ca.pem")),
            "--tls-cert".to_string(),
            p(&dirp.join(format!("{cert}.pem"))),
            "--tls-key".to_string(),
            p(&dirp.join(format!("{cert}.key"))),
        ];
        all.extend(args.iter().map(ToString::to_string));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        rackboot(&refs)
    };
    let ok = admin("ops", &ca, &["cluster", "status"])?;
    ensure!(
        ok.status.success(),
        "the admin certificate should work:\n{ok}"
    );

    let plain = rackboot(&["--coordinator", &format!("http://{listen}"), "rack", "list"])?;
    ensure!(
        !plain.status.success(),
        "a plaintext client must be refused:\n{plain}"
    );
    let foreign = admin("mallory", &other, &["rack", "list"])?;
    ensure!(
        !foreign.status.success(),
        "a certificate of another CA must be refused:\n{foreign}"
    );

    // The agent registers its rack over mutual TLS.
    let mut cmd = std::process::Command::new(daemon::binary(daemon::AGENT)?);
    cmd.args(["--rack", "r1", "--coordinator", &url, "--data"])
        .arg(dir.path().join("agent"))
        .args(["--dhcp-port", &free_loopback_port()?.to_string()])
        .args(["--tftp-port", &free_loopback_port()?.to_string()])
        .args(["--no-http", "--no-syslog"])
        .args(["--tls-ca", &p(&ca.join("ca.pem"))])
        .args(["--tls-cert", &p(&ca.join("agent-r1.pem"))])
        .args(["--tls-key", &p(&ca.join("agent-r1.key"))]);
    let mut agent = Daemon::spawn("agent", cmd, &dir.path().join("agent.log"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        agent.ensure_running()?;
        let racks = admin("ops", &ca, &["rack", "list"])?.success()?;
        if racks.stdout.lines().skip(1).any(|l| l.starts_with("r1 ")) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the agent did not register over TLS:\n{racks}\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    agent
        .wait_for_log(
            "coordinator connections over mutual TLS",
            Duration::from_secs(5),
        )
        .context("the agent should say it uses TLS")?;
    coord.ensure_running()
}
