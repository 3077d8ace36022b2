//! The fault harness (root): a 3-replica coordinator in its own
//! network namespace, two racks — each an agent namespace linked to the
//! coordinators by a management veth, and a client namespace where
//! `rackboot storm` boots the rack's known nodes (DHCP, then TFTP of a
//! 1 MiB boot file, as PXE ROMs do) — and an administrator registering
//! machines the whole time. Scenarios, each during storms in both racks:
//!
//! 1. the coordinator leader is SIGKILLed mid-storm (restarted after);
//! 2. every coordinator is unreachable for the whole storm (both
//!    management links cut);
//! 3. rack A's agent is restarted mid-storm (SIGTERM, drain, start);
//! 4. the leader is SIGSTOPped for 10× the election timeout, then resumed;
//! 5. 20 % random loss (nftables) on both management links.
//!
//! Each scenario must end with every known node of both racks booted
//! (0 failed boots), and at the end every registration the administrator
//! saw acknowledged is present with the number it was given, and no number
//! is held twice. `RACKBOOT_FAULT_CLIENTS` sets the clients per rack
//! (default 100).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rackboot_tests::daemon::{self, Daemon, run_with_timeout};
use rackboot_tests::netns::{Netns, veth_pair};
use rackboot_tests::tftplab::{RACK, SERVER_IP, TftpLab, blake3_hex, random_bytes};
use rackboot_tests::{require_commands_or_skip, require_root_or_skip};

const PORT: u16 = 7000;
/// Election timeout of the replicas: 10 ticks of 50 ms (the defaults).
const ELECTION: Duration = Duration::from_millis(500);

/// Three replicas in one namespace, on 10.250.0.1-3.
struct Core {
    ns: Netns,
    replicas: Vec<Option<Daemon>>,
    dir: tempfile::TempDir,
}

impl Core {
    fn addr(i: usize) -> String {
        format!("10.250.0.{}:{PORT}", i + 1)
    }

    fn urls() -> String {
        (0..3)
            .map(|i| format!("http://{}", Core::addr(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn new() -> Result<Core> {
        let ns = Netns::create("rbfc")?;
        ns.link_up("lo")?;
        for i in 0..3 {
            ns.add_addr("lo", &format!("10.250.0.{}/32", i + 1))?;
        }
        let mut core = Core {
            ns,
            replicas: vec![None, None, None],
            dir: tempfile::Builder::new()
                .prefix("rackboot-faults-")
                .tempdir()?,
        };
        for i in 0..3 {
            core.start(i)?;
        }
        Ok(core)
    }

    fn start(&mut self, i: usize) -> Result<()> {
        let mut cmd = self.ns.exec(daemon::binary(daemon::COORDINATOR)?);
        cmd.args([
            "--plaintext",
            "--id",
            &(i + 1).to_string(),
            "--listen",
            &Core::addr(i),
            "--data",
        ])
        .arg(self.dir.path().join(format!("c{}", i + 1)));
        for p in 0..3 {
            cmd.args(["--peer", &format!("{}={}", p + 1, Core::addr(p))]);
        }
        let log = self.dir.path().join(format!("c{}.log", i + 1));
        let d = Daemon::spawn(&format!("coordinator {}", i + 1), cmd, &log)?;
        self.replicas[i] = Some(d);
        let addr = Core::addr(i).parse()?;
        if let Some(d) = self.replicas[i].as_mut() {
            d.wait_for_tcp(addr, Some(&self.ns), Duration::from_secs(30))?;
        }
        Ok(())
    }

    fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(mut d) = self.replicas[i].take() {
            d.kill()?;
        }
        Ok(())
    }

    fn signal(&self, i: usize, sig: &str) -> Result<()> {
        let d = self.replicas[i].as_ref().context("replica not running")?;
        let status = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &d.pid().to_string()])
            .status()?;
        ensure!(status.success(), "kill -{sig} failed");
        Ok(())
    }

    fn cli(&self, args: &[&str]) -> Result<daemon::CliOutput> {
        let urls = Core::urls();
        let mut all = vec!["--coordinator", urls.as_str()];
        all.extend_from_slice(args);
        daemon::cli(Some(&self.ns), &all, Duration::from_secs(60))
    }

    /// The replica (0-based) that says it leads, waiting up to 20 s.
    fn leader(&self) -> Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(out) = self.cli(&["cluster", "status"]) {
                for line in out.stdout.lines() {
                    let cols: Vec<&str> = line.split_whitespace().collect();
                    if cols.get(2) == Some(&"leader")
                        && let Some(id) = cols.first().and_then(|c| c.parse::<usize>().ok())
                    {
                        return Ok(id - 1);
                    }
                }
            }
            ensure!(
                Instant::now() < deadline,
                "no leader within 20 s:\n{}",
                self.report()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn report(&self) -> String {
        self.replicas
            .iter()
            .flatten()
            .map(|d| {
                let logs = d.logs();
                let tail: Vec<&str> = logs.lines().rev().take(15).collect();
                format!(
                    "== {} ==\n{}",
                    d.name(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A rack: its lab, linked to the core by `rbf-c<k>` / `rbf-a<k>`.
struct Rack {
    lab: TftpLab,
    link: String,
    k: u8,
}

impl Rack {
    fn new(core: &Core, k: u8) -> Result<Rack> {
        let mut lab = TftpLab::new(&format!("rbf{k}"))?;
        let link = format!("rbf-a{k}");
        veth_pair(
            &core.ns,
            &format!("rbf-c{k}"),
            Some(&format!("10.250.{k}.1/30")),
            &lab.server,
            &link,
            Some(&format!("10.250.{k}.2/30")),
        )?;
        lab.server.ip(&[
            "route",
            "add",
            "10.250.0.0/24",
            "via",
            &format!("10.250.{k}.1"),
        ])?;
        lab.coordinator_url = Some(Core::urls());
        Ok(Rack { lab, link, k })
    }

    fn cut(&self, down: bool) -> Result<()> {
        self.lab
            .server
            .ip(&["link", "set", &self.link, if down { "down" } else { "up" }])?;
        if !down {
            // The route goes with the link.
            let _ = self.lab.server.ip(&[
                "route",
                "replace",
                "10.250.0.0/24",
                "via",
                &format!("10.250.{}.1", self.k),
            ]);
        }
        Ok(())
    }

    fn loss(&self, percent: u32) -> Result<()> {
        let _ = self
            .lab
            .server
            .run("nft", &["delete", "table", "netdev", "rbfloss"]);
        if percent == 0 {
            return Ok(());
        }
        let rules = format!(
            "table netdev rbfloss {{\n\
             \tchain in {{ type filter hook ingress device \"{l}\" priority 0; numgen random mod 100 < {percent} counter drop; }}\n\
             \tchain out {{ type filter hook egress device \"{l}\" priority 0; numgen random mod 100 < {percent} counter drop; }}\n\
             }}\n",
            l = self.link
        );
        let file = self.lab.dir().join("mgmt-loss.nft");
        std::fs::write(&file, rules)?;
        self.lab
            .server
            .run("nft", &["-f", file.to_str().context("path")?])
            .map(drop)
    }
}

/// A storm of the rack's known nodes, in the background.
struct Storm {
    process: rackboot_tests::netns::NsProcess,
    out: std::path::PathBuf,
}

fn storm_start(
    rack: &Rack,
    clients: usize,
    base: &str,
    blake3: &str,
    ripple_ms: u64,
) -> Result<Storm> {
    let out = rack.lab.dir().join(format!(
        "storm-{}.json",
        Instant::now().elapsed().as_nanos()
    ));
    let file = std::fs::File::create(&out)?;
    let mut cmd = rack.lab.client.exec(daemon::binary(daemon::CLI)?);
    cmd.args([
        "storm",
        "--server",
        SERVER_IP,
        "--json",
        "--deadline-secs",
        "120",
    ])
    .args(["--clients", &clients.to_string(), "--mac-base", base])
    .args(["--file", "boot.bin", "--expect-blake3", blake3])
    .args(["--ripple-ms", &ripple_ms.to_string()])
    .stdout(file);
    let process = rack.lab.client.spawn(cmd)?;
    Ok(Storm { process, out })
}

/// (booted, failed, the JSON line).
fn storm_wait(mut s: Storm) -> Result<(u64, u64, String)> {
    s.process
        .wait_timeout(Duration::from_secs(150))?
        .context("the storm did not end")?;
    let text = std::fs::read_to_string(&s.out)?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("no JSON from the storm:\n{text}"))?
        .to_string();
    let num = |key: &str| -> u64 {
        line.split(&format!("\"{key}\":"))
            .nth(1)
            .and_then(|r| r.split([',', '}']).next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(u64::MAX)
    };
    Ok((num("ok"), num("failed"), line))
}

/// Registers machines through the coordinators until stopped; records
/// every registration acknowledged (MAC → number).
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<String, u32>>>,
    attempts: Arc<Mutex<u64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(rack: &Rack, seq0: u32) -> Result<Writer> {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let attempts = Arc::new(Mutex::new(0));
        let ns_name = rack.lab.server.name().to_string();
        let bin = daemon::binary(daemon::CLI)?;
        let (s, a, n) = (stop.clone(), acked.clone(), attempts.clone());
        let thread = std::thread::spawn(move || {
            let mut seq = seq0;
            while !s.load(Ordering::Relaxed) {
                seq += 1;
                let mac = format!("52:54:00:fa:{:02x}:{:02x}", seq >> 8, seq & 0xff);
                let mut cmd = std::process::Command::new("ip");
                cmd.args(["netns", "exec", &ns_name]).arg(&bin).args([
                    "--coordinator",
                    &Core::urls(),
                    "node",
                    "add",
                    "--rack",
                    RACK,
                    "--mac",
                    &mac,
                ]);
                *n.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                if let Ok(out) = run_with_timeout(cmd, Duration::from_secs(40))
                    && out.status.success()
                {
                    // "node N …" in the answer.
                    let number = out
                        .stdout
                        .split_whitespace()
                        .skip_while(|w| *w != "node")
                        .nth(1)
                        .and_then(|w| w.trim_end_matches(':').parse::<u32>().ok());
                    if let Some(number) = number {
                        a.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(mac, number);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Ok(Writer {
            stop,
            acked,
            attempts,
            thread: Some(thread),
        })
    }

    fn finish(mut self) -> (BTreeMap<String, u32>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let acked = self.acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let attempts = *self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        (acked, attempts)
    }
}

#[test]
fn fault_scenarios_lose_nothing_and_boot_every_known_node() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "nft"], Ok(()));
    let clients: usize = std::env::var("RACKBOOT_FAULT_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut core = Core::new()?;
    core.leader()?;
    let boot = random_bytes("faults-boot", 1 << 20);
    let blake3 = blake3_hex(&boot);
    let mut racks = vec![Rack::new(&core, 1)?, Rack::new(&core, 2)?];
    for r in &mut racks {
        r.lab.add_file("boot.bin", &boot)?;
        r.lab.start_agent()?;
    }
    // The storm's machines are known: registered, then booted once so
    // each agent's view and persisted state hold them.
    let bases = ["52:54:00:aa:00:00", "52:54:00:bb:00:00"];
    for (r, base) in racks.iter().zip(bases) {
        let mut args = vec![
            "node".to_string(),
            "add".into(),
            "--rack".into(),
            RACK.into(),
        ];
        let prefix = &base[..base.len() - 5];
        for i in 0..clients {
            args.push("--mac".into());
            args.push(format!("{prefix}{:02x}:{:02x}", i >> 8, i & 0xff));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        r.lab.cli(&refs)?.success()?;
    }
    let storms = |racks: &[Rack], ripple: u64| -> Result<Vec<Storm>> {
        racks
            .iter()
            .zip(bases)
            .map(|(r, b)| storm_start(r, clients, b, &blake3, ripple))
            .collect()
    };
    let check = |name: &str, started: Vec<Storm>, results: &mut Vec<String>| -> Result<()> {
        for (k, s) in started.into_iter().enumerate() {
            let (booted, failed, line) = storm_wait(s)?;
            results.push(format!(
                "| {name} | rack {} | {booted}/{clients} | {failed} |",
                k + 1
            ));
            ensure!(
                booted == clients as u64 && failed == 0,
                "{name}: rack {}: {booted} of {clients} booted, {failed} failed: {line}",
                k + 1
            );
        }
        Ok(())
    };
    let mut results = Vec::new();
    // Warm-up: every node boots once with everything healthy.
    let s = storms(&racks, 0)?;
    check("baseline", s, &mut results)?;

    let writer = Writer::start(&racks[0], 0)?;
    let t0 = Instant::now();

    // 1. Leader killed mid-storm.
    let s = storms(&racks, 30)?;
    std::thread::sleep(Duration::from_secs(1));
    let leader = core.leader()?;
    core.kill(leader)?;
    check("leader SIGKILLed mid-storm", s, &mut results)?;
    core.start(leader)?;

    // 2. All coordinators unreachable for the whole storm.
    for r in &racks {
        r.cut(true)?;
    }
    let s = storms(&racks, 30)?;
    check("all coordinators unreachable", s, &mut results)?;
    for r in &racks {
        r.cut(false)?;
    }

    // 3. Rack A's agent restarted mid-storm (as systemd restarts it).
    let s = storms(&racks, 30)?;
    std::thread::sleep(Duration::from_secs(1));
    racks[0].lab.stop_agent_gracefully()?;
    racks[0].lab.start_agent()?;
    check("agent restarted mid-storm", s, &mut results)?;

    // 4. The leader paused for 10× the election timeout.
    let s = storms(&racks, 30)?;
    std::thread::sleep(Duration::from_secs(1));
    let leader = core.leader()?;
    core.signal(leader, "STOP")?;
    std::thread::sleep(ELECTION * 10);
    core.signal(leader, "CONT")?;
    check("leader SIGSTOPped 10x election timeout", s, &mut results)?;

    // 5. 20 % loss between agents and coordinators.
    for r in &racks {
        r.loss(20)?;
    }
    let s = storms(&racks, 30)?;
    check("20% loss agent-coordinator", s, &mut results)?;
    for r in &racks {
        r.loss(0)?;
    }

    let (acked, attempts) = writer.finish();
    let elapsed = t0.elapsed();
    // Every acknowledged registration is there with its number; no number twice.
    let list = core.cli(&["node", "list", "--rack", RACK])?.success()?;
    let mut by_number: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for line in list.stdout.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // NODE NAME RACK ADDRESS MAC IMAGE
        if let (Some(n), Some(macs)) = (
            cols.first().and_then(|c| c.parse::<u32>().ok()),
            cols.get(4),
        ) {
            by_number.entry(n).or_default().push(macs.to_string());
        }
    }
    let dup: Vec<_> = by_number.iter().filter(|(_, v)| v.len() > 1).collect();
    ensure!(dup.is_empty(), "numbers held twice: {dup:?}");
    let mut lost = Vec::new();
    for (mac, number) in &acked {
        let present = by_number
            .get(number)
            .is_some_and(|v| v.iter().any(|m| m.contains(mac.as_str())));
        if !present {
            lost.push(format!("{mac} (node {number})"));
        }
    }
    if !lost.is_empty() {
        bail!(
            "{} acknowledged registrations lost: {}\n{}",
            lost.len(),
            lost.join(", "),
            list.stdout
        );
    }
    println!(
        "| scenario | rack | booted | failed |\n|---|---|---|---|\n{}\n\
         registrations during the scenarios ({elapsed:.0?}): {} attempts, {} acknowledged, 0 lost, 0 duplicate numbers",
        results.join("\n"),
        attempts,
        acked.len()
    );
    Ok(())
}
