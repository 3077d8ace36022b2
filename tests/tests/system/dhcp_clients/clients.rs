//! Drivers of the DHCP clients under test: busybox `udhcpc`, ISC `dhclient`
//! and `dhcpcd`, each run in a client namespace with a script of ours that
//! records what the client was told ([`Lease`]), and puts the address on the
//! interface as a real one would.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use rackboot_tests::daemon::run_with_timeout;
use rackboot_tests::netns::Netns;

use super::lab::wait_until;

/// How long one client run may take (two DISCOVERs, a REQUEST, slack).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(45);
/// The client's interface in its namespace.
pub(super) const CLIENT_IF: &str = "rbd-c0";

/// What a client's script was told when it bound a lease.
#[derive(Debug, Clone)]
pub(super) struct Lease {
    pub(super) client: String,
    pub(super) ip: Ipv4Addr,
    pub(super) mask: Option<Ipv4Addr>,
    pub(super) router: Option<Ipv4Addr>,
    pub(super) hostname: Option<String>,
    pub(super) lease_secs: Option<u32>,
    pub(super) server_id: Option<Ipv4Addr>,
    /// Every variable of the bound event, for messages.
    pub(super) vars: BTreeMap<String, String>,
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
pub(super) fn last_event(text: &str, events: &[&str]) -> Option<BTreeMap<String, String>> {
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

pub(super) fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// Runs busybox `udhcpc -q -n` (10 DISCOVERs 2 s apart at most) with
/// `extra` flags on `ifname` in `ns`. Its script records every event in
/// `<tag>.env` and, like a real one, puts the address (and default route)
/// on the interface.
pub(super) fn udhcpc(
    ns: &Netns,
    ifname: &str,
    dir: &Path,
    tag: &str,
    extra: &[&str],
) -> Result<Lease> {
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
pub(super) fn dhclient(ns: &Netns, ifname: &str, dir: &Path, tag: &str) -> Result<Lease> {
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
    let bound = ["BOUND", "REBOOT"];
    let bound_in_time = wait_until(CLIENT_TIMEOUT, Duration::from_millis(50), || {
        let text = std::fs::read_to_string(&env).unwrap_or_default();
        if last_event(&text, &bound).is_some() {
            return Ok(Some(()));
        }
        if let Some(status) = process.try_wait()? {
            bail!(
                "dhclient exited ({status}) without a lease:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Ok(None)
    })?;
    if bound_in_time.is_none() {
        bail!(
            "dhclient bound no lease in {CLIENT_TIMEOUT:?}:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
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
pub(super) fn dhcpcd(
    ns: &Netns,
    ifname: &str,
    dir: &Path,
    tag: &str,
    extra: &[&str],
) -> Result<Lease> {
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
