//! Real DHCP clients against the rack agent, in network namespaces (root;
//! `dhclient` from isc-dhcp-client, busybox `udhcpc`, `dhcpcd` from
//! dhcpcd-base, `dnsmasq`, `dhcrelay` from isc-dhcp-relay, `tcpdump`).
//!
//! The coordinator accepts an unknown MAC on first sight: the agent leaves
//! the first DISCOVER unanswered, reports the machine, and answers the
//! client's retransmission once the node is in its view. Every client runs
//! with retries for that, and bounded in time.
//!
//! * `dhclient_gets_its_node`, `udhcpc_gets_its_node`,
//!   `dhcpcd_gets_its_node`: each client, on a new MAC, binds the address
//!   `rackboot node list` and `node show` report for that MAC, with option 12
//!   hostname `n<number>` (the node's name), the rack's subnet mask, the
//!   router given with `--gateway`, the lease of `--lease-secs` and the agent
//!   as server identifier, and the address ends up on its interface.
//! * `client_id_does_not_change_the_node`: one machine asks with a client
//!   identifier (udhcpc, option 61 that is not its MAC), then without one
//!   (dhclient, then `udhcpc -C`); tcpdump shows which requests carried
//!   option 61, and all three runs get the same address, from the same and
//!   only node.
//! * `proxy_dhcp_beside_dnsmasq`: dnsmasq is the site DHCP server (a plain
//!   range, no PXE), the agent runs `--dhcp-mode proxy`. dhcpcd sending
//!   vendor class `PXEClient:Arch:00000:UNDI:002001` gets its address from
//!   dnsmasq (and ignores the agent's address-less offer, as a non-PXE
//!   stack must), while the agent's proxy OFFER on the wire has no `yiaddr`,
//!   next-server and boot file `undionly.kpxe` (`file`, options 66/67),
//!   option 60 `PXEClient` and option 43 "skip discovery" (6,1,8,255); the
//!   agent sends nothing else to the client. A PXE boot server REQUEST to
//!   port 4011 (written by the test: no OS client sends one) gets the
//!   proxy ACK with the same boot information and the UUID echoed.
//! * `proxy_dhcp_ipxe_guest` (QEMU, test group `qemu`): the same site with a
//!   BIOS guest whose iPXE ROM network-boots: iPXE configures the address
//!   from dnsmasq's range (router dnsmasq), takes next-server and file name
//!   (the node's iPXE script) from the agent's proxy reply, and runs that
//!   script, fetched from the agent over TFTP (node `n1`, no image yet).
//! * `relay_serves_far_subnet`: a router namespace running `dhcrelay -a`
//!   between the client's subnet and the agent's; the agent runs with
//!   `--rack-subnet` (the subnet behind the relay) and `--gateway` (the
//!   relay). The agent answers the relay at `giaddr` with option 82 echoed
//!   byte for byte; udhcpc binds the node's address on its own subnet, with
//!   the relay as router, and then pings the agent through the router.
//!
//! (busybox udhcpc is not the PXE-like client of the proxy test: it takes
//! the first offer, the agent's address-less one, and then asks for
//! 0.0.0.0 until it gives up.)

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rackboot_tests::daemon::{self, CliOutput, Daemon, run_with_timeout};
use rackboot_tests::dhcpcap::{self, ACK, BOOTREPLY, BOOTREQUEST, Capture, DhcpPacket, OFFER};
use rackboot_tests::netns::{Netns, veth_pair};
use rackboot_tests::qemu::{QemuGuest, QemuOpts};
use rackboot_tests::testbed::{node_of_mac_in, normalize_mac};
use rackboot_tests::util::run_output;
use rackboot_tests::{require_commands_or_skip, require_root_or_skip};

/// Where the coordinator listens, in the agent's namespace.
const COORDINATOR_LISTEN: &str = "127.0.0.1:50051";
/// The URL the agent and the CLI use.
const COORDINATOR_URL: &str = "http://127.0.0.1:50051";
/// The rack.
const RACK: &str = "r1";
/// How long one client run may take (two DISCOVERs, a REQUEST, slack).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(45);

// The authoritative rack: the agent on a bridge, one namespace per client.
const AUTH_BRIDGE: &str = "rbd-br";
const AUTH_CIDR: &str = "10.213.0.1/24";
const AUTH_SERVER: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
const AUTH_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 254);
const AUTH_MASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);
/// `--lease-secs`: not the default 3600, so the option is seen to follow it.
const AUTH_LEASE_SECS: u32 = 1800;
/// The client's interface in its namespace.
const CLIENT_IF: &str = "rbd-c0";

// ---- lab: temp dir and daemons ---------------------------------------------

/// A test's temporary directory and daemons (killed on drop, before the
/// namespaces the test declared earlier are deleted).
struct Lab {
    daemons: Vec<Daemon>,
    dir: tempfile::TempDir,
    started: Instant,
}

impl Lab {
    fn new(prefix: &str) -> Result<Lab> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("rackboot-{prefix}-"))
            .tempdir()
            .context("creating a temporary directory")?;
        Ok(Lab {
            daemons: Vec::new(),
            dir,
            started: Instant::now(),
        })
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `cmd` as daemon `name` (log `<name>.log`) and waits for a log
    /// line containing `ready`.
    fn spawn(&mut self, name: &str, cmd: Command, ready: &str) -> Result<()> {
        let log = self.path(&format!("{name}.log"));
        let mut d = Daemon::spawn(name, cmd, &log)?;
        d.wait_for_log(ready, Duration::from_secs(30))?;
        self.daemons.push(d);
        Ok(())
    }

    /// The coordinator and an agent in `ns` on `iface`, with `extra` flags;
    /// waits until the agent serves and its rack is registered.
    fn start_rackboot(&mut self, ns: &Netns, iface: &str, extra: &[&str]) -> Result<()> {
        let mut cmd = ns.exec(daemon::binary(daemon::COORDINATOR)?);
        cmd.args(["--plaintext", "--listen", COORDINATOR_LISTEN, "--data"])
            .arg(self.path("coordinator-data"));
        let log = self.path("coordinator.log");
        let mut coordinator = Daemon::spawn("coordinator", cmd, &log)?;
        let listen: SocketAddr = COORDINATOR_LISTEN.parse()?;
        coordinator.wait_for_tcp(listen, Some(ns), Duration::from_secs(30))?;
        self.daemons.push(coordinator);

        let mut cmd = ns.exec(daemon::binary(daemon::AGENT)?);
        cmd.args([
            "--plaintext",
            "--rack",
            RACK,
            "--coordinator",
            COORDINATOR_URL,
            "--iface",
            iface,
            "--no-http",
            "--no-syslog",
        ])
        .args(extra)
        .arg("--data")
        .arg(self.path("agent-data"));
        self.spawn("agent", cmd, "rack agent serving")?;

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let racks = self.cli(ns, &["rack", "list"])?.success()?;
            if racks
                .stdout
                .lines()
                .skip(1)
                .any(|l| l.split_whitespace().next() == Some(RACK))
            {
                return Ok(());
            }
            self.ensure_running()?;
            if Instant::now() >= deadline {
                bail!("rack {RACK} not registered 30 s after the agent started:\n{racks}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `rackboot --coordinator URL <args>` in `ns`.
    fn cli(&self, ns: &Netns, args: &[&str]) -> Result<CliOutput> {
        let mut all = vec!["--coordinator", COORDINATOR_URL];
        all.extend_from_slice(args);
        daemon::cli(Some(ns), &all, Duration::from_secs(60))
    }

    fn ensure_running(&mut self) -> Result<()> {
        self.daemons.iter_mut().try_for_each(Daemon::ensure_running)
    }

    /// Daemon logs and client logs, for failure reports.
    fn report(&self) -> String {
        let mut r = String::new();
        for d in &self.daemons {
            r.push_str(&d.report());
            r.push('\n');
        }
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.dir())
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.sort();
        for path in logs {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let is_daemon = self
                .daemons
                .iter()
                .any(|d| d.log_path().file_name() == path.file_name());
            if name.ends_with(".log") && !is_daemon {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                r.push_str(&format!("===== {name} =====\n{}\n", text.trim_end()));
            }
        }
        r.push_str(&format!("(temp dir {})\n", self.dir().display()));
        r
    }

    /// Passes `result` through; on failure prints the report first.
    fn finish<T>(&self, test: &str, result: Result<T>) -> Result<T> {
        let secs = self.started.elapsed().as_secs_f64();
        match &result {
            Ok(_) => eprintln!("{test}: passed in {secs:.1} s"),
            Err(_) => eprintln!(
                "\n######## {test} FAILED after {secs:.1} s; diagnostics follow ########\n{}",
                self.report()
            ),
        }
        result
    }
}

// ---- nodes -----------------------------------------------------------------

/// A node as the CLI reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    number: u32,
    name: String,
    address: Ipv4Addr,
}

/// The node with `mac`, from `rackboot node list` and `rackboot node show`
/// (which must agree).
fn node_of(lab: &Lab, ns: &Netns, mac: &str) -> Result<Node> {
    let list = lab.cli(ns, &["node", "list"])?.success()?;
    let (number, address) = node_of_mac_in(&list, mac)?;
    let show = lab.cli(ns, &["node", "show", &number])?.success()?;
    let field = |key: &str| {
        show.stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("`node show {number}` has no {key:?} line:\n{show}"))
    };
    let node = Node {
        number: number
            .parse()
            .with_context(|| format!("node number {number:?} in:\n{list}"))?,
        name: field("name:")?,
        address: field("address:")?
            .parse()
            .with_context(|| format!("address in:\n{show}"))?,
    };
    ensure!(
        node.address.to_string() == address,
        "`node list` says {address}, `node show` says {}:\n{list}\n{show}",
        node.address
    );
    let macs = normalize_mac(&field("macs:")?);
    ensure!(
        macs.contains(&normalize_mac(mac)),
        "`node show {number}` does not list {mac}:\n{show}"
    );
    Ok(node)
}

/// Waits (up to 10 s) until the coordinator lists a node for `mac`.
fn wait_node(lab: &Lab, ns: &Netns, mac: &str) -> Result<Node> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match node_of(lab, ns, mac) {
            Ok(n) => return Ok(n),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("no node for {mac} 10 s after its DISCOVER")));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Number of rows in `rackboot node list`.
fn node_count(lab: &Lab, ns: &Netns) -> Result<usize> {
    let list = lab.cli(ns, &["node", "list"])?.success()?;
    Ok(list
        .stdout
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count())
}

// ---- clients ---------------------------------------------------------------

/// What a client's script was told when it bound a lease.
#[derive(Debug, Clone)]
struct Lease {
    client: String,
    ip: Ipv4Addr,
    mask: Option<Ipv4Addr>,
    router: Option<Ipv4Addr>,
    hostname: Option<String>,
    lease_secs: Option<u32>,
    server_id: Option<Ipv4Addr>,
    /// Every variable of the bound event, for messages.
    vars: BTreeMap<String, String>,
}

/// Names of the script variables of one client family.
struct VarNames {
    ip: &'static str,
    mask: &'static str,
    router: &'static str,
    hostname: &'static str,
    lease: &'static str,
    server_id: &'static str,
}

/// udhcpc (busybox).
const UDHCPC_VARS: VarNames = VarNames {
    ip: "ip",
    mask: "subnet",
    router: "router",
    hostname: "hostname",
    lease: "lease",
    server_id: "serverid",
};

/// dhclient and dhcpcd (both follow the dhclient-script names).
const DHCLIENT_VARS: VarNames = VarNames {
    ip: "new_ip_address",
    mask: "new_subnet_mask",
    router: "new_routers",
    hostname: "new_host_name",
    lease: "new_dhcp_lease_time",
    server_id: "new_dhcp_server_identifier",
};

/// The variables of the last event in `events` recorded by a client script
/// (blocks of `== EVENT` followed by `env | sort`).
fn last_event(text: &str, events: &[&str]) -> Option<BTreeMap<String, String>> {
    let mut found = None;
    let mut current: Option<BTreeMap<String, String>> = None;
    for line in text.lines() {
        if let Some(event) = line.strip_prefix("== ") {
            if let Some(done) = current.take() {
                found = Some(done);
            }
            if events.contains(&event.trim()) {
                current = Some(BTreeMap::new());
            }
        } else if let (Some(vars), Some((k, v))) = (current.as_mut(), line.split_once('=')) {
            vars.insert(k.to_string(), v.to_string());
        }
    }
    current.or(found)
}

fn lease_from(client: &str, env_file: &Path, events: &[&str], names: &VarNames) -> Result<Lease> {
    let text = std::fs::read_to_string(env_file)
        .with_context(|| format!("{client} ran no script ({})", env_file.display()))?;
    let vars = last_event(&text, events)
        .with_context(|| format!("{client}'s script saw none of {events:?}:\n{text}"))?;
    let ip_of = |key: &str| -> Result<Option<Ipv4Addr>> {
        match vars.get(key).and_then(|v| v.split_whitespace().next()) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .with_context(|| format!("{client}: {key}={v:?} is not an IPv4 address")),
        }
    };
    let ip = ip_of(names.ip)?.with_context(|| format!("{client}: no {} in {vars:?}", names.ip))?;
    let lease_secs = match vars.get(names.lease) {
        None => None,
        Some(v) => Some(
            v.trim()
                .parse()
                .with_context(|| format!("{client}: {}={v:?}", names.lease))?,
        ),
    };
    Ok(Lease {
        client: client.to_string(),
        ip,
        mask: ip_of(names.mask)?,
        router: ip_of(names.router)?,
        hostname: vars.get(names.hostname).cloned(),
        lease_secs,
        server_id: ip_of(names.server_id)?,
        vars,
    })
}

fn write_script(path: &Path, body: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", path.display()))
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// Runs busybox `udhcpc -q -n` (10 DISCOVERs 2 s apart at most) with
/// `extra` flags on `ifname` in `ns`. Its script records every event in
/// `<tag>.env` and, like a real one, puts the address (and default route)
/// on the interface.
fn udhcpc(ns: &Netns, ifname: &str, dir: &Path, tag: &str, extra: &[&str]) -> Result<Lease> {
    let env = dir.join(format!("{tag}.env"));
    let script = dir.join(format!("{tag}.sh"));
    write_script(
        &script,
        &format!(
            r#"#!/bin/sh
# udhcpc script of a rackboot system test.
{{ echo "== $1"; env | sort; }} >> '{env}'
case "$1" in
deconfig) ip -4 addr flush dev "$interface" ;;
bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${{mask:-32}}" dev "$interface"
    if [ -n "$router" ]; then ip route replace default via "${{router%% *}}" dev "$interface"; fi
    ;;
esac
exit 0
"#,
            env = path_str(&env)?
        ),
    )?;
    let mut cmd = ns.exec("busybox");
    cmd.args([
        "udhcpc", "-i", ifname, "-f", "-q", "-n", "-t", "10", "-T", "2", "-s",
    ])
    .arg(&script)
    .args(extra);
    let out = run_with_timeout(cmd, CLIENT_TIMEOUT)?;
    std::fs::write(dir.join(format!("{tag}.log")), out.combined())?;
    ensure!(out.status.success(), "udhcpc got no lease: {out}");
    lease_from(tag, &env, &["bound"], &UDHCPC_VARS)
}

/// Runs ISC `dhclient -4 -d -1` on `ifname` in `ns` with its own
/// configuration (retransmissions from 1 s, no client identifier), script,
/// lease and pid files in `dir` (nothing of the host's), until its script
/// reports BOUND; then kills it (in the foreground it would stay to renew).
fn dhclient(ns: &Netns, ifname: &str, dir: &Path, tag: &str) -> Result<Lease> {
    let env = dir.join(format!("{tag}.env"));
    let script = dir.join(format!("{tag}.sh"));
    let conf = dir.join(format!("{tag}.conf"));
    write_script(
        &script,
        &format!(
            r#"#!/bin/sh
# dhclient script of a rackboot system test.
{{ echo "== $reason"; env | sort; }} >> '{env}'
case "$reason" in
BOUND|RENEW|REBIND|REBOOT)
    ip -4 addr flush dev "$interface"
    ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface"
    if [ -n "$new_routers" ]; then ip route replace default via "${{new_routers%% *}}" dev "$interface"; fi
    ;;
esac
exit 0
"#,
            env = path_str(&env)?
        ),
    )?;
    std::fs::write(
        &conf,
        "initial-interval 1;\nbackoff-cutoff 2;\ntimeout 40;\n\
         request subnet-mask, broadcast-address, routers, host-name, dhcp-lease-time;\n",
    )?;
    let log = dir.join(format!("{tag}.log"));
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = ns.exec("dhclient");
    cmd.args(["-4", "-d", "-1", "-v", "-cf"])
        .arg(&conf)
        .arg("-sf")
        .arg(&script)
        .arg("-pf")
        .arg(dir.join(format!("{tag}.pid")))
        .arg("-lf")
        .arg(dir.join(format!("{tag}.leases")))
        .arg(ifname)
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let mut process = ns.spawn(cmd)?;
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let bound = ["BOUND", "REBOOT"];
    loop {
        let text = std::fs::read_to_string(&env).unwrap_or_default();
        if last_event(&text, &bound).is_some() {
            break;
        }
        if let Some(status) = process.try_wait()? {
            bail!(
                "dhclient exited ({status}) without a lease:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "dhclient bound no lease in {CLIENT_TIMEOUT:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    process.kill()?;
    lease_from(tag, &env, &bound, &DHCLIENT_VARS)
}

/// Runs `dhcpcd -4 -B -1` (oneshot: exits once bound) with `extra` flags on
/// `ifname` in `ns`, with an empty configuration and its own script (no
/// hooks: resolv.conf and the host name stay untouched). Its lease database
/// `/var/lib/dhcpcd` and `/run` are tmpfs mounts private to the run
/// (`ip netns exec` gives it its own mount namespace). dhcpcd puts the
/// address on the interface itself.
fn dhcpcd(ns: &Netns, ifname: &str, dir: &Path, tag: &str, extra: &[&str]) -> Result<Lease> {
    let env = dir.join(format!("{tag}.env"));
    let script = dir.join(format!("{tag}.sh"));
    let conf = dir.join(format!("{tag}.conf"));
    write_script(
        &script,
        &format!(
            "#!/bin/sh\n# dhcpcd script of a rackboot system test.\n\
             {{ echo \"== $reason\"; env | sort; }} >> '{}'\nexit 0\n",
            path_str(&env)?
        ),
    )?;
    std::fs::write(&conf, "option subnet_mask, routers, host_name\n")?;
    let mut cmd = ns.exec("sh");
    cmd.args([
        "-c",
        "mount -t tmpfs rackboot-test /run && \
         mount -t tmpfs rackboot-test /var/lib/dhcpcd && exec dhcpcd \"$@\"",
        "dhcpcd",
        "-4",
        "-B",
        "-1",
        "-t",
        "40",
        "-L",
        "-A",
        "-f",
        path_str(&conf)?,
        "-c",
        path_str(&script)?,
    ])
    .args(extra)
    .arg(ifname);
    let out = run_with_timeout(cmd, CLIENT_TIMEOUT)?;
    std::fs::write(dir.join(format!("{tag}.log")), out.combined())?;
    ensure!(out.status.success(), "dhcpcd got no lease: {out}");
    lease_from(tag, &env, &["BOUND", "REBOOT"], &DHCLIENT_VARS)
}

/// Fails unless `ifname` in `ns` has address `ip`.
fn ensure_has_address(ns: &Netns, ifname: &str, ip: Ipv4Addr) -> Result<()> {
    let addrs = ns.ip(&["-4", "-o", "addr", "show", "dev", ifname])?;
    ensure!(
        addrs.contains(&format!("inet {ip}/")),
        "{ifname} in {} does not have {ip}:\n{addrs}",
        ns.name()
    );
    Ok(())
}

/// Whether `ip` lies in `net`/`prefix`.
fn in_subnet(ip: Ipv4Addr, net: Ipv4Addr, prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// Parses `aa:bb:cc:dd:ee:ff`.
fn mac_bytes(mac: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad MAC {mac:?}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("MAC {mac:?} is not 6 bytes"))
}

// ---- the authoritative rack ------------------------------------------------

/// The agent (authoritative, `--gateway`, `--lease-secs`) and the
/// coordinator in one namespace, on a bridge that client namespaces join.
struct AuthRack {
    lab: Lab,
    srv: Netns,
}

impl AuthRack {
    fn start(prefix: &str) -> Result<AuthRack> {
        let srv = Netns::create(&format!("{prefix}-s"))?;
        let mut lab = Lab::new(prefix)?;
        srv.add_bridge(AUTH_BRIDGE, Some(AUTH_CIDR))?;
        let gateway = AUTH_GATEWAY.to_string();
        let lease = AUTH_LEASE_SECS.to_string();
        lab.start_rackboot(
            &srv,
            AUTH_BRIDGE,
            &["--gateway", &gateway, "--lease-secs", &lease],
        )?;
        Ok(AuthRack { lab, srv })
    }

    /// A client namespace whose [`CLIENT_IF`] (MAC `mac`) is a port of the
    /// bridge.
    fn add_client(&self, prefix: &str, mac: &str, port: &str) -> Result<Netns> {
        let ns = Netns::create(prefix)?;
        veth_pair(&self.srv, port, None, &ns, CLIENT_IF, None)?;
        self.srv.attach_to_bridge(port, AUTH_BRIDGE)?;
        ns.ip(&["link", "set", "dev", CLIENT_IF, "address", mac])?;
        Ok(ns)
    }

    /// Everything a lease from the agent must say for the node with `mac`:
    /// its address (and on the interface), name, mask, router, lease time,
    /// server identifier.
    fn check_lease(&self, client_ns: &Netns, mac: &str, lease: &Lease) -> Result<Node> {
        let node = node_of(&self.lab, &self.srv, mac)?;
        let who = format!("{} (MAC {mac}, vars {:?})", lease.client, lease.vars);
        ensure!(
            lease.ip == node.address,
            "{who}: bound {} but the coordinator gave node {} {}",
            lease.ip,
            node.number,
            node.address
        );
        ensure!(
            node.name == format!("n{}", node.number),
            "node {} is named {:?}",
            node.number,
            node.name
        );
        ensure!(
            lease.hostname.as_deref() == Some(node.name.as_str()),
            "{who}: hostname {:?}, want {:?}",
            lease.hostname,
            node.name
        );
        ensure!(
            lease.mask == Some(AUTH_MASK),
            "{who}: mask {:?}",
            lease.mask
        );
        ensure!(
            lease.router == Some(AUTH_GATEWAY),
            "{who}: router {:?}, want {AUTH_GATEWAY}",
            lease.router
        );
        ensure!(
            lease.lease_secs == Some(AUTH_LEASE_SECS),
            "{who}: lease {:?} s, want {AUTH_LEASE_SECS}",
            lease.lease_secs
        );
        ensure!(
            lease.server_id == Some(AUTH_SERVER),
            "{who}: server identifier {:?}",
            lease.server_id
        );
        ensure_has_address(client_ns, CLIENT_IF, lease.ip)?;
        Ok(node)
    }
}

type ClientFn = fn(&Netns, &str, &Path, &str) -> Result<Lease>;

/// One client on a new MAC binds its node's address and options.
fn client_gets_its_node(test: &str, prefix: &str, mac: &str, run: ClientFn) -> Result<()> {
    let rack = AuthRack::start(prefix)?;
    let client = rack.add_client(&format!("{prefix}-c"), mac, "rbd-p0")?;
    let result = (|| {
        let lease = run(&client, CLIENT_IF, rack.lab.dir(), "client")?;
        let node = rack.check_lease(&client, mac, &lease)?;
        eprintln!(
            "{}: node {} {} {} (mask {:?}, router {:?}, lease {:?} s)",
            lease.client,
            node.number,
            node.name,
            lease.ip,
            lease.mask,
            lease.router,
            lease.lease_secs
        );
        Ok(())
    })();
    rack.lab.finish(test, result)
}

#[test]
fn dhclient_gets_its_node() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "dhclient"], Ok(()));
    client_gets_its_node(
        "dhclient_gets_its_node",
        "rbdh",
        "52:54:00:d1:00:01",
        dhclient,
    )
}

#[test]
fn udhcpc_gets_its_node() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "busybox"], Ok(()));
    client_gets_its_node(
        "udhcpc_gets_its_node",
        "rbdu",
        "52:54:00:d1:00:02",
        |ns, i, d, t| udhcpc(ns, i, d, t, &[]),
    )
}

#[test]
fn dhcpcd_gets_its_node() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "dhcpcd", "mount"], Ok(()));
    client_gets_its_node(
        "dhcpcd_gets_its_node",
        "rbdd",
        "52:54:00:d1:00:03",
        |ns, i, d, t| dhcpcd(ns, i, d, t, &[]),
    )
}

/// A client identifier that is not derived from the MAC (type 255).
const CLIENT_ID: [u8; 6] = [0xff, 0x00, 0xc0, 0xff, 0xee, 0x01];

#[test]
fn client_id_does_not_change_the_node() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "busybox", "dhclient", "tcpdump"], Ok(()));
    let test = "client_id_does_not_change_the_node";
    let mac = "52:54:00:d1:00:04";
    let rack = AuthRack::start("rbdi")?;
    let client = rack.add_client("rbdi-c", mac, "rbd-p0")?;
    let result = (|| {
        let dir = rack.lab.dir();
        let id_hex: String = CLIENT_ID.iter().map(|b| format!("{b:02x}")).collect();
        let with_id = format!("0x3d:{id_hex}");
        type Run<'a> = Box<dyn Fn() -> Result<Lease> + 'a>;
        let runs: [(&str, Option<&[u8]>, Run<'_>); 3] = [
            (
                "udhcpc-with-client-id",
                Some(&CLIENT_ID),
                Box::new(|| udhcpc(&client, CLIENT_IF, dir, "udhcpc-id", &["-x", &with_id])),
            ),
            (
                "dhclient-without-client-id",
                None,
                Box::new(|| dhclient(&client, CLIENT_IF, dir, "dhclient")),
            ),
            (
                "udhcpc-C-without-client-id",
                None,
                Box::new(|| udhcpc(&client, CLIENT_IF, dir, "udhcpc-noid", &["-C"])),
            ),
        ];
        let mut leases = Vec::new();
        for (name, want_id, run) in runs {
            client.ip(&["-4", "addr", "flush", "dev", CLIENT_IF])?;
            let cap = Capture::start(&client, CLIENT_IF, dir, name)?;
            let lease = run()?;
            cap.wait_for("ACK from the agent", Duration::from_secs(10), |ps| {
                ps.iter()
                    .any(|p| p.is_from(mac) && p.op == BOOTREPLY && p.message_type() == Some(ACK))
            })?;
            let packets = cap.stop()?;
            let requests: Vec<&DhcpPacket> = packets
                .iter()
                .filter(|p| p.op == BOOTREQUEST && p.is_from(mac))
                .collect();
            ensure!(!requests.is_empty(), "{name}: no request captured");
            for r in &requests {
                ensure!(
                    r.option(61) == want_id,
                    "{name}: request with option 61 {:?}, want {want_id:?}: {r}",
                    r.option(61)
                );
            }
            let acks: Vec<&DhcpPacket> = packets
                .iter()
                .filter(|p| p.is_from(mac) && p.message_type() == Some(ACK))
                .collect();
            ensure!(
                acks.iter().all(|a| a.yiaddr == lease.ip),
                "{name}: bound {} but the agent ACKed:\n{}",
                lease.ip,
                dhcpcap::list(&packets)
            );
            let node = rack.check_lease(&client, mac, &lease)?;
            eprintln!(
                "{name}: option 61 {:?} -> node {} {}",
                want_id.map(|id| id.len()),
                node.number,
                lease.ip
            );
            leases.push((name, node, lease.ip));
        }
        let (first_name, first_node, first_ip) = leases.first().cloned().context("no run")?;
        for (name, node, ip) in &leases {
            ensure!(
                *node == first_node && *ip == first_ip,
                "{name} got node {node:?} at {ip}, {first_name} node {first_node:?} at {first_ip}"
            );
        }
        let count = node_count(&rack.lab, &rack.srv)?;
        ensure!(
            count == 1,
            "the coordinator lists {count} nodes for one machine"
        );
        Ok(())
    })();
    rack.lab.finish(test, result)
}

// ---- proxyDHCP beside dnsmasq ----------------------------------------------

const PROXY_BRIDGE: &str = "rbp-br";
const PROXY_CIDR: &str = "10.214.0.1/24";
const PROXY_SERVER: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 1);
const DNSMASQ_CIDR: &str = "10.214.0.2/24";
const DNSMASQ_ADDR: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 2);
/// dnsmasq's range.
const SITE_FIRST: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 100);
const SITE_LAST: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 150);
/// The agent's node base: outside dnsmasq's range, so a client address
/// from the agent could not pass for one from dnsmasq.
const PROXY_NODE_BASE: &str = "10.214.0.200";
/// What a BIOS PXE ROM sends as option 60.
const PXE_VENDOR_CLASS: &str = "PXEClient:Arch:00000:UNDI:002001";
/// The agent's default BIOS boot file.
const BIOS_BOOT_FILE: &str = "undionly.kpxe";
/// Option 43 of proxy replies: PXE_DISCOVERY_CONTROL = 8 (boot the file in
/// this reply, no boot server discovery), end.
const PXE_SKIP_DISCOVERY: [u8; 4] = [6, 1, 8, 255];

/// Checks the boot information of a proxy reply: no address, next-server
/// and boot file, option 43/60/54/66/67.
fn check_proxy_reply(p: &DhcpPacket, want_type: u8) -> Result<()> {
    ensure!(p.op == BOOTREPLY, "not a BOOTREPLY: {p}");
    ensure!(
        p.message_type() == Some(want_type),
        "message type {:?}, want {want_type}: {p}",
        p.message_type()
    );
    ensure!(
        p.yiaddr.is_unspecified(),
        "a proxyDHCP reply must not hand out an address: {p}"
    );
    ensure!(p.siaddr == PROXY_SERVER, "next-server {}: {p}", p.siaddr);
    ensure!(p.file == BIOS_BOOT_FILE, "file {:?}: {p}", p.file);
    ensure!(
        p.option_str(67).as_deref() == Some(BIOS_BOOT_FILE),
        "option 67 {:?}: {p}",
        p.option_str(67)
    );
    ensure!(
        p.option_str(66).as_deref() == Some("10.214.0.1"),
        "option 66 {:?}: {p}",
        p.option_str(66)
    );
    ensure!(
        p.option_str(60).as_deref() == Some("PXEClient"),
        "option 60 {:?}: {p}",
        p.option_str(60)
    );
    ensure!(
        p.option(43) == Some(&PXE_SKIP_DISCOVERY[..]),
        "option 43 {:?}, want {PXE_SKIP_DISCOVERY:?}: {p}",
        p.option(43)
    );
    ensure!(
        p.option_ip(54) == Some(PROXY_SERVER),
        "option 54 {:?}: {p}",
        p.option_ip(54)
    );
    for code in [1, 3, 51] {
        ensure!(
            p.option(code).is_none(),
            "a proxy reply carries address configuration (option {code}): {p}"
        );
    }
    Ok(())
}

/// The proxyDHCP site: the agent (`--dhcp-mode proxy`) and coordinator in
/// `srv` on bridge [`PROXY_BRIDGE`], dnsmasq in `site` on a port of it.
fn proxy_site(srv: &Netns, site: &Netns, lab: &mut Lab) -> Result<()> {
    srv.add_bridge(PROXY_BRIDGE, Some(PROXY_CIDR))?;
    veth_pair(srv, "rbp-p-site", None, site, "rbp-dn0", Some(DNSMASQ_CIDR))?;
    srv.attach_to_bridge("rbp-p-site", PROXY_BRIDGE)?;
    // A plain range: no PXE options, no boot file.
    let mut cmd = site.exec("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--port=0",
        "--interface=rbp-dn0",
        "--bind-interfaces",
        "--dhcp-range=10.214.0.100,10.214.0.150,255.255.255.0,10m",
        "--no-ping",
        "--user=root",
        "--log-dhcp",
        "--log-facility=-",
    ])
    .arg(format!(
        "--dhcp-leasefile={}",
        path_str(&lab.path("dnsmasq.leases"))?
    ))
    .arg(format!(
        "--pid-file={}",
        path_str(&lab.path("dnsmasq.pid"))?
    ));
    lab.spawn("dnsmasq", cmd, "DHCP, IP range")?;
    lab.start_rackboot(
        srv,
        PROXY_BRIDGE,
        &["--dhcp-mode", "proxy", "--node-base", PROXY_NODE_BASE],
    )
}

#[test]
fn proxy_dhcp_beside_dnsmasq() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(
        [
            "ip", "dhcpcd", "dnsmasq", "tcpdump", "bash", "dd", "timeout"
        ],
        Ok(())
    );
    let test = "proxy_dhcp_beside_dnsmasq";
    let mac = "52:54:00:d2:00:01";
    let srv = Netns::create("rbdp-s")?;
    let site = Netns::create("rbdp-d")?;
    let client = Netns::create("rbdp-c")?;
    let mut lab = Lab::new("rbdp")?;
    let result = (|| {
        proxy_site(&srv, &site, &mut lab)?;
        veth_pair(&srv, "rbp-p-cl", None, &client, CLIENT_IF, None)?;
        srv.attach_to_bridge("rbp-p-cl", PROXY_BRIDGE)?;
        client.ip(&["link", "set", "dev", CLIENT_IF, "address", mac])?;
        let dir = lab.dir().to_path_buf();
        let pxe = ["-i", PXE_VENDOR_CLASS];

        // First sight: dnsmasq answers, the agent only reports the machine.
        let first = dhcpcd(&client, CLIENT_IF, &dir, "dhcpcd-1", &pxe)?;
        let node = wait_node(&lab, &srv, mac)?;
        eprintln!(
            "first run: {} from {:?}; node {} (rack address {})",
            first.ip, first.server_id, node.number, node.address
        );

        // Known now: the agent's proxy offer is on the wire beside dnsmasq's.
        client.ip(&["-4", "addr", "flush", "dev", CLIENT_IF])?;
        let cap = Capture::start(&client, CLIENT_IF, &dir, "proxy")?;
        let lease = dhcpcd(&client, CLIENT_IF, &dir, "dhcpcd-2", &pxe)?;
        let from_agent = |p: &DhcpPacket| *p.src.ip() == PROXY_SERVER && p.is_from(mac);
        cap.wait_for(
            "proxy OFFER from the agent and ACK from dnsmasq",
            Duration::from_secs(10),
            |ps| {
                ps.iter()
                    .any(|p| from_agent(p) && p.message_type() == Some(OFFER))
                    && ps
                        .iter()
                        .any(|p| *p.src.ip() == DNSMASQ_ADDR && p.message_type() == Some(ACK))
            },
        )?;
        let packets = cap.stop()?;
        let all = dhcpcap::list(&packets);
        let discovers: Vec<u32> = packets
            .iter()
            .filter(|p| p.is_from(mac) && p.message_type() == Some(dhcpcap::DISCOVER))
            .map(|p| p.xid)
            .collect();
        for p in packets.iter().filter(|p| from_agent(p)) {
            check_proxy_reply(p, OFFER).with_context(|| format!("captured:\n{all}"))?;
            ensure!(
                p.src.port() == 67 && p.dst.port() == 68,
                "the proxy offer went {} -> {}:\n{all}",
                p.src,
                p.dst
            );
            ensure!(
                discovers.contains(&p.xid),
                "agent reply to no DISCOVER of this client:\n{all}"
            );
        }
        // The client's address is dnsmasq's.
        ensure!(
            lease.server_id == Some(DNSMASQ_ADDR),
            "dhcpcd bound a lease from {:?}, not dnsmasq: {lease:?}\n{all}",
            lease.server_id
        );
        ensure!(
            (u32::from(SITE_FIRST)..=u32::from(SITE_LAST)).contains(&u32::from(lease.ip)),
            "dhcpcd bound {}, outside dnsmasq's range {SITE_FIRST}-{SITE_LAST}",
            lease.ip
        );
        ensure!(
            lease.ip == first.ip,
            "dnsmasq moved the client from {} to {}",
            first.ip,
            lease.ip
        );
        ensure_has_address(&client, CLIENT_IF, lease.ip)?;
        let acked = packets.iter().any(|p| {
            *p.src.ip() == DNSMASQ_ADDR && p.message_type() == Some(ACK) && p.yiaddr == lease.ip
        });
        ensure!(
            acked,
            "no ACK of {} from dnsmasq captured:\n{all}",
            lease.ip
        );
        let leases = std::fs::read_to_string(lab.path("dnsmasq.leases"))?;
        ensure!(
            leases
                .lines()
                .any(|l| normalize_mac(l).contains(mac) && l.contains(&format!(" {} ", lease.ip))),
            "dnsmasq's lease file has no {mac} {}:\n{leases}",
            lease.ip
        );

        // The PXE boot server step (port 4011), which only firmware does:
        // a REQUEST from the address dnsmasq gave gets the proxy ACK.
        let uuid = [0x5a; 16];
        let xid = 0x5043_3031;
        let req = dhcpcap::pxe_boot_server_request(mac_bytes(mac)?, lease.ip, xid, uuid);
        let (req_path, resp_path) = (dir.join("pxe-4011.req"), dir.join("pxe-4011.resp"));
        std::fs::write(&req_path, &req)?;
        // bash's /dev/udp connects the socket: only PROXY_SERVER:4011 can
        // answer it; dd reads exactly one datagram.
        let mut cmd = client.exec("bash");
        cmd.args([
            "-c",
            "exec 3<>\"/dev/udp/$1/$2\" && cat \"$3\" >&3 && \
             exec timeout 10 dd bs=4096 count=1 status=none <&3 >\"$4\"",
            "bash",
            "10.214.0.1",
            "4011",
            path_str(&req_path)?,
            path_str(&resp_path)?,
        ]);
        let out = run_with_timeout(cmd, Duration::from_secs(20))?;
        ensure!(out.status.success(), "no answer on port 4011: {out}");
        let resp = std::fs::read(&resp_path)?;
        let from = std::net::SocketAddrV4::new(PROXY_SERVER, 4011);
        let to = std::net::SocketAddrV4::new(lease.ip, 0);
        let ack = DhcpPacket::parse(&resp, from, to)
            .with_context(|| format!("the 4011 answer ({} bytes) is not DHCP", resp.len()))?;
        check_proxy_reply(&ack, ACK)?;
        ensure!(
            ack.xid == xid && ack.is_from(mac),
            "ACK for another request: {ack}"
        );
        ensure!(ack.ciaddr == lease.ip, "ACK ciaddr {}: {ack}", ack.ciaddr);
        let mut machine_id = vec![0u8];
        machine_id.extend_from_slice(&uuid);
        ensure!(
            ack.option(97) == Some(machine_id.as_slice()),
            "the proxy ACK should echo option 97: {ack}"
        );
        eprintln!(
            "dnsmasq gave {}; agent's proxy offer and 4011 ACK: next-server {}, file {}",
            lease.ip, ack.siaddr, ack.file
        );
        lab.ensure_running()
    })();
    lab.finish(test, result)
}

/// QEMU's e1000 iPXE option ROM, as `pxe_boot` looks for it.
fn ipxe_rom_present() -> bool {
    [
        "/usr/lib/ipxe/qemu/efi-e1000.rom",
        "/usr/share/qemu/efi-e1000.rom",
        "/usr/lib/ipxe/qemu/pxe-e1000.rom",
        "/usr/share/qemu/pxe-e1000.rom",
    ]
    .iter()
    .any(|p| Path::new(p).is_file())
}

/// How long the guest may take to each milestone (TCG on a busy machine).
const GUEST_STEP: Duration = Duration::from_secs(90);

#[test]
fn proxy_dhcp_ipxe_guest() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "dnsmasq", "qemu-system-x86_64"], Ok(()));
    if !ipxe_rom_present() {
        rackboot_tests::skip(
            "needs QEMU's e1000 iPXE option ROM: apt-get install ipxe-qemu, \
             or run tests/scripts/install-deps.sh",
        );
        return Ok(());
    }
    let test = "proxy_dhcp_ipxe_guest";
    let mac = "52:54:00:d2:00:02";
    let script = format!("ipxe/{}.ipxe", mac.replace(':', "-"));
    let srv = Netns::create("rbdq-s")?;
    let site = Netns::create("rbdq-d")?;
    let mut lab = Lab::new("rbdq")?;
    let result = (|| {
        proxy_site(&srv, &site, &mut lab)?;
        srv.add_tap("rbp-tap")?;
        srv.attach_to_bridge("rbp-tap", PROXY_BRIDGE)?;
        let mut guest =
            QemuGuest::spawn_in(&srv, QemuOpts::network_boot("proxy-ipxe", "rbp-tap", mac))?;
        // iPXE configures net0 with dnsmasq's lease ...
        let configured = guest.wait_for_line_matching(
            "iPXE's `net0: <address>/<mask> gw <router>` line",
            GUEST_STEP,
            |l| l.trim_start().starts_with("net0: ") && l.contains(" gw "),
        )?;
        let addr: Ipv4Addr = configured
            .trim_start()
            .trim_start_matches("net0: ")
            .split('/')
            .next()
            .unwrap_or_default()
            .parse()
            .with_context(|| format!("no address in {configured:?}"))?;
        ensure!(
            (u32::from(SITE_FIRST)..=u32::from(SITE_LAST)).contains(&u32::from(addr)),
            "iPXE configured {addr}, outside dnsmasq's range {SITE_FIRST}-{SITE_LAST}: {configured:?}"
        );
        ensure!(
            configured.contains(&format!(" gw {DNSMASQ_ADDR}")),
            "iPXE's router should be dnsmasq's: {configured:?}"
        );
        // ... and boots what the agent's proxy reply names: for iPXE (user
        // class iPXE) the node's script, from the agent over TFTP.
        guest.wait_for_line(&format!("Next server: {PROXY_SERVER}"), GUEST_STEP)?;
        guest.wait_for_line(&format!("Filename: {script}"), GUEST_STEP)?;
        let node = wait_node(&lab, &srv, mac)?;
        guest.wait_for_line(
            &format!("rackboot: node {} has no image assigned yet", node.name),
            GUEST_STEP,
        )?;
        eprintln!(
            "iPXE: {addr} from dnsmasq, script {script} from the agent for node {} ({:.1} s after QEMU started)",
            node.name,
            guest.elapsed().as_secs_f64()
        );
        lab.ensure_running()
    })();
    lab.finish(test, result)
}

// ---- relay -----------------------------------------------------------------

/// The agent's link to the router.
const RELAY_AGENT_CIDR: &str = "10.215.1.2/24";
const RELAY_AGENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 215, 1, 2);
const RELAY_UP_CIDR: &str = "10.215.1.1/24";
const RELAY_UP_ADDR: Ipv4Addr = Ipv4Addr::new(10, 215, 1, 1);
/// The router on the client's subnet: the relay's `giaddr`.
const RELAY_DOWN_CIDR: &str = "10.215.2.1/24";
const RELAY_DOWN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 215, 2, 1);
const FAR_NET: Ipv4Addr = Ipv4Addr::new(10, 215, 2, 0);
const FAR_PREFIX: u32 = 24;
/// The agent's extra flags for the relayed rack: the rack subnet behind the
/// relay, and the relay as the nodes' router.
const RELAY_AGENT_ARGS: &[&str] = &["--rack-subnet", "10.215.2.0/24", "--gateway", "10.215.2.1"];

#[test]
fn relay_serves_far_subnet() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "busybox", "dhcrelay", "tcpdump", "sysctl"], Ok(()));
    let test = "relay_serves_far_subnet";
    let mac = "52:54:00:d3:00:01";
    let srv = Netns::create("rbdr-s")?;
    let router = Netns::create("rbdr-r")?;
    let client = Netns::create("rbdr-c")?;
    let mut lab = Lab::new("rbdr")?;
    let result = (|| {
        veth_pair(
            &srv,
            "rbr-ag",
            Some(RELAY_AGENT_CIDR),
            &router,
            "rbr-up",
            Some(RELAY_UP_CIDR),
        )?;
        veth_pair(
            &router,
            "rbr-down",
            Some(RELAY_DOWN_CIDR),
            &client,
            CLIENT_IF,
            None,
        )?;
        client.ip(&["link", "set", "dev", CLIENT_IF, "address", mac])?;
        srv.ip(&["route", "add", "10.215.2.0/24", "via", "10.215.1.1"])?;
        router.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;

        lab.start_rackboot(&srv, "rbr-ag", RELAY_AGENT_ARGS)?;
        let mut cmd = router.exec("dhcrelay");
        cmd.args(["-4", "-d", "-a", "-pf"])
            .arg(lab.path("dhcrelay.pid"))
            .args(["-iu", "rbr-up", "-id", "rbr-down", "10.215.1.2"]);
        lab.spawn("dhcrelay", cmd, "Socket/fallback")?;

        let dir = lab.dir().to_path_buf();
        let cap = Capture::start(&router, "rbr-up", &dir, "relay-up")?;
        let lease = udhcpc(&client, CLIENT_IF, &dir, "udhcpc", &[])?;
        let from_agent = |p: &DhcpPacket| *p.src.ip() == RELAY_AGENT_ADDR && p.is_from(mac);
        cap.wait_for(
            "the agent's ACK to the relay",
            Duration::from_secs(10),
            |ps| {
                ps.iter()
                    .any(|p| from_agent(p) && p.message_type() == Some(ACK))
            },
        )?;
        let packets = cap.stop()?;
        let all = dhcpcap::list(&packets);

        // What the relay sent: giaddr and option 82.
        let relayed: Vec<&DhcpPacket> = packets
            .iter()
            .filter(|p| p.op == BOOTREQUEST && p.is_from(mac))
            .collect();
        ensure!(!relayed.is_empty(), "nothing relayed to the agent:\n{all}");
        let mut option82 = None;
        for r in &relayed {
            ensure!(
                *r.src.ip() == RELAY_UP_ADDR
                    && r.dst == std::net::SocketAddrV4::new(RELAY_AGENT_ADDR, 67)
                    && r.giaddr == RELAY_DOWN_ADDR
                    && r.hops >= 1,
                "not a relayed request from {RELAY_UP_ADDR} with giaddr {RELAY_DOWN_ADDR}: {r}"
            );
            option82 = Some(
                r.option(82)
                    .with_context(|| format!("dhcrelay -a added no option 82: {r}"))?,
            );
        }
        let option82 = option82.context("no relayed request")?;

        // The agent answers the relay, option 82 echoed.
        let replies: Vec<&DhcpPacket> = packets.iter().filter(|p| from_agent(p)).collect();
        for want in [OFFER, ACK] {
            ensure!(
                replies.iter().any(|p| p.message_type() == Some(want)),
                "no reply of type {want} from the agent:\n{all}"
            );
        }
        for p in &replies {
            ensure!(
                p.dst == std::net::SocketAddrV4::new(RELAY_DOWN_ADDR, 67)
                    && p.giaddr == RELAY_DOWN_ADDR,
                "the agent's reply did not go to the relay at giaddr {RELAY_DOWN_ADDR}:67: {p}"
            );
            ensure!(
                p.option(82) == Some(option82),
                "option 82 not echoed (sent {option82:02x?}): {p}"
            );
            ensure!(
                p.yiaddr == lease.ip,
                "agent offered {} but the client bound {}",
                p.yiaddr,
                lease.ip
            );
        }

        // The client has its node's address.
        let node = node_of(&lab, &srv, mac)?;
        ensure!(
            lease.ip == node.address,
            "udhcpc bound {} but the coordinator gave node {} {}",
            lease.ip,
            node.number,
            node.address
        );
        ensure!(
            lease.hostname.as_deref() == Some(node.name.as_str()),
            "hostname {:?}, want {:?}",
            lease.hostname,
            node.name
        );
        ensure!(
            lease.server_id == Some(RELAY_AGENT_ADDR),
            "server identifier {:?}",
            lease.server_id
        );
        ensure_has_address(&client, CLIENT_IF, lease.ip)?;

        // ... on the client's own subnet, routed by the relay.
        ensure!(
            in_subnet(lease.ip, FAR_NET, FAR_PREFIX),
            "the relayed client got {} (mask {:?}, router {:?}), which is not on its \
             subnet {FAR_NET}/{FAR_PREFIX} behind the relay {RELAY_DOWN_ADDR}",
            lease.ip,
            lease.mask,
            lease.router
        );
        ensure!(
            lease.mask == Some(Ipv4Addr::new(255, 255, 255, 0)),
            "mask {:?}",
            lease.mask
        );
        ensure!(
            lease.router == Some(RELAY_DOWN_ADDR),
            "router {:?}, want the relay {RELAY_DOWN_ADDR}",
            lease.router
        );
        // And it works: the agent answers a ping through the router.
        let out =
            run_output(
                client
                    .exec("busybox")
                    .args(["ping", "-c", "1", "-W", "3", "10.215.1.2"]),
            )?;
        ensure!(
            out.status.success(),
            "the client at {} cannot reach the agent: {}",
            lease.ip,
            String::from_utf8_lossy(&out.stdout)
        );
        lab.ensure_running()
    })();
    lab.finish(test, result)
}

mod unit {
    use super::*;

    #[test]
    fn last_event_takes_the_last_matching_block() {
        let text = "== deconfig\ninterface=x\n== bound\nip=10.0.0.2\nrouter=10.0.0.1 10.0.0.9\n\
                    == renew\nip=10.0.0.3\n== deconfig\nip=\n";
        let vars = last_event(text, &["bound", "renew"]).unwrap_or_default();
        assert_eq!(vars.get("ip").map(String::as_str), Some("10.0.0.3"));
        let vars = last_event(text, &["bound"]).unwrap_or_default();
        assert_eq!(vars.get("ip").map(String::as_str), Some("10.0.0.2"));
        assert!(last_event(text, &["BOUND"]).is_none());
    }

    #[test]
    fn subnets() {
        let net = Ipv4Addr::new(10, 215, 2, 0);
        assert!(in_subnet(Ipv4Addr::new(10, 215, 2, 9), net, 24));
        assert!(!in_subnet(Ipv4Addr::new(10, 215, 1, 3), net, 24));
        assert!(in_subnet(Ipv4Addr::new(1, 2, 3, 4), net, 0));
        assert_eq!(
            mac_bytes("52:54:00:d1:00:0a").ok(),
            Some([0x52, 0x54, 0, 0xd1, 0, 0x0a])
        );
        assert!(mac_bytes("52:54:00").is_err());
    }
}
