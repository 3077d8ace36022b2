//! The coordinator's settings (its own crate, pure: no I/O beyond reading
//! the file, so the fuzz target `coordinator_config` can drive it without
//! the coordinator). Replica configuration in two layers: [`FileConfig`] is what a TOML file
//! says (serde, unknown keys refused), [`Settings`] is the validated result
//! after command-line flags are laid over it. Every error names the file (or
//! flag), the key and the problem.
//!
//! ```toml
//! id = 1                          # this replica (non-zero)
//! listen = "10.1.0.1:50051"       # gRPC: admin, agents and peers
//! data_dir = "/var/lib/rackboot"  # Raft log, snapshots, blobs
//! tick_ms = 50                    # Raft tick (default 50)
//! election_ticks = 10             # election timeout in ticks (default 10)
//! heartbeat_ticks = 2             # heartbeat interval in ticks (default 2)
//! snapshot_every = 10000          # applied entries between snapshots (default 10000)
//! join = false                    # start empty and wait to be added (default false)
//! metrics_listen = "0.0.0.0:9100" # Prometheus /metrics (default off)
//! upload_grace_secs = 3600        # keep interrupted pushes and unreferenced blobs (default 3600)
//! tls_ca = "/etc/rackboot/ca.pem" # mutual TLS (rackboot certs); all three
//! tls_cert = "/etc/rackboot/c1.pem"
//! tls_key = "/etc/rackboot/c1.key"
//! # plaintext = true              # no TLS: a lab only (refused with tls_*)
//!
//! [peers]                         # every voter, this one included
//! 1 = "10.1.0.1:50051"
//! 2 = "10.1.0.2:50051"
//! 3 = "10.1.0.3:50051"
//! ```
//!
//! ## Invariants
//! - A [`Settings`] exists only for a configuration whose every key parsed
//!   and validated; nothing downstream re-checks it.
//! - Unknown keys are errors, never ignored.
//!
//! ## Must never depend on
//! the coordinator crate, tokio, sockets or the Raft engine: it is parsed
//! before any of them starts, and fuzzed alone.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default gRPC listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./rackboot-coordinator-data";
/// Default Raft tick.
/// (With the default 10 election ticks, a follower starts an election after
/// 0.5–1 s without a leader: failover well under 2 s.)
pub const DEFAULT_TICK_MS: u64 = 50;
/// Default election timeout in ticks.
pub const DEFAULT_ELECTION_TICKS: usize = 10;
/// Default heartbeat interval in ticks.
pub const DEFAULT_HEARTBEAT_TICKS: usize = 2;
/// Default number of applied entries between snapshots.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 10_000;
/// Default time interrupted pushes and unreferenced blobs are kept.
pub const DEFAULT_UPLOAD_GRACE: Duration = Duration::from_secs(3600);

/// The configuration file as written. Every key is optional; a flag given on
/// the command line wins over the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// This replica's id (non-zero). Default 1.
    pub id: Option<u64>,
    /// gRPC listen address. Default [`DEFAULT_LISTEN`].
    pub listen: Option<String>,
    /// Data directory. Default [`DEFAULT_DATA_DIR`].
    pub data_dir: Option<PathBuf>,
    /// Voters by id (TOML keys are strings: `1 = "host:port"`). Default: this
    /// replica alone.
    #[serde(default)]
    pub peers: BTreeMap<String, String>,
    /// Raft tick in milliseconds. Default [`DEFAULT_TICK_MS`].
    pub tick_ms: Option<u64>,
    /// Election timeout in ticks. Default [`DEFAULT_ELECTION_TICKS`].
    pub election_ticks: Option<usize>,
    /// Heartbeat interval in ticks. Default [`DEFAULT_HEARTBEAT_TICKS`].
    pub heartbeat_ticks: Option<usize>,
    /// Applied entries between snapshots. Default [`DEFAULT_SNAPSHOT_EVERY`].
    pub snapshot_every: Option<u64>,
    /// Start with empty storage and no voters, waiting to be added to a
    /// running cluster (`rackboot cluster add`). Default false.
    pub join: Option<bool>,
    /// Prometheus `/metrics` listen address. Default: off.
    pub metrics_listen: Option<String>,
    /// Seconds an interrupted push (its verified groups, for resuming) and
    /// a blob no committed image names are kept. Default 3600.
    pub upload_grace_secs: Option<u64>,
    /// Cluster CA (`rackboot certs init`): with `tls_cert` and `tls_key`,
    /// gRPC is served over mutual TLS. Without them the replica refuses to
    /// serve unless `plaintext = true`.
    pub tls_ca: Option<PathBuf>,
    /// This replica's certificate (`rackboot certs issue coordinator`).
    pub tls_cert: Option<PathBuf>,
    /// Its key.
    pub tls_key: Option<PathBuf>,
    /// Serve gRPC without TLS (anyone who reaches the port administers the
    /// cluster): only for a lab. Default false.
    pub plaintext: Option<bool>,
}

/// Values given as command-line flags (each overrides the file).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--id`.
    pub id: Option<u64>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data`.
    pub data_dir: Option<PathBuf>,
    /// `--peer ID=ADDR`, repeated.
    pub peers: Vec<String>,
    /// `--tick-ms`.
    pub tick_ms: Option<u64>,
    /// `--election-ticks`.
    pub election_ticks: Option<usize>,
    /// `--heartbeat-ticks`.
    pub heartbeat_ticks: Option<usize>,
    /// `--snapshot-every`.
    pub snapshot_every: Option<u64>,
    /// `--join`.
    pub join: bool,
    /// `--metrics-listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// `--upload-grace-secs`.
    pub upload_grace_secs: Option<u64>,
    /// `--tls-ca`.
    pub tls_ca: Option<PathBuf>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `--plaintext`.
    pub plaintext: bool,
}

/// Validated settings of one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// This replica.
    pub id: u64,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Voters (or, with `join`, replicas to talk to) by id.
    pub peers: BTreeMap<u64, String>,
    /// Raft tick.
    pub tick: Duration,
    /// Election timeout in ticks.
    pub election_ticks: usize,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: usize,
    /// Applied entries between snapshots.
    pub snapshot_every: u64,
    /// Start empty and wait to be added.
    pub join: bool,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// How long interrupted pushes and unreferenced blobs are kept.
    pub upload_grace: Duration,
    /// Mutual TLS, if configured.
    pub tls: Option<rackboot_proto::tls::TlsFiles>,
    /// Plaintext explicitly asked for (`--plaintext`, `plaintext = true`).
    pub plaintext: bool,
    /// Where the TLS / plaintext choice came from, for [`Settings::transport`].
    transport_origin: TransportOrigin,
}

/// Whether the transport settings came from the file or the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransportOrigin {
    Flag,
    File,
}

/// How gRPC is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport<'a> {
    /// Mutual TLS with these files.
    Tls(&'a rackboot_proto::tls::TlsFiles),
    /// Plaintext, explicitly asked for.
    Plaintext,
}

impl Settings {
    /// Names of the settings that differ in `new`.
    pub fn changed(&self, new: &Settings) -> Vec<&'static str> {
        let mut out = Vec::new();
        macro_rules! cmp {
            ($($f:ident),*) => {$(
                if self.$f != new.$f {
                    out.push(stringify!($f));
                }
            )*};
        }
        cmp!(
            id,
            listen,
            data_dir,
            peers,
            tick,
            election_ticks,
            heartbeat_ticks,
            snapshot_every,
            join,
            upload_grace
        );
        out
    }

    /// How to serve gRPC: mutual TLS, or plaintext only when explicitly
    /// asked for. Neither (or both) is an error naming the keys, checked by
    /// `--check-config` and before serving (not by offline backup/restore,
    /// which serve nothing). `file` names the configuration file in errors.
    pub fn transport(&self, file: Option<&Path>) -> Result<Transport<'_>, ConfigError> {
        let origin = match (self.transport_origin, file) {
            (TransportOrigin::File, Some(p)) => Origin::File(p),
            _ => Origin::Flag,
        };
        match (&self.tls, self.plaintext) {
            (Some(t), false) => Ok(Transport::Tls(t)),
            (None, true) => Ok(Transport::Plaintext),
            (Some(_), true) => Err(origin.err(
                "plaintext",
                "plaintext contradicts tls_ca/tls_cert/tls_key: choose one",
            )),
            (None, false) => Err(origin.err(
                "tls_ca",
                "no TLS configured: set tls_ca, tls_cert and tls_key (`rackboot certs`), \
                 or ask for plaintext explicitly (--plaintext / plaintext = true; a lab only: \
                 anyone who reaches the port administers the cluster)",
            )),
        }
    }
}

pub use rackboot_config::{ConfigError, Origin};

/// Parse a configuration file's text (`path` only names it in errors).
pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    rackboot_config::parse_toml(path, text)
}

/// Read and parse a configuration file.
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    rackboot_config::load_toml(path)
}

/// Lay the flags over the file (if any) and validate the result.
pub fn resolve(
    file: Option<(&Path, FileConfig)>,
    flags: &Overrides,
) -> Result<Settings, ConfigError> {
    let (path, fc) = match file {
        Some((p, fc)) => (Some(p), fc),
        None => (None, FileConfig::default()),
    };
    let file_origin = path.map(Origin::File).unwrap_or(Origin::Flag);
    let pick = |flag_set: bool| if flag_set { Origin::Flag } else { file_origin };

    let id_origin = pick(flags.id.is_some());
    let id = flags.id.or(fc.id).unwrap_or(1);
    if id == 0 {
        return Err(id_origin.err("id", "0 is reserved; use 1, 2, ..."));
    }

    let listen_origin = pick(flags.listen.is_some());
    let listen_text = flags
        .listen
        .clone()
        .or(fc.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listen: SocketAddr = listen_text.parse().map_err(|e| {
        listen_origin.err(
            "listen",
            format!("'{listen_text}' is not an IP:PORT socket address ({e})"),
        )
    })?;

    let data_dir = flags
        .data_dir
        .clone()
        .or(fc.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    if data_dir.as_os_str().is_empty() {
        return Err(pick(flags.data_dir.is_some()).err("data_dir", "must not be empty"));
    }

    let mut peers = BTreeMap::new();
    if flags.peers.is_empty() {
        for (k, addr) in &fc.peers {
            let key = format!("peers.{k}");
            let pid: u64 = k
                .parse()
                .map_err(|_| file_origin.err(&key, format!("'{k}' is not a replica id")))?;
            if pid == 0 {
                return Err(file_origin.err(&key, "id 0 is reserved"));
            }
            check_address(addr).map_err(|p| file_origin.err(&key, p))?;
            peers.insert(pid, addr.clone());
        }
    } else {
        for p in &flags.peers {
            let key = format!("peer {p}");
            let (k, addr) = p
                .split_once('=')
                .ok_or_else(|| Origin::Flag.err(&key, "expected ID=HOST:PORT"))?;
            let pid: u64 = k
                .parse()
                .map_err(|_| Origin::Flag.err(&key, format!("'{k}' is not a replica id")))?;
            if pid == 0 {
                return Err(Origin::Flag.err(&key, "id 0 is reserved"));
            }
            check_address(addr).map_err(|pr| Origin::Flag.err(&key, pr))?;
            peers.insert(pid, addr.to_string());
        }
    }
    let join = flags.join || fc.join.unwrap_or(false);
    let peers_origin = pick(!flags.peers.is_empty());
    if peers.is_empty() {
        if join {
            return Err(peers_origin.err(
                "peers",
                "a joining replica needs the addresses of the running replicas",
            ));
        }
        peers.insert(id, listen.to_string());
    }
    if join {
        peers.entry(id).or_insert_with(|| listen.to_string());
    } else if !peers.contains_key(&id) {
        return Err(peers_origin.err(
            "peers",
            format!("this replica's id {id} is not among the peers"),
        ));
    }

    let tick_origin = pick(flags.tick_ms.is_some());
    let tick_ms = flags.tick_ms.or(fc.tick_ms).unwrap_or(DEFAULT_TICK_MS);
    if !(1..=10_000).contains(&tick_ms) {
        return Err(tick_origin.err("tick_ms", format!("{tick_ms} is outside 1..=10000")));
    }
    let hb_origin = pick(flags.heartbeat_ticks.is_some());
    let heartbeat_ticks = flags
        .heartbeat_ticks
        .or(fc.heartbeat_ticks)
        .unwrap_or(DEFAULT_HEARTBEAT_TICKS);
    if heartbeat_ticks == 0 {
        return Err(hb_origin.err("heartbeat_ticks", "must be at least 1"));
    }
    let el_origin = pick(flags.election_ticks.is_some());
    let election_ticks = flags
        .election_ticks
        .or(fc.election_ticks)
        .unwrap_or(DEFAULT_ELECTION_TICKS);
    if election_ticks <= heartbeat_ticks {
        return Err(el_origin.err(
            "election_ticks",
            format!("{election_ticks} must be greater than heartbeat_ticks ({heartbeat_ticks})"),
        ));
    }
    let snap_origin = pick(flags.snapshot_every.is_some());
    let snapshot_every = flags
        .snapshot_every
        .or(fc.snapshot_every)
        .unwrap_or(DEFAULT_SNAPSHOT_EVERY);
    if snapshot_every == 0 {
        return Err(snap_origin.err("snapshot_every", "must be at least 1"));
    }
    let metrics_listen = match (flags.metrics_listen, fc.metrics_listen) {
        (Some(a), _) => Some(a),
        (None, Some(text)) => Some(text.parse::<SocketAddr>().map_err(|e| {
            file_origin.err(
                "metrics_listen",
                format!("'{text}' is not an IP:PORT socket address ({e})"),
            )
        })?),
        (None, None) => None,
    };
    let grace_origin = pick(flags.upload_grace_secs.is_some());
    let upload_grace_secs = flags
        .upload_grace_secs
        .or(fc.upload_grace_secs)
        .unwrap_or(DEFAULT_UPLOAD_GRACE.as_secs());
    if upload_grace_secs == 0 {
        return Err(grace_origin.err(
            "upload_grace_secs",
            "must be at least 1 (a push is committed after its blobs are stored)",
        ));
    }
    let tls_origin =
        pick(flags.tls_ca.is_some() || flags.tls_cert.is_some() || flags.tls_key.is_some());
    let tls = rackboot_proto::tls::TlsFiles::from_parts(
        flags.tls_ca.clone().or(fc.tls_ca),
        flags.tls_cert.clone().or(fc.tls_cert),
        flags.tls_key.clone().or(fc.tls_key),
    )
    .map_err(|p| tls_origin.err("tls_ca", p))?;
    if let Some(t) = &tls {
        for (key, path) in [
            ("tls_ca", &t.ca),
            ("tls_cert", &t.cert),
            ("tls_key", &t.key),
        ] {
            if !path.is_file() {
                return Err(
                    tls_origin.err(key, format!("{} is not a readable file", path.display()))
                );
            }
        }
    }
    let plaintext = flags.plaintext || fc.plaintext.unwrap_or(false);
    let transport_flag = flags.plaintext
        || flags.tls_ca.is_some()
        || flags.tls_cert.is_some()
        || flags.tls_key.is_some();
    Ok(Settings {
        tls,
        plaintext,
        transport_origin: if transport_flag || path.is_none() {
            TransportOrigin::Flag
        } else {
            TransportOrigin::File
        },
        metrics_listen,
        upload_grace: Duration::from_secs(upload_grace_secs),
        id,
        listen,
        data_dir,
        peers,
        tick: Duration::from_millis(tick_ms),
        election_ticks,
        heartbeat_ticks,
        snapshot_every,
        join,
    })
}

/// `host:port` with a numeric port.
fn check_address(addr: &str) -> Result<(), String> {
    let hostport = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| format!("'{addr}' is not HOST:PORT"))?;
    if host.is_empty() {
        return Err(format!("'{addr}' has no host"));
    }
    port.parse::<u16>()
        .map_err(|_| format!("'{addr}': port '{port}' is not a number 0-65535"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn file(text: &str) -> Result<Settings, ConfigError> {
        let p = Path::new("/etc/rb.toml");
        let fc = parse_file(p, text)?;
        resolve(Some((p, fc)), &Overrides::default())
    }

    #[test]
    fn full_file_validates() {
        let s = file(
            "id = 2\nlisten = \"127.0.0.1:7002\"\ndata_dir = \"/d\"\ntick_ms = 50\n\
             election_ticks = 12\nheartbeat_ticks = 3\nsnapshot_every = 500\n\
             [peers]\n1 = \"127.0.0.1:7001\"\n2 = \"127.0.0.1:7002\"\n3 = \"127.0.0.1:7003\"\n",
        )
        .unwrap();
        assert_eq!(s.id, 2);
        assert_eq!(s.peers.len(), 3);
        assert_eq!(s.tick, Duration::from_millis(50));
        assert_eq!((s.election_ticks, s.heartbeat_ticks), (12, 3));
        assert_eq!(s.snapshot_every, 500);
        assert!(!s.join);
    }

    #[test]
    fn defaults_make_a_single_replica() {
        let s = file("").unwrap();
        assert_eq!(s.id, 1);
        assert_eq!(s.peers, BTreeMap::from([(1, DEFAULT_LISTEN.to_string())]));
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        let e = file("id = 1\nbogus = 3\n").unwrap_err();
        assert_eq!(e.source_name, "config /etc/rb.toml");
        assert_eq!(e.key, "bogus");
        assert!(e.problem.contains("unknown field"), "{e}");

        let e = file("id = \"one\"\n").unwrap_err();
        assert_eq!(e.key, "id");

        let e = file("[peers]\nx = \"a:1\"\n").unwrap_err();
        assert_eq!(e.key, "peers.x");

        let e = file("[peers]\n1 = \"nohost\"\n").unwrap_err();
        assert_eq!(e.key, "peers.1");

        let e = file("[peers]\n2 = \"a:1\"\n").unwrap_err();
        assert_eq!(e.key, "peers");
        assert!(e.problem.contains("id 1"));

        let e = file("election_ticks = 2\nheartbeat_ticks = 2\n").unwrap_err();
        assert_eq!(e.key, "election_ticks");

        let e = file("listen = \"nowhere\"\n").unwrap_err();
        assert_eq!(e.key, "listen");
        assert!(
            e.to_string()
                .starts_with("config /etc/rb.toml: key `listen`: ")
        );
    }

    #[test]
    fn flags_override_the_file() {
        let p = Path::new("/c.toml");
        let fc = parse_file(p, "id = 1\ntick_ms = 100\n").unwrap();
        let flags = Overrides {
            tick_ms: Some(20),
            ..Default::default()
        };
        let s = resolve(Some((p, fc)), &flags).unwrap();
        assert_eq!(s.tick, Duration::from_millis(20));
        let flags = Overrides {
            tick_ms: Some(0),
            ..Default::default()
        };
        let e = resolve(None, &flags).unwrap_err();
        assert_eq!(e.source_name, "command line");
        assert_eq!(e.key, "tick_ms");
    }

    #[test]
    fn join_needs_peers_and_adds_itself() {
        let e = file("join = true\n").unwrap_err();
        assert_eq!(e.key, "peers");
        let s = file(
            "id = 4\nlisten = \"127.0.0.1:7004\"\njoin = true\n[peers]\n1 = \"127.0.0.1:7001\"\n",
        )
        .unwrap();
        assert!(s.join);
        assert_eq!(s.peers.get(&4).map(String::as_str), Some("127.0.0.1:7004"));
    }

    #[test]
    fn plaintext_only_when_asked_for() {
        let p = Path::new("/etc/rb.toml");
        let e = file("").unwrap().transport(Some(p)).unwrap_err();
        assert_eq!(e.key, "tls_ca");
        assert_eq!(e.source_name, "config /etc/rb.toml");
        assert!(e.problem.contains("--plaintext"), "{e}");

        let s = file("plaintext = true\n").unwrap();
        assert_eq!(s.transport(Some(p)).unwrap(), Transport::Plaintext);

        let flags = Overrides {
            plaintext: true,
            ..Default::default()
        };
        let s = resolve(None, &flags).unwrap();
        assert_eq!(s.transport(None).unwrap(), Transport::Plaintext);

        let dir = std::env::temp_dir().join(format!("rb-cfg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["ca.pem", "c.pem", "c.key"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        let tls = format!(
            "tls_ca = \"{0}/ca.pem\"\ntls_cert = \"{0}/c.pem\"\ntls_key = \"{0}/c.key\"\n",
            dir.display()
        );
        let s = file(&tls).unwrap();
        assert!(matches!(s.transport(Some(p)).unwrap(), Transport::Tls(_)));
        let e = file(&format!("{tls}plaintext = true\n"))
            .unwrap()
            .transport(Some(p))
            .unwrap_err();
        assert_eq!(e.key, "plaintext");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
