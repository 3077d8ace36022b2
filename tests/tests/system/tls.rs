//! Mutual TLS with `rackboot certs` (loopback, no root): a cluster CA and
//! certificates for a coordinator, an agent (rack r1) and an admin; the
//! coordinator serves gRPC over mutual TLS; the admin's CLI and the agent
//! connect with their certificates (the agent registers its rack); a
//! plaintext client and a client with a certificate of another CA are
//! refused, and a server presenting an agent certificate of the same CA
//! (naming the right address) is refused by the client as a coordinator.

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

    // A server with an agent certificate of the same CA naming the right
    // address cannot pose as a coordinator: the admin's client refuses it.
    rackboot(&[
        "certs",
        "issue",
        "agent",
        "--dir",
        &p(&ca),
        "--rack",
        "r9",
        "--ip",
        "127.0.0.1",
    ])?
    .success()?;
    let impostor_port = free_loopback_port()?;
    let impostor_listen = format!("127.0.0.1:{impostor_port}");
    let mut cmd = std::process::Command::new(daemon::binary(daemon::COORDINATOR)?);
    cmd.args(["--listen", &impostor_listen, "--data"])
        .arg(dir.path().join("impostor"))
        .args(["--tls-ca", &p(&ca.join("ca.pem"))])
        .args(["--tls-cert", &p(&ca.join("agent-r9.pem"))])
        .args(["--tls-key", &p(&ca.join("agent-r9.key"))]);
    let mut impostor = Daemon::spawn("impostor", cmd, &dir.path().join("impostor.log"))?;
    impostor.wait_for_tcp(impostor_listen.parse()?, None, Duration::from_secs(30))?;
    let mut posed = vec![
        "--coordinator".to_string(),
        format!("https://{impostor_listen}"),
        "--tls-ca".to_string(),
        p(&ca.join("ca.pem")),
        "--tls-cert".to_string(),
        p(&ca.join("ops.pem")),
        "--tls-key".to_string(),
        p(&ca.join("ops.key")),
    ];
    posed.extend(["rack".to_string(), "list".to_string()]);
    let refs: Vec<&str> = posed.iter().map(String::as_str).collect();
    let posed = rackboot(&refs)?;
    ensure!(
        !posed.status.success(),
        "a server with an agent certificate must not pass as a coordinator:\n{posed}"
    );
    drop(impostor);

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

/// A certificate signed by the cluster CA in `ca` (as `rackboot certs issue`
/// does) with any subject and validity, written as `NAME.pem`/`NAME.key`.
fn issue_raw(
    ca: &Path,
    name: &str,
    ou: Option<&str>,
    cn: &str,
    from_days: i64,
    to_days: i64,
) -> Result<()> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(ca.join("ca.key"))?)?;
    let mut cap = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "rackboot");
    dn.push(DnType::CommonName, "rackboot CA lab");
    cap.distinguished_name = dn;
    cap.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    cap.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = Issuer::new(cap, ca_key);
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "rackboot");
    if let Some(ou) = ou {
        dn.push(DnType::OrganizationalUnitName, ou);
    }
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(from_days);
    params.not_after = now + time::Duration::days(to_days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    std::fs::write(ca.join(format!("{name}.pem")), cert.pem())?;
    std::fs::write(ca.join(format!("{name}.key")), key.serialize_pem())?;
    Ok(())
}

/// One row of the matrix: who calls what, and what must happen.
struct Case {
    what: &'static str,
    /// `Some(name)`: present `NAME.pem`/`.key` from the given dir; `None`: no client certificate.
    cert: Option<(&'static str, bool)>,
    plaintext: bool,
    method: &'static str,
    body: &'static str,
    /// `OK`, a gRPC code name, or `HANDSHAKE` (refused before any call).
    expect: &'static str,
}

/// Mutual TLS, case by case, with real grpcurl against a real coordinator:
/// who may call what. Every refusal must come with the right status.
#[test]
fn mtls_matrix() -> Result<()> {
    rackboot_tests::require_commands_or_skip!(["grpcurl"], Ok(()));
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca");
    let other = dir.path().join("other");
    rackboot(&["certs", "init", "--dir", &p(&ca), "--cluster", "lab"])?.success()?;
    for args in [
        &["coordinator", "--name", "c1", "--ip", "127.0.0.1"][..],
        &["agent", "--rack", "r1"][..],
        &["agent", "--rack", "r2"][..],
        &["admin", "--name", "ops"][..],
    ] {
        let ca_dir = p(&ca);
        let mut all = vec!["certs", "issue"];
        all.push(args[0]);
        all.extend(["--dir", ca_dir.as_str()]);
        all.extend(&args[1..]);
        let owned: Vec<String> = all.iter().map(ToString::to_string).collect();
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        rackboot(&refs)?.success()?;
    }
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
    issue_raw(&ca, "expired", Some("admin"), "old", -30, -1)?;
    issue_raw(&ca, "future", Some("admin"), "new", 1, 30)?;
    issue_raw(&ca, "norole", None, "nobody", -1, 30)?;
    // Self-signed, claiming to be an admin.
    {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationalUnitName, "admin");
        dn.push(rcgen::DnType::CommonName, "ops");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key)?;
        std::fs::write(ca.join("selfsigned.pem"), cert.pem())?;
        std::fs::write(ca.join("selfsigned.key"), key.serialize_pem())?;
    }

    let port = free_loopback_port()?;
    let listen = format!("127.0.0.1:{port}");
    let metrics_port = free_loopback_port()?;
    let mut cmd = std::process::Command::new(daemon::binary(daemon::COORDINATOR)?);
    cmd.args(["--listen", &listen, "--data"])
        .arg(dir.path().join("coord"))
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .args(["--tls-ca", &p(&ca.join("ca.pem"))])
        .args(["--tls-cert", &p(&ca.join("c1.pem"))])
        .args(["--tls-key", &p(&ca.join("c1.key"))]);
    let mut coord = Daemon::spawn("coordinator", cmd, &dir.path().join("coord.log"))?;
    coord.wait_for_tcp(listen.parse()?, None, Duration::from_secs(30))?;
    coord.wait_for_log("gRPC over mutual TLS", Duration::from_secs(10))?;
    // A client that connects and never starts its TLS handshake: closed
    // after the greeting deadline (10 s), checked after the matrix.
    let mut silent = std::net::TcpStream::connect(&listen)?;
    silent.set_read_timeout(Some(Duration::from_secs(60)))?;
    let silent_since = Instant::now();
    // Blocks until the server closes it; when that was, and how.
    let silent_watch = std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        let read = std::io::Read::read(&mut silent, &mut byte).map_err(|e| e.kind());
        (read, silent_since.elapsed())
    });

    let register_r1 = r#"{"rack":{"name":"r1","subnet":"10.9.0.0/24","serverAddress":"10.9.0.1","nodeBase":"10.9.0.100"},"agentId":"a1"}"#;
    let cases = [
        Case {
            what: "admin certificate, admin RPC",
            cert: Some(("ops", true)),
            plaintext: false,
            method: "rackboot.v1.NodeService/ListNodes",
            body: "{}",
            expect: "OK",
        },
        Case {
            what: "admin certificate, cluster status",
            cert: Some(("ops", true)),
            plaintext: false,
            method: "rackboot.v1.ClusterService/Status",
            body: "{}",
            expect: "OK",
        },
        Case {
            what: "agent certificate, its own rack",
            cert: Some(("agent-r1", true)),
            plaintext: false,
            method: "rackboot.v1.AgentService/Register",
            body: register_r1,
            expect: "OK",
        },
        Case {
            what: "agent certificate, its own rack's cache report",
            cert: Some(("agent-r1", true)),
            plaintext: false,
            method: "rackboot.v1.AgentService/ReportCache",
            body: r#"{"rack":"r1","agentId":"a1"}"#,
            expect: "OK",
        },
        Case {
            what: "agent certificate for another rack",
            cert: Some(("agent-r2", true)),
            plaintext: false,
            method: "rackboot.v1.AgentService/ReportCache",
            body: r#"{"rack":"r1","agentId":"a2"}"#,
            expect: "PermissionDenied",
        },
        Case {
            what: "agent certificate registering another rack",
            cert: Some(("agent-r2", true)),
            plaintext: false,
            method: "rackboot.v1.AgentService/Register",
            body: register_r1,
            expect: "PermissionDenied",
        },
        Case {
            what: "agent certificate numbering a machine in another rack",
            cert: Some(("agent-r2", true)),
            plaintext: false,
            method: "rackboot.v1.AgentService/DiscoverNode",
            body: r#"{"rack":"r1","mac":"52:54:00:00:00:01"}"#,
            expect: "PermissionDenied",
        },
        Case {
            what: "agent certificate fetching a blob its rack does not boot",
            cert: Some(("agent-r1", true)),
            plaintext: false,
            method: "rackboot.v1.AgentService/FetchBlob",
            body: r#"{"blake3":"af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"}"#,
            expect: "PermissionDenied",
        },
        Case {
            what: "agent certificate on an admin RPC",
            cert: Some(("agent-r1", true)),
            plaintext: false,
            method: "rackboot.v1.NodeService/ListNodes",
            body: "{}",
            expect: "PermissionDenied",
        },
        Case {
            what: "agent certificate on an image push",
            cert: Some(("agent-r1", true)),
            plaintext: false,
            method: "rackboot.v1.ImageService/ListImages",
            body: "{}",
            expect: "PermissionDenied",
        },
        Case {
            what: "agent certificate on a Raft peer RPC",
            cert: Some(("agent-r1", true)),
            plaintext: false,
            method: "rackboot.v1.RaftPeer/Send",
            body: "{}",
            expect: "PermissionDenied",
        },
        Case {
            what: "admin certificate on an agent RPC",
            cert: Some(("ops", true)),
            plaintext: false,
            method: "rackboot.v1.AgentService/Register",
            body: register_r1,
            expect: "PermissionDenied",
        },
        Case {
            what: "admin certificate on a blob peer RPC",
            cert: Some(("ops", true)),
            plaintext: false,
            method: "rackboot.v1.BlobPeer/Fetch",
            body: r#"{"blake3":"af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"}"#,
            expect: "PermissionDenied",
        },
        Case {
            what: "coordinator certificate on an admin RPC",
            cert: Some(("c1", true)),
            plaintext: false,
            method: "rackboot.v1.NodeService/ListNodes",
            body: "{}",
            expect: "PermissionDenied",
        },
        Case {
            what: "CA-signed certificate without a role",
            cert: Some(("norole", true)),
            plaintext: false,
            method: "rackboot.v1.NodeService/ListNodes",
            body: "{}",
            expect: "Unauthenticated",
        },
        Case {
            what: "no client certificate",
            cert: None,
            plaintext: false,
            method: "rackboot.v1.NodeService/ListNodes",
            body: "{}",
            expect: "HANDSHAKE",
        },
        Case {
            what: "self-signed certificate",
            cert: Some(("selfsigned", true)),
            plaintext: false,
            method: "rackboot.v1.NodeService/ListNodes",
            body: "{}",
            expect: "HANDSHAKE",
        },
        Case {
            what: "certificate of another CA",
            cert: Some(("mallory", false)),
            plaintext: false,
            method: "rackboot.v1.NodeService/ListNodes",
            body: "{}",
            expect: "HANDSHAKE",
        },
        Case {
            what: "expired certificate",
            cert: Some(("expired", true)),
            plaintext: false,
            method: "rackboot.v1.NodeService/ListNodes",
            body: "{}",
            expect: "HANDSHAKE",
        },
        Case {
            what: "certificate not yet valid",
            cert: Some(("future", true)),
            plaintext: false,
            method: "rackboot.v1.NodeService/ListNodes",
            body: "{}",
            expect: "HANDSHAKE",
        },
        Case {
            what: "plaintext to the TLS port",
            cert: None,
            plaintext: true,
            method: "rackboot.v1.NodeService/ListNodes",
            body: "{}",
            expect: "HANDSHAKE",
        },
    ];
    let mut failures = Vec::new();
    let mut table = Vec::new();
    for c in &cases {
        let mut cmd = std::process::Command::new("grpcurl");
        // Method descriptors come from the proto files, so a refused
        // reflection call never hides the status under test.
        let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
        cmd.args(["-import-path"]).arg(&proto_dir);
        for f in ["admin.proto", "agent.proto", "raft.proto"] {
            cmd.args(["-proto", &format!("rackboot/v1/{f}")]);
        }
        cmd.args(["-max-time", "10"]);
        if c.plaintext {
            cmd.arg("-plaintext");
        } else {
            cmd.args(["-cacert", &p(&ca.join("ca.pem"))]);
        }
        if let Some((name, ours)) = c.cert {
            let d = if ours { &ca } else { &other };
            cmd.args(["-cert", &p(&d.join(format!("{name}.pem")))]);
            cmd.args(["-key", &p(&d.join(format!("{name}.key")))]);
        }
        cmd.args(["-d", c.body, &listen, c.method]);
        let out = run_with_timeout(cmd, Duration::from_secs(20))?;
        let text = out.combined();
        let got = if out.status.success() {
            "OK".to_string()
        } else if let Some(code) = text.lines().find_map(|l| l.trim().strip_prefix("Code: ")) {
            code.trim().to_string()
        } else {
            "HANDSHAKE".to_string()
        };
        table.push(format!(
            "| {} | `{}` | {} | {got} |",
            c.what, c.method, c.expect
        ));
        if got != c.expect {
            failures.push(format!(
                "{}: expected {}, got {got}:\n{text}",
                c.what, c.expect
            ));
        }
    }
    println!(
        "| case | call | expected | got |\n|---|---|---|---|\n{}",
        table.join("\n")
    );
    // The silent connection: closed by the server (end of stream) after
    // the greeting deadline, not before, and counted as silent.
    let (read, closed_after) = silent_watch
        .join()
        .map_err(|_| anyhow::anyhow!("the silent connection's reader panicked"))?;
    ensure!(
        matches!(read, Ok(0) | Err(std::io::ErrorKind::ConnectionReset)),
        "a silent connection to the TLS port should be closed by the server, read gave {read:?} after {closed_after:?}"
    );
    ensure!(
        closed_after >= Duration::from_secs(10) && closed_after < Duration::from_secs(25),
        "the silent TLS connection was closed after {closed_after:?}, expected at the 10 s greeting deadline"
    );
    let metrics = daemon::loopback_metrics(metrics_port)?;
    let silent_line = r#"rackboot_coordinator_grpc_connections_refused_total{reason="silent"} 1"#;
    ensure!(
        metrics.lines().any(|l| l.trim() == silent_line),
        "the metric should count 1 silent connection:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("connections_refused"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!(
        "a silent connection to the TLS port was closed after {:.1} s and counted as silent",
        closed_after.as_secs_f64()
    );
    ensure!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        coord.logs()
    );
    coord.ensure_running()
}
