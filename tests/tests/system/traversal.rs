//! Path traversal, in every spelling we know, over TFTP and HTTP (loopback,
//! no root): a generated corpus of ≥ 200 encodings of "a file outside what
//! the agent serves" (`..` plain, percent-encoded, double-encoded, overlong
//! UTF-8, fullwidth dots, backslashes, drive letters, NUL and control bytes,
//! leading slashes, deep runs, over-long names, a symlink out of the static
//! root), each sent as a raw RRQ datagram and as a raw HTTP request line, so
//! no client library normalizes it first. Every one must be refused (TFTP
//! ERROR 1, 2 or 4, never DATA or OACK; HTTP 4xx), the secret beside the static root
//! never appears in any answer, and the agent keeps serving.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rackboot_tests::daemon::{self, Daemon, LoopbackCoordinator, free_loopback_port};

const SECRET: &[u8] = b"TOP-SECRET-NEVER-SERVED";

/// The corpus: (name bytes, description). Deterministic, ≥ 200 distinct.
fn corpus() -> Vec<Vec<u8>> {
    let ups: [&str; 14] = [
        "..",
        "%2e%2e",
        "%2E%2E",
        ".%2e",
        "%2e.",
        "%252e%252e",
        "%c0%ae%c0%ae",
        "%e0%80%ae%e0%80%ae",
        "\u{ff0e}\u{ff0e}",
        "..%00",
        "..\u{0}",
        "...",
        "..;",
        "..%20",
    ];
    let seps: [&str; 8] = ["/", "\\", "%2f", "%2F", "%5c", "%255c", "//", "/./"];
    let targets = ["secret.txt", "etc/passwd", "escape/secret.txt"];
    let mut out: BTreeSet<Vec<u8>> = BTreeSet::new();
    for up in ups {
        for sep in seps {
            for (depth, target) in [(1usize, targets[0]), (6, targets[1])] {
                let mut s = String::new();
                for _ in 0..depth {
                    s.push_str(up);
                    s.push_str(sep);
                }
                s.push_str(target);
                out.insert(s.clone().into_bytes());
                out.insert(format!("/{s}").into_bytes());
            }
        }
    }
    for prefix in [
        "grub/",
        "/grub/",
        "./",
        "/./",
        "boot-info/",
        "blobs/",
        "ipxe/",
    ] {
        for up in ["..", "%2e%2e", "..\\"] {
            out.insert(format!("{prefix}{up}/secret.txt").into_bytes());
            out.insert(format!("{prefix}{up}/{up}/etc/passwd").into_bytes());
        }
    }
    for s in [
        "/etc/passwd",
        "//etc/passwd",
        "C:\\secret.txt",
        "C:/secret.txt",
        "c:secret.txt",
        "\\\\?\\C:\\secret.txt",
        "\\\\server\\share\\secret.txt",
        "file:///etc/passwd",
        "escape",
        "/escape",
        "escape/",
        "escape/../secret.txt",
        "one/../../secret.txt",
        "one\u{0}../secret.txt",
        "one\n../secret.txt",
        "one\r\n../secret.txt",
        "one\t/../secret.txt",
        "\u{7f}../secret.txt",
        "..",
        "../",
        "/..",
        "/../",
        ".",
        "%",
        "%%32%65%%32%65/secret.txt",
        "%u002e%u002e/secret.txt",
        "%252E%252E%252Fsecret.txt",
    ] {
        out.insert(s.as_bytes().to_vec());
    }
    // Over-long names.
    out.insert("../".repeat(120).into_bytes());
    out.insert(format!("{}secret.txt", "a/".repeat(200)).into_bytes());
    out.insert(vec![b'x'; 600]);
    // Raw bytes that are not UTF-8.
    out.insert(b"\xc0\xae\xc0\xae/secret.txt".to_vec());
    out.insert(b"\xff\xfe../secret.txt".to_vec());
    out.into_iter().collect()
}

/// One RRQ as a raw datagram; the first answer's opcode and error code.
fn tftp_try(server: SocketAddr, name: &[u8]) -> Result<(u16, u16, Vec<u8>)> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut pkt = vec![0, 1];
    pkt.extend_from_slice(name);
    pkt.push(0);
    pkt.extend_from_slice(b"octet\0");
    sock.send_to(&pkt, server)?;
    let mut buf = [0u8; 2048];
    let (n, _) = sock
        .recv_from(&mut buf)
        .with_context(|| format!("no TFTP answer to {:?}", String::from_utf8_lossy(name)))?;
    let reply = buf.get(..n).unwrap_or_default().to_vec();
    let op = u16::from_be_bytes([
        reply.first().copied().unwrap_or(0),
        reply.get(1).copied().unwrap_or(0),
    ]);
    let code = u16::from_be_bytes([
        reply.get(2).copied().unwrap_or(0),
        reply.get(3).copied().unwrap_or(0),
    ]);
    Ok((op, code, reply))
}

/// One raw HTTP request; the status and the whole answer.
fn http_try(server: SocketAddr, name: &[u8]) -> Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = b"GET ".to_vec();
    if name.first() != Some(&b'/') {
        req.push(b'/');
    }
    req.extend_from_slice(name);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
    s.write_all(&req)?;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let status = std::str::from_utf8(answer.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|t| t.parse().ok())
        // No status line at all: the server closed on a request it could
        // not parse, which refuses it too.
        .unwrap_or(400);
    Ok((status, answer))
}

#[test]
fn traversal_corpus_over_tftp_and_http() -> Result<()> {
    let coord = LoopbackCoordinator::start()?;
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("static");
    std::fs::create_dir_all(root.join("grub"))?;
    std::fs::write(root.join("one"), b"served\n")?;
    std::fs::write(root.join("grub/grub.cfg"), b"set timeout=1\n")?;
    std::fs::write(dir.path().join("secret.txt"), SECRET)?;
    std::os::unix::fs::symlink("..", root.join("escape"))?;
    let tftp_port = free_loopback_port()?;
    let http_port = free_loopback_port()?;
    let mut cmd = std::process::Command::new(daemon::binary(daemon::AGENT)?);
    cmd.args(["--plaintext", "--rack", "r1", "--coordinator", &coord.url()])
        .arg("--data")
        .arg(dir.path().join("agent"))
        .arg("--static-root")
        .arg(&root)
        .args(["--dhcp-port", &free_loopback_port()?.to_string()])
        .args(["--tftp-port", &tftp_port.to_string()])
        .args(["--http-port", &http_port.to_string()])
        .arg("--no-syslog");
    let mut agent = Daemon::spawn("agent", cmd, &dir.path().join("agent.log"))?;
    let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
    let tftp: SocketAddr = ([127, 0, 0, 1], tftp_port).into();
    agent.wait_for_tcp(http, None, Duration::from_secs(30))?;

    // The control: a file inside the root is served by both.
    let (op, _, reply) = tftp_try(tftp, b"one")?;
    ensure!(
        op == 3 && reply.ends_with(b"served\n"),
        "TFTP control failed: {reply:?}\n{}",
        agent.logs()
    );
    let (status, answer) = http_try(http, b"/grub/grub.cfg")?;
    ensure!(
        status == 200 && answer.ends_with(b"set timeout=1\n"),
        "HTTP control failed: {status}\n{}",
        agent.logs()
    );

    let corpus = corpus();
    ensure!(corpus.len() >= 200, "corpus has {} encodings", corpus.len());
    let mut wrong = Vec::new();
    let (mut tftp_codes, mut http_codes) = (
        std::collections::BTreeMap::<u16, usize>::new(),
        std::collections::BTreeMap::<u16, usize>::new(),
    );
    for name in &corpus {
        let shown = String::from_utf8_lossy(name).escape_debug().to_string();
        let (op, code, reply) = tftp_try(tftp, name)?;
        // 1 not found (a harmless name that maps to nothing), 2 access
        // violation, 4 illegal operation (the datagram is not a valid RRQ:
        // an embedded NUL leaves no valid mode, non-ASCII names).
        if op != 5 || !matches!(code, 1 | 2 | 4) {
            wrong.push(format!("TFTP {shown:?}: opcode {op} code {code}"));
        } else {
            *tftp_codes.entry(code).or_default() += 1;
        }
        if reply.windows(SECRET.len()).any(|w| w == SECRET) {
            wrong.push(format!("TFTP {shown:?}: the secret was served"));
        }
        // HTTP request lines carry no NUL, CR or LF: those only go over TFTP.
        if name.iter().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
            continue;
        }
        let (status, answer) = http_try(http, name)?;
        if !(400..500).contains(&status) {
            wrong.push(format!("HTTP {shown:?}: status {status}"));
        } else {
            *http_codes.entry(status).or_default() += 1;
        }
        if answer.windows(SECRET.len()).any(|w| w == SECRET) {
            wrong.push(format!("HTTP {shown:?}: the secret was served"));
        }
    }
    agent.ensure_running()?;
    let (op, _, _) = tftp_try(tftp, b"one")?;
    ensure!(op == 3, "the agent stopped serving after the corpus");
    println!(
        "traversal corpus: {} encodings; TFTP refusals by error code {tftp_codes:?}; HTTP refusals by status {http_codes:?}",
        corpus.len()
    );
    ensure!(
        wrong.is_empty(),
        "{} encodings not refused:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    Ok(())
}
