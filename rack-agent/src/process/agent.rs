//! Putting an agent together: local view (persisted), blob cache, file
//! table, boot timeline, DHCP, TFTP, HTTP and syslog servers, metrics, and
//! the tasks that follow the coordinator and ship logs.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use rackboot_dhcp_core::{BootFiles, ServerConfig};
use rackboot_proto::v1 as pb;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use rackboot_agent_domain::bootinfo::Site;
use rackboot_agent_domain::view::{RackView, ViewError};

pub use crate::config::settings::AgentConfig;
use crate::process::reload::AgentControl;
use crate::serve::dhcp::{self, DhcpShellConfig, DhcpStats};
use crate::serve::net::bind_udp;
use crate::serve::syslog::SyslogStats;
use crate::store::cache::{BlobCache, CacheError};
use crate::store::files::{FileTable, load_static_root};
use crate::store::view_file;
use crate::timeline::TimelineHandle;
use crate::upstream::follow::{self, SyncConfig};

/// The agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A socket could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The data directory is unusable.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The static root cannot be read.
    #[error("static root {path}: {source}")]
    StaticRoot {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The cache cannot open.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The persisted view is unreadable.
    #[error(transparent)]
    View(#[from] ViewError),
    /// The probe-token secret cannot be read or made.
    #[error("probe key: {0}")]
    ProbeKey(#[from] crate::store::probe_key::ProbeKeyError),
}

/// How often the static root is checked for changed files.
pub const STATIC_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// (path, size, mtime) of every file under `dir`, sorted: a change stamp.
/// Blocking: called on blocking threads only.
#[allow(clippy::disallowed_methods, reason = "runs on spawn_blocking")]
fn static_stamp(dir: &std::path::Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else {
                let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                out.push((path, meta.len(), mtime));
            }
        }
    }
    out.sort();
    out
}

/// A running agent.
pub struct Agent {
    /// Live settings (SIGHUP).
    pub control: AgentControl,
    /// The current rack view.
    pub view: watch::Receiver<Arc<RackView>>,
    /// The current file table.
    pub files: watch::Receiver<Arc<FileTable>>,
    /// Where DHCP listens.
    pub dhcp_addr: SocketAddr,
    /// Where TFTP listens.
    pub tftp_addr: SocketAddr,
    /// Where HTTP listens, if enabled.
    pub http_addr: Option<SocketAddr>,
    /// Where syslog listens, if enabled.
    pub syslog_addr: Option<SocketAddr>,
    /// Where the metrics listener listens, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// Boot sessions.
    pub sessions: TimelineHandle,
    /// Syslog counters.
    pub syslog_stats: Arc<SyslogStats>,
    /// DHCP counters.
    pub dhcp_stats: Arc<DhcpStats>,
    /// Metrics (served on `/metrics` of the HTTP port and of the metrics
    /// listener).
    pub metrics: Arc<crate::telemetry::metrics::AgentMetrics>,
    /// Background tasks.
    pub tasks: Vec<JoinHandle<()>>,
}

/// Start an agent.
pub async fn start(cfg: AgentConfig, shutdown: CancellationToken) -> Result<Agent, AgentError> {
    #[allow(clippy::disallowed_methods, reason = "once, before anything is served")]
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| AgentError::DataDir {
        path: cfg.data_dir.display().to_string(),
        source,
    })?;
    let key_dir = cfg.data_dir.clone();
    let probe_key =
        tokio::task::spawn_blocking(move || crate::store::probe_key::load_or_create(&key_dir))
            .await
            .map_err(|e| AgentError::DataDir {
                path: cfg.data_dir.display().to_string(),
                source: std::io::Error::other(e),
            })??;
    let view_path = cfg.data_dir.join("rack-view.pb");
    let initial = view_file::load(&view_path)?.unwrap_or_default();
    if initial.revision > 0 {
        tracing::info!(
            revision = initial.revision,
            nodes = initial.nodes.len(),
            "loaded persisted rack view; serving it until the coordinator answers"
        );
    }
    let cache = Arc::new(BlobCache::open_bounded(
        &cfg.data_dir.join("cache"),
        cfg.cache_max_bytes,
    )?);
    // The stamp before the load: a change during or after it is seen.
    let statics = match cfg.static_root.clone() {
        Some(root) => {
            // A directory walk and file loads: on a blocking thread.
            let loading = root.clone();
            let (stamp, loaded) = tokio::task::spawn_blocking(move || {
                let stamp = static_stamp(&loading);
                (stamp, load_static_root(&loading))
            })
            .await
            .map_err(|e| AgentError::StaticRoot {
                path: root.display().to_string(),
                source: std::io::Error::other(e),
            })?;
            let files = loaded.map_err(|source| AgentError::StaticRoot {
                path: root.display().to_string(),
                source,
            })?;
            (Some(stamp), files)
        }
        None => (None, Default::default()),
    };
    let (statics_stamp, statics) = statics;
    tracing::info!(files = statics.len(), "static root loaded");

    let tftp_port = cfg.tftp_listen.port();
    let tftp_base = if tftp_port == 69 {
        format!("tftp://{}", cfg.server_ip)
    } else {
        format!("tftp://{}:{tftp_port}", cfg.server_ip)
    };
    let http_base = cfg.http_listen.map(|a| match a.port() {
        80 => format!("http://{}", cfg.server_ip),
        p => format!("http://{}:{p}", cfg.server_ip),
    });
    // Kernel and initrd over HTTP when it is on: TCP is faster and more
    // reliable than TFTP once the ROM has handed over to iPXE.
    let site = Site {
        rack: cfg.rack.clone(),
        server: cfg.server_ip,
        subnet: cfg.subnet,
        gateway: cfg.gateway,
        blob_base: http_base.clone().unwrap_or(tftp_base),
    };
    let ipxe_script = match &http_base {
        Some(h) => format!("{h}/ipxe/{{mac}}.ipxe"),
        None => "ipxe/{mac}.ipxe".to_string(),
    };

    let (view_tx, view_rx) = watch::channel(Arc::new(initial));
    let (session_tx, session_rx) = mpsc::channel(4096);
    let (sessions, timeline_task) =
        crate::timeline::spawn(view_rx.clone(), session_tx, shutdown.clone());
    let table = {
        let (view, cache, statics, site) = (
            view_rx.borrow().clone(),
            cache.clone(),
            statics.clone(),
            site.clone(),
        );
        let (sessions, probe_key) = (sessions.clone(), probe_key.clone());
        tokio::task::spawn_blocking(move || {
            FileTable::build(
                &view,
                &cache,
                &statics,
                &site,
                Some(sessions),
                Some(&probe_key),
            )
        })
        .await
        .map_err(|e| AgentError::DataDir {
            path: cfg.data_dir.display().to_string(),
            source: std::io::Error::other(e),
        })?
    };
    let (files_tx, files_rx) = watch::channel(Arc::new(table));
    let (statics_tx, statics_rx) = watch::channel(Arc::new(statics));
    let metrics = Arc::new(crate::telemetry::metrics::AgentMetrics::new(
        view_rx.clone(),
        cache.clone(),
        sessions.clone(),
    ));
    let cache_changed = Arc::new(Notify::new());
    let mut tasks = vec![timeline_task];

    // File table: rebuilt on every view or cache change.
    {
        let mut view_rx = view_rx.clone();
        let mut statics_rx = statics_rx.clone();
        let cache = cache.clone();
        let changed = cache_changed.clone();
        let stop = shutdown.clone();
        let sessions = sessions.clone();
        let probe_key = probe_key.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = view_rx.changed() => if r.is_err() { return },
                    r = statics_rx.changed() => if r.is_err() { return },
                    _ = changed.notified() => {}
                }
                let view = view_rx.borrow_and_update().clone();
                let statics = statics_rx.borrow_and_update().clone();
                // Renders every node's configs, and reads a new module
                // bundle's tables from its file: off the runtime.
                let (cache, site, sessions, key) = (
                    cache.clone(),
                    site.clone(),
                    sessions.clone(),
                    probe_key.clone(),
                );
                let built = tokio::task::spawn_blocking(move || {
                    FileTable::build(&view, &cache, &statics, &site, Some(sessions), Some(&key))
                })
                .await;
                match built {
                    Ok(table) => {
                        tracing::debug!(files = table.len(), "file table rebuilt");
                        files_tx.send_replace(Arc::new(table));
                    }
                    Err(e) => tracing::error!(error = %e, "file table rebuild failed"),
                }
            }
        }));
    }

    // The persisted view's blobs are verified from disk in the background,
    // one by one, each served as soon as it passes: the servers answer at
    // once (a rack with many large images would otherwise wait for every
    // group of every image to be read).
    {
        let cache = cache.clone();
        let changed = cache_changed.clone();
        let needed = view_rx.borrow().needed_blobs();
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let (mut served, mut bytes) = (0usize, 0u64);
            for blob in needed {
                if stop.is_cancelled() {
                    return;
                }
                match cache.load_from_disk(&blob).await {
                    Ok(true) => {
                        served += 1;
                        bytes += blob.size;
                        changed.notify_one();
                    }
                    Ok(false) => {
                        tracing::warn!(blob = %blob.digest, "assigned blob not in cache yet")
                    }
                    Err(e) => {
                        tracing::error!(blob = %blob.digest, error = %e, "cached blob unreadable")
                    }
                }
            }
            tracing::info!(
                blobs = served,
                bytes,
                secs = started.elapsed().as_secs_f64(),
                "cached blobs verified from disk"
            );
        }));
    }

    // Cache warden: served blobs whose file changed on disk are verified
    // again (and served again if intact, or repaired by a fetch asked for
    // at once); the table is rebuilt either way, and only once the servers
    // have it may the same blob be reported changed again.
    {
        let cache = cache.clone();
        let view_rx = view_rx.clone();
        let mut files_rx = files_rx.clone();
        let changed = cache_changed.clone();
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let recheck = cache.recheck().clone();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    () = recheck.wait() => {}
                }
                let sizes = view_rx
                    .borrow()
                    .needed_blobs()
                    .iter()
                    .map(|b| (b.digest, b.size))
                    .collect();
                files_rx.borrow_and_update();
                let checked = cache.recheck_changed(&sizes).await;
                if checked.is_empty() {
                    continue;
                }
                changed.notify_one();
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(10), files_rx.changed())
                        .await;
                recheck.done(&checked);
            }
        }));
    }

    // DHCP.
    let dhcp_socket =
        dhcp::bind(cfg.dhcp_listen, cfg.iface.as_deref()).map_err(|source| AgentError::Bind {
            what: "DHCP",
            addr: cfg.dhcp_listen,
            source,
        })?;
    let dhcp_addr = dhcp_socket.local_addr().unwrap_or(cfg.dhcp_listen);
    let core = ServerConfig {
        server_ip: cfg.server_ip,
        subnet_mask: cfg.subnet.netmask(),
        router: cfg.gateway,
        dns: vec![],
        domain: None,
        log_server: Some(cfg.server_ip),
        lease_secs: cfg.lease_secs,
        boot: BootFiles {
            bios: cfg.bios_boot_file.clone(),
            uefi_x64: cfg.uefi_x64_boot_file.clone(),
            uefi_arm64: cfg.uefi_arm64_boot_file.clone(),
            ipxe_script,
            // UEFI HTTP Boot: the x64 UEFI loader from the static root, over HTTP.
            http_boot_uri: http_base
                .as_ref()
                .filter(|_| !cfg.uefi_x64_boot_file.is_empty())
                .map(|h| format!("{h}/{}", cfg.uefi_x64_boot_file)),
            uboot_script: rackboot_agent_domain::uboot::BOOT_SCRIPT.to_string(),
        },
    };
    // What the operator configured (live reloads write it) and what the
    // DHCP server offers: the same, with loaders checked against the static
    // root, so that no client is pointed at a file that is not there.
    let (configured_tx, configured_rx) = watch::channel(Arc::new(core));
    let (problems_tx, problems_rx) = watch::channel(Arc::new(Vec::<String>::new()));
    let (core_tx, core_rx) = {
        let (offered, problems) = offered_boot_files(&configured_rx.borrow(), &statics_rx.borrow());
        problems_tx.send_replace(Arc::new(problems));
        watch::channel(Arc::new(offered))
    };
    tasks.push(tokio::spawn(choose_loaders(
        configured_rx,
        statics_rx.clone(),
        core_tx,
        problems_tx,
        shutdown.clone(),
    )));
    // Deep enough for a rack of new machines powered on at once.
    let (unknown_tx, unknown_rx) = mpsc::channel(16_384);
    let dump_unknown_tx = unknown_tx.clone();
    metrics.watch_queue("unknown_machines", &unknown_tx);
    let dhcp_stats = metrics.dhcp.clone();
    let proxy = cfg.dhcp_mode == rackboot_dhcp_core::DhcpMode::Proxy;
    if proxy {
        let addr = SocketAddr::from((cfg.server_ip, cfg.proxy_boot_port));
        let sock = bind_udp(addr, None, true).map_err(|source| AgentError::Bind {
            what: "proxyDHCP boot server",
            addr,
            source,
        })?;
        tasks.push(tokio::spawn(dhcp::run(
            sock,
            DhcpShellConfig {
                core: core_rx.clone(),
                settings: rackboot_dhcp_core::Settings {
                    role: rackboot_dhcp_core::Role::ProxyBoot,
                    accept: cfg.accept,
                    client_port: cfg.dhcp_client_port,
                    allow: rackboot_dhcp_core::guard::Allow::new(cfg.allow.clone()),
                    pool: None,
                    probe_key: Some(probe_key.clone()),
                },
                sessions: Some(sessions.clone()),
            },
            view_rx.clone(),
            unknown_tx.clone(),
            dhcp_stats.clone(),
            shutdown.clone(),
        )));
    }
    tasks.push(tokio::spawn(dhcp::run(
        dhcp_socket,
        DhcpShellConfig {
            core: core_rx.clone(),
            settings: rackboot_dhcp_core::Settings {
                role: if proxy {
                    rackboot_dhcp_core::Role::ProxyDhcp
                } else {
                    rackboot_dhcp_core::Role::Authoritative
                },
                accept: cfg.accept,
                client_port: cfg.dhcp_client_port,
                allow: rackboot_dhcp_core::guard::Allow::new(cfg.allow.clone()),
                pool: cfg
                    .provisional
                    .filter(|_| !proxy)
                    .and_then(|(first, last, secs)| {
                        rackboot_dhcp_core::ProvisionalPool::new(first, last, secs)
                    }),
                probe_key: Some(probe_key.clone()),
            },
            sessions: Some(sessions.clone()),
        },
        view_rx.clone(),
        unknown_tx,
        dhcp_stats.clone(),
        shutdown.clone(),
    )));

    // TFTP.
    let tftp_dump = Arc::new(Notify::new());
    let tftp_socket =
        bind_udp(cfg.tftp_listen, None, false).map_err(|source| AgentError::Bind {
            what: "TFTP",
            addr: cfg.tftp_listen,
            source,
        })?;
    let tftp_addr = tftp_socket.local_addr().unwrap_or(cfg.tftp_listen);
    let bind_ip = match cfg.tftp_listen.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(cfg.server_ip),
        ip => ip,
    };
    tasks.push(
        crate::serve::tftp::spawn(
            tftp_socket,
            crate::serve::tftp::TftpTask {
                bind_ip,
                config: cfg.tftp.clone(),
                files: files_rx.clone(),
                sessions: sessions.clone(),
                dump: tftp_dump.clone(),
                guard: crate::serve::tftp::TftpGuard::new(rackboot_dhcp_core::guard::Allow::new(
                    cfg.allow.clone(),
                )),
                stats: metrics.tftp.clone(),
            },
            shutdown.clone(),
        )
        .map_err(|source| AgentError::Bind {
            what: "TFTP (its thread)",
            addr: tftp_addr,
            source,
        })?,
    );

    // HTTP.
    let http_addr = match cfg.http_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Bind {
                    what: "HTTP",
                    addr,
                    source,
                })?;
            let local = l.local_addr().unwrap_or(addr);
            tasks.push(tokio::spawn(crate::serve::http::run(
                l,
                files_rx.clone(),
                view_rx.clone(),
                Some(sessions.clone()),
                crate::serve::http::HttpLimits {
                    max_connections: cfg.http_max_connections as usize,
                    reserved_for_nodes: cfg.http_max_connections as usize / 4,
                    max_per_source: cfg.http_max_per_source as usize,
                    ..crate::serve::http::HttpLimits::default()
                },
                metrics.http.clone(),
                shutdown.clone(),
            )));
            Some(local)
        }
        None => None,
    };

    // The operator listener: metrics and boot-info about any node.
    let metrics_addr = match cfg.metrics_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Bind {
                    what: "metrics",
                    addr,
                    source,
                })?;
            let local = l.local_addr().unwrap_or(addr);
            tasks.push(tokio::spawn(crate::serve::http::run_operator(
                l,
                files_rx.clone(),
                view_rx.clone(),
                metrics.exposition(),
                shutdown.clone(),
            )));
            Some(local)
        }
        None => None,
    };

    // Node logs.
    let (line_tx, line_rx) = mpsc::channel(65_536);
    metrics.watch_queue("log_lines", &line_tx);
    let syslog_stats = metrics.syslog.clone();
    let syslog_addr = match cfg.syslog_listen {
        Some(addr) => {
            let sock = bind_udp(addr, None, false).map_err(|source| AgentError::Bind {
                what: "syslog",
                addr,
                source,
            })?;
            let local = sock.local_addr().unwrap_or(addr);
            tasks.push(tokio::spawn(crate::serve::syslog::run(
                sock,
                view_rx.clone(),
                sessions.clone(),
                line_tx,
                syslog_stats.clone(),
                shutdown.clone(),
            )));
            Some(local)
        }
        None => None,
    };
    // IPv6 router advertisements that say "no IPv6 here" (iPXE's wait).
    if let (true, Some(iface)) = (cfg.ipv6_ra, cfg.iface.as_deref()) {
        match crate::serve::router_advert::bind(iface) {
            Ok((sock, index)) => tasks.push(tokio::spawn(crate::serve::router_advert::run(
                sock,
                index,
                metrics.router_advert.clone(),
                shutdown.clone(),
            ))),
            // Not fatal: nodes boot, iPXE waits for IPv6 as it would anyway.
            Err(e) => {
                tracing::warn!(%iface, error = %e, "cannot answer IPv6 router solicitations (iPXE will wait for IPv6 on each boot); --no-ipv6-ra silences this")
            }
        }
    }
    let spool_dir = cfg.data_dir.join("log-spool");
    let spool = match crate::store::logspool::Spool::open(&spool_dir, cfg.log_spool_bytes) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "log spool unavailable; node logs are buffered in memory only");
            None
        }
    };
    tasks.push(tokio::spawn(crate::upstream::logship::run(
        cfg.coordinators.clone(),
        cfg.rack.clone(),
        line_rx,
        session_rx,
        spool,
        metrics.logship.clone(),
        shutdown.clone(),
    )));

    // Coordinator sync.
    let sync_cfg = SyncConfig {
        coordinators: cfg.coordinators.clone(),
        rack: pb::Rack {
            name: cfg.rack.clone(),
            subnet: cfg.subnet.to_string(),
            server_address: cfg.server_ip.to_string(),
            node_base: cfg.node_base.to_string(),
            gateway: cfg.gateway.map(|g| g.to_string()).unwrap_or_default(),
        },
        agent_id: format!("{}@{}", cfg.rack, cfg.server_ip),
        view_path,
        stats: metrics.sync.clone(),
        problems: problems_rx,
    };
    let dump_cache = cache.clone();
    tasks.push(tokio::spawn(follow::run(
        sync_cfg,
        view_tx,
        unknown_rx,
        cache,
        cache_changed,
        shutdown.clone(),
    )));
    // SIGUSR1: state dump (transfers, queue, sync revision, cache, counters).
    {
        let cache = dump_cache;
        let unknown_queue = dump_unknown_tx;
        let stop = shutdown.clone();
        let view = view_rx.clone();
        let files = files_rx.clone();
        let dhcp_stats = dhcp_stats.clone();
        let syslog_stats = syslog_stats.clone();
        let tftp_dump = tftp_dump.clone();
        tasks.push(tokio::spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            let Ok(mut sig) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
            else {
                tracing::warn!("cannot install the SIGUSR1 handler");
                return;
            };
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    s = sig.recv() => if s.is_none() { return },
                }
                let v = view.borrow().clone();
                tracing::info!(
                    revision = v.revision,
                    nodes = v.nodes.len(),
                    images = v.images.len(),
                    files = files.borrow().len(),
                    dhcp_received = dhcp_stats.received.load(Relaxed),
                    dhcp_replied = dhcp_stats.replied.load(Relaxed),
                    dhcp_unknown = dhcp_stats.unknown.load(Relaxed),
                    dhcp_dropped = dhcp_stats.dropped.load(Relaxed),
                    dhcp_rate_limited = dhcp_stats.rate_limited.load(Relaxed),
                    dhcp_provisional = dhcp_stats.provisional.load(Relaxed),
                    dhcp_provisional_full = dhcp_stats.provisional_full.load(Relaxed),
                    dhcp_probes = dhcp_stats.probes.load(Relaxed),
                    dhcp_drops = %dhcp_stats.drops_text(),
                    dhcp_provisional_leases = dhcp_stats.provisional_in_use.load(Relaxed),
                    discovery_queue = unknown_queue.max_capacity() - unknown_queue.capacity(),
                    cache_blobs = cache.stats().blobs,
                    cache_bytes = cache.stats().bytes,
                    cache_hits = cache.stats().hits,
                    cache_misses = cache.stats().misses,
                    syslog_received = syslog_stats.received.load(Relaxed),
                    syslog_dropped = syslog_stats.dropped.load(Relaxed),
                    "agent state (SIGUSR1)"
                );
                tftp_dump.notify_one();
            }
        }));
    }
    tracing::info!(rack = %cfg.rack, %dhcp_addr, %tftp_addr, ?http_addr, ?syslog_addr, ?metrics_addr, server_ip = %cfg.server_ip, "rack agent serving");
    // Static root: changed files are picked up once they have stopped
    // changing (the same size and mtime on two polls), so a file being
    // written is never served half-written; an atomic rename is seen at once.
    let static_root = Arc::new(std::sync::Mutex::new(cfg.static_root.clone()));
    {
        let root = static_root.clone();
        let statics_tx = statics_tx.clone();
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = statics_stamp;
            let mut pending = None;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(STATIC_POLL) => {}
                }
                let Some(dir) = root.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
                    continue;
                };
                let stamp = tokio::task::spawn_blocking(move || static_stamp(&dir))
                    .await
                    .unwrap_or_default();
                if last.is_none() {
                    last = Some(stamp);
                    continue;
                }
                if last.as_ref() == Some(&stamp) {
                    pending = None;
                    continue;
                }
                if pending.as_ref() != Some(&stamp) {
                    // Changed since the last poll: wait until it holds still.
                    pending = Some(stamp);
                    continue;
                }
                let dir = root.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(dir) = dir {
                    // Files up to 512 MiB: read on a blocking thread.
                    let loading = dir.clone();
                    let loaded = tokio::task::spawn_blocking(move || load_static_root(&loading))
                        .await
                        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                    match loaded {
                        Ok(files) => {
                            tracing::info!(files = files.len(), root = %dir.display(), "static root changed; reloaded");
                            statics_tx.send_replace(Arc::new(files));
                        }
                        Err(e) => tracing::warn!(error = %e, root = %dir.display(), "static root changed but cannot be read; keeping the old files"),
                    }
                }
                last = pending.take();
            }
        }));
    }
    Ok(Agent {
        control: AgentControl {
            statics: statics_tx,
            static_root,
            core: configured_tx,
            running: cfg.clone(),
        },
        view: view_rx,
        files: files_rx,
        dhcp_addr,
        tftp_addr,
        http_addr,
        syslog_addr,
        metrics_addr,
        sessions,
        syslog_stats,
        dhcp_stats,
        metrics,
        tasks,
    })
}

/// The boot files to offer for `configured`, given the static root's
/// files, and what an operator should be told about them (logged here).
fn offered_boot_files(
    configured: &ServerConfig,
    statics: &crate::store::files::StaticFiles,
) -> (ServerConfig, Vec<String>) {
    let mut offered = configured.clone();
    let arm64 = rackboot_agent_domain::loaders::arm64_uefi(&configured.boot.uefi_arm64, |f| {
        statics.contains_key(f)
    });
    let mut problems = Vec::new();
    if let Some(note) = arm64.note {
        if arm64.missing {
            tracing::warn!("{note}");
            problems.push(note);
        } else {
            tracing::info!("{note}");
        }
    }
    offered.boot.uefi_arm64 = arm64.file;
    (offered, problems)
}

/// Owns the offered boot files: recomputed whenever the configuration or
/// the static root changes.
async fn choose_loaders(
    mut configured: watch::Receiver<Arc<ServerConfig>>,
    mut statics: watch::Receiver<Arc<crate::store::files::StaticFiles>>,
    offered: watch::Sender<Arc<ServerConfig>>,
    problems: watch::Sender<Arc<Vec<String>>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = configured.changed() => if r.is_err() { return },
            r = statics.changed() => if r.is_err() { return },
        }
        let (next, found) = {
            let c = configured.borrow_and_update().clone();
            let s = statics.borrow_and_update().clone();
            offered_boot_files(&c, &s)
        };
        replace_if_changed(&offered, next);
        replace_if_changed(&problems, found);
    }
}

/// Publish `value` unless the watch already holds an equal one (no wake-up
/// for readers then).
fn replace_if_changed<T: PartialEq>(tx: &watch::Sender<Arc<T>>, value: T) {
    tx.send_if_modified(|cur| {
        let changed = **cur != value;
        if changed {
            *cur = Arc::new(value);
        }
        changed
    });
}
