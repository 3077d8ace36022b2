//! The table of files the agent serves: generated boot configs (iPXE,
//! pxelinux, grub) and module tables in memory; verified blobs (kernels,
//! initrds, module bundles) and the operator's static root on disk, opened
//! per request ([`Body`]). Rebuilt whenever the view, the cache or the
//! static root changes (on a blocking thread: a bundle's tables are read
//! from its file once); readers take an `Arc` snapshot.
//!
//! U-Boot asks every node's next-server for the same name,
//! `boot.scr.uimg`: that name is answered per node, by the address the
//! request comes from (the node's leased address); `uboot/<mac>.scr.uimg`
//! holds the same bytes by MAC.
//!
//! Boot-info (`boot-info/<mac>.json|.env`) is rendered when asked for, from
//! the snapshot's view and the node's current boot session, so it always
//! names the kernel the node was actually served and that kernel's modules.
//! It is answered only to the node itself (the request comes from the
//! node's address): the boot ports never tell one machine another's
//! cmdline, addresses or site meta.
//!
//! A MAC without a node gets the discovery script, rendered per request
//! with the probe token of that MAC at the address asking
//! (`rackboot.token=`; see `rackboot_dhcp_core::probe`).

#![allow(
    clippy::disallowed_methods,
    reason = "synchronous storage: callers on a runtime use spawn_blocking"
)]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use rackboot_tftp_core::{Content, FileSource, OpenError, SafePath};

use crate::store::cache::BlobCache;
use crate::store::disk::{Body, StaticFile, Unavailable};
use crate::timeline::TimelineHandle;
use rackboot_agent_domain::boot_config::{
    discovery_ipxe_script, grub_config, grub_config_paths, ipxe_script, pxelinux_config,
    pxelinux_config_path,
};
use rackboot_agent_domain::bootinfo::{BootInfo, Served, Site, modules_dir};
use rackboot_agent_domain::uboot;
use rackboot_agent_domain::view::{ImageEntry, RackView};
use rackboot_dhcp_core::{Mac, ProbeKey};

/// Path of a node's iPXE script, relative to the served root.
pub fn ipxe_script_path(mac_hyphenated: &str) -> String {
    format!("ipxe/{mac_hyphenated}.ipxe")
}

/// What boot-info is rendered from.
#[derive(Debug)]
struct BootInfoSource {
    view: Arc<RackView>,
    site: Site,
    /// Images whose blobs are all verified and loaded.
    ready: HashSet<String>,
    sessions: Option<TimelineHandle>,
    /// Node number by hyphenated MAC.
    by_mac: HashMap<String, u32>,
    /// The discovery image, if it can be served.
    discovery: Option<ImageEntry>,
    /// Probe tokens for discovery scripts.
    probe_key: Option<ProbeKey>,
}

/// A snapshot of everything served.
#[derive(Debug, Default, Clone)]
pub struct FileTable {
    files: HashMap<String, Body>,
    /// Each node's U-Boot script image, by its address.
    uboot_by_addr: Arc<HashMap<Ipv4Addr, Bytes>>,
    boot_info: Option<Arc<BootInfoSource>>,
    /// blake3 of files that are not blobs, computed once per snapshot on
    /// first request (HTTP `ETag`).
    etags: Arc<std::sync::Mutex<HashMap<String, String>>>,
    /// `blobs/<digest>` of the view's blobs not served yet (being fetched,
    /// or verified at start or after a change on disk).
    pending: Arc<HashSet<String>>,
}

/// A kernel release is used as a path component: keep it to what releases
/// are made of.
fn safe_release(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 128
        && r != "."
        && r != ".."
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+~-".contains(&b))
}

/// Add an image's module bundle and its tables under `modules/<version>/`
/// (blocking: the bundle is read from its file the first time).
fn add_modules(files: &mut HashMap<String, Body>, im: &ImageEntry, cache: &BlobCache) -> bool {
    let Some(m) = &im.modules else { return true };
    let Some(bundle_file) = cache.get(&m.digest) else {
        return false;
    };
    if !safe_release(&im.kernel_version) {
        tracing::warn!(image = %im.name, version = %im.kernel_version, "module bundle not served: kernel version unusable as a path");
        return false;
    }
    let dir = modules_dir(&im.kernel_version);
    let bundle = match cache.bundle(&m.digest) {
        Some(Ok(b)) if b.release == im.kernel_version => b,
        Some(Ok(b)) => {
            tracing::warn!(image = %im.name, bundle = %b.release, kernel = %im.kernel_version, "module bundle is for another kernel; not served");
            return false;
        }
        Some(Err(e)) => {
            tracing::warn!(image = %im.name, error = %e, "module bundle unreadable; not served");
            return false;
        }
        None => return false,
    };
    for (name, data) in &bundle.tables {
        files.insert(
            format!("{dir}/{name}"),
            Body::Memory(Bytes::from(data.clone())),
        );
    }
    files.insert(format!("{dir}/modules.tar"), Body::Verified(bundle_file));
    true
}

impl FileTable {
    /// Build from the view, the cache and static files (blocking: call it
    /// on a blocking thread).
    pub fn build(
        view: &Arc<RackView>,
        cache: &BlobCache,
        statics: &StaticFiles,
        site: &Site,
        sessions: Option<TimelineHandle>,
        probe_key: Option<&ProbeKey>,
    ) -> Self {
        let mut files: HashMap<String, Body> = statics
            .iter()
            .map(|(k, v)| (k.clone(), Body::Static(v.clone())))
            .collect();
        for digest in cache.loaded() {
            if let Some(b) = cache.get(&digest) {
                files.insert(format!("blobs/{digest}"), Body::Verified(b));
            }
        }
        let pending = view
            .needed_blobs()
            .iter()
            .map(|b| format!("blobs/{}", b.digest))
            .filter(|p| !files.contains_key(p))
            .collect();
        let mut ready = HashSet::new();
        for im in view.images.values() {
            let blobs_loaded = im.blobs().all(|b| cache.get(&b.digest).is_some());
            // Only offer an image whose blobs (modules included) are verified
            // and loaded.
            if blobs_loaded && add_modules(&mut files, im, cache) {
                ready.insert(im.name.clone());
            }
        }
        let mut by_mac = HashMap::new();
        let mut uboot_by_addr = HashMap::new();
        for node in view.nodes.values() {
            let image = node
                .image
                .as_ref()
                .filter(|n| ready.contains(*n))
                .and_then(|n| view.images.get(n));
            let uboot_script = Bytes::from(uboot::script_image(
                &format!("rackboot {}", node.name),
                &uboot::boot_script(node, image),
            ));
            for mac in &node.macs {
                let hy = mac.hyphenated();
                let path = ipxe_script_path(&hy);
                let script = ipxe_script(&site.blob_base, node, image, &path);
                files.insert(path, Body::Memory(Bytes::from(script)));
                files.insert(
                    pxelinux_config_path(&hy),
                    Body::Memory(Bytes::from(pxelinux_config(node, image))),
                );
                let grub = Bytes::from(grub_config(&site.blob_base, node, image));
                for p in grub_config_paths(&hy) {
                    files.insert(p, Body::Memory(grub.clone()));
                }
                files.insert(uboot::script_path(&hy), Body::Memory(uboot_script.clone()));
                by_mac.insert(hy, node.number);
            }
            uboot_by_addr.insert(node.addr, uboot_script);
        }
        let discovery = view
            .discovery_image
            .as_ref()
            .filter(|n| ready.contains(*n))
            .and_then(|n| view.images.get(n))
            .cloned();
        FileTable {
            files,
            uboot_by_addr: Arc::new(uboot_by_addr),
            etags: Arc::default(),
            pending: Arc::new(pending),
            boot_info: Some(Arc::new(BootInfoSource {
                view: view.clone(),
                site: site.clone(),
                ready,
                sessions,
                by_mac,
                discovery,
                probe_key: probe_key.cloned(),
            })),
        }
    }

    /// A table holding exactly these files in memory (tests, tools).
    pub fn from_map(files: HashMap<String, Bytes>) -> Self {
        FileTable {
            files: files
                .into_iter()
                .map(|(k, v)| (k, Body::Memory(v)))
                .collect(),
            uboot_by_addr: Arc::default(),
            boot_info: None,
            etags: Arc::default(),
            pending: Arc::default(),
        }
    }

    /// Boot-info for the node with this number, rendered now.
    pub fn boot_info(&self, node: u32) -> Option<BootInfo> {
        let src = self.boot_info.as_ref()?;
        let entry = src.view.nodes.get(&node)?;
        let session = src.sessions.as_ref().and_then(|s| s.session(node));
        let assigned = entry.image.as_deref();
        // The session's image is what the node runs; without one, the
        // assigned image once it can be served.
        let image = session
            .as_ref()
            .and_then(|s| src.view.images.get(&s.image))
            .or_else(|| {
                assigned
                    .filter(|a| src.ready.contains(*a))
                    .and_then(|a| src.view.images.get(a))
            });
        let served = Served {
            image,
            session: session.as_ref().map(|s| s.id.as_str()),
            assigned,
        };
        Some(BootInfo::new(
            &src.site,
            entry,
            served,
            &src.view.meta,
            src.view.revision,
        ))
    }

    /// Look up a path asked for by `client`:
    /// - [`uboot::BOOT_SCRIPT`] is the boot script of the node at that
    ///   address (a file of that name in the static root is served to
    ///   addresses that are not a node's);
    /// - `boot-info/<mac>.json|.env` only to that node's own address;
    /// - `ipxe/<mac>.ipxe` of a MAC without a node: the discovery script
    ///   with that MAC's probe token at `client`;
    /// - anything else is [`FileTable::get`].
    pub fn get_for(&self, path: &str, client: IpAddr) -> Option<Body> {
        let v4 = match client {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(a) => a.to_ipv4_mapped(),
        };
        if path == uboot::BOOT_SCRIPT
            && let Some(script) = v4.and_then(|a| self.uboot_by_addr.get(&a))
        {
            return Some(Body::Memory(script.clone()));
        }
        if let Some(b) = self.files.get(path) {
            return Some(b.clone());
        }
        let src = self.boot_info.as_ref()?;
        if let Some(mac) = path
            .strip_prefix("ipxe/")
            .and_then(|p| p.strip_suffix(".ipxe"))
            .and_then(|m| m.parse::<Mac>().ok())
        {
            // Any MAC a node has got its own script above.
            let token = src.probe_key.as_ref().zip(v4).map(|(k, a)| k.token(mac, a));
            return Some(Body::Memory(Bytes::from(discovery_ipxe_script(
                &src.site.blob_base,
                src.discovery.as_ref(),
                token,
            ))));
        }
        let name = path.strip_prefix("boot-info/")?;
        let (mac, ext) = name.rsplit_once('.')?;
        let node = *src.by_mac.get(mac)?;
        let entry = src.view.nodes.get(&node)?;
        if v4 != Some(entry.addr) {
            return None;
        }
        let info = self.boot_info(node)?;
        match ext {
            "json" => Some(Body::Memory(Bytes::from(info.to_json()))),
            "env" => Some(Body::Memory(Bytes::from(info.to_env()))),
            _ => None,
        }
    }

    /// This table, with `paths` not served yet (tests).
    #[cfg(test)]
    pub fn with_pending(mut self, paths: &[&str]) -> Self {
        self.pending = Arc::new(paths.iter().map(|p| (*p).to_string()).collect());
        self
    }

    /// True for a blob of the rack's view that is not served yet: it is
    /// being fetched, or verified (at start, or again after a change on
    /// disk). A request for it is worth a short wait.
    pub fn is_pending(&self, path: &str) -> bool {
        self.pending.contains(path)
    }

    /// Look up a generated or static file (no per-client files).
    pub fn get(&self, path: &str) -> Option<Body> {
        self.files.get(path).cloned()
    }

    /// The entity tag of generated bytes `body` served at `path`: a digest
    /// computed once per snapshot (files on disk carry their own, see
    /// [`crate::store::disk::Opened::etag`]). Boot-info is rendered per
    /// request and hashed each time (it is small).
    pub fn etag(&self, path: &str, body: &[u8]) -> String {
        // Rendered per request, or per client (the U-Boot script).
        if !self.files.contains_key(path) || path == uboot::BOOT_SCRIPT {
            return blake3::hash(body).to_hex().to_string();
        }
        let mut etags = self.etags.lock().unwrap_or_else(|e| e.into_inner());
        etags
            .entry(path.to_string())
            .or_insert_with(|| blake3::hash(body).to_hex().to_string())
            .clone()
    }

    /// Number of files (boot-info excluded).
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl FileSource for FileTable {
    fn open(&self, path: &SafePath, client: SocketAddr) -> Result<Content, OpenError> {
        let Some(body) = self.get_for(path.as_str(), client.ip()) else {
            if self.is_pending(path.as_str()) {
                return Err(OpenError::NotReady);
            }
            return Err(OpenError::NotFound);
        };
        match body.open() {
            Ok(served) => Ok(served.into_content()),
            Err(Unavailable::Changed) => Err(OpenError::NotReady),
            Err(e) => {
                tracing::warn!(path = %path.as_str(), error = %e, "not served");
                Err(OpenError::NotFound)
            }
        }
    }
}

/// The static root's files by served path.
pub type StaticFiles = HashMap<String, Arc<StaticFile>>;

/// Most entries the static-root walk looks at (files, directories, links).
pub const MAX_STATIC_ENTRIES: usize = 100_000;
/// Deepest directory the static-root walk enters.
pub const MAX_STATIC_DEPTH: usize = 32;

/// Find every regular file under `root` (following links that stay inside
/// it), keyed by its path relative to `root` with `/` separators, to be
/// served from where it really is, as it is when asked for (any size;
/// nothing is read here). What cannot be served safely is skipped with a
/// logged reason, never followed or opened: links that leave the root, link
/// loops (`ln -s . loop`, a common TFTP-root trick), FIFOs, sockets and
/// device files (reading a FIFO would block for ever), unreadable entries.
/// The walk is bounded by [`MAX_STATIC_ENTRIES`] and [`MAX_STATIC_DEPTH`].
/// Blocking: call it on a blocking thread.
pub fn load_static_root(root: &Path) -> std::io::Result<StaticFiles> {
    let mut out = HashMap::new();
    let canonical_root = root.canonicalize()?;
    let walk = walkdir::WalkDir::new(&canonical_root)
        .follow_links(true)
        .max_depth(MAX_STATIC_DEPTH)
        .min_depth(1);
    let mut entries = walk.into_iter();
    let mut seen = 0usize;
    while let Some(entry) = entries.next() {
        seen += 1;
        if seen > MAX_STATIC_ENTRIES {
            tracing::warn!(root = %canonical_root.display(), limit = MAX_STATIC_ENTRIES, "static root: too many entries; the rest are not served");
            break;
        }
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let why = if e.loop_ancestor().is_some() {
                    "link loop"
                } else {
                    "unreadable"
                };
                let path = e
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                tracing::warn!(%path, error = %e, "static root: {why}, skipped");
                continue;
            }
        };
        let ft = entry.file_type();
        if ft.is_dir() {
            // A link to a directory outside the root is not entered (even
            // one whose tree leads back in: files have one name each).
            if !entry
                .path()
                .canonicalize()
                .is_ok_and(|p| p.starts_with(&canonical_root))
            {
                tracing::warn!(path = %entry.path().display(), "static root: link leaving the root, skipped");
                entries.skip_current_dir();
            }
            continue;
        }
        if !ft.is_file() {
            tracing::warn!(path = %entry.path().display(), "static root: not a regular file (FIFO, socket or device), skipped");
            continue;
        }
        let real = match entry.path().canonicalize() {
            Ok(p) if p.starts_with(&canonical_root) => p,
            _ => {
                tracing::warn!(path = %entry.path().display(), "static root: link leaving the root, skipped");
                continue;
            }
        };
        if let Err(e) = entry.metadata() {
            tracing::warn!(path = %entry.path().display(), error = %e, "static root: unreadable, skipped");
            continue;
        }
        // Named by where it appears in the tree (relative to the canonical
        // root: the walk is over canonical paths, whatever form (relative,
        // symlinked) `root` was given in), served from where it really is.
        let rel = entry
            .path()
            .strip_prefix(&canonical_root)
            .map(|r| r.to_string_lossy().replace('\\', "/"))
            .unwrap_or_default();
        if rel.is_empty() {
            continue;
        }
        out.insert(rel, Arc::new(StaticFile::new(real)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use rackboot_agent_domain::timeline::{BootSession, Transport};
    use rackboot_proto::v1 as pb;
    use rackboot_state::{Blake3Digest, BlobRef};
    use std::net::Ipv4Addr;

    fn pb_blob(data: &[u8]) -> pb::BlobRef {
        pb::BlobRef {
            blake3: Blake3Digest::of(data).to_string(),
            size: data.len() as u64,
        }
    }

    async fn cache_with(dir: &Path, blobs: &[&[u8]]) -> BlobCache {
        let cache = BlobCache::open(dir).unwrap();
        for data in blobs {
            let blob = BlobRef {
                digest: Blake3Digest::of(data),
                size: data.len() as u64,
            };
            std::fs::write(dir.join(blob.digest.to_string()), data).unwrap();
            assert!(cache.load_from_disk(&blob).await.unwrap());
        }
        cache
    }

    /// Two images with different kernels and module bundles; node 1 is
    /// assigned B but was served A's kernel: its boot-info names A's kernel
    /// and modules (what it runs) until it is served B's.
    /// Serve node 1 (at `ip`) the kernel `hash` and wait until the timeline
    /// owner has published the session it started.
    async fn served(
        sessions: &TimelineHandle,
        ip: Ipv4Addr,
        hash: &str,
        transport: Transport,
    ) -> BootSession {
        sessions.file_served(ip, &format!("blobs/{hash}"), transport);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(s) = sessions.session(1).filter(|s| s.kernel_blake3 == hash) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no session for {hash}"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn boot_info_and_modules_follow_the_kernel_served() {
        let bundle = |v: &str| {
            rackboot_image::bundle::build_tar(&[
                (
                    &format!("lib/modules/{v}/modules.dep"),
                    format!("dep {v}\n").as_bytes(),
                ),
                (&format!("lib/modules/{v}/kernel/e1000.ko"), b"ko"),
            ])
        };
        let (ma, mb) = (bundle("6.1.0-a"), bundle("6.1.0-b"));
        let blobs: [&[u8]; 6] = [b"ka", b"ia", &ma, b"kb", b"ib", &mb];
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_with(dir.path(), &blobs).await;
        let image = |name: &str, k: &[u8], i: &[u8], m: &[u8], v: &str| pb::ImageManifest {
            name: name.into(),
            kernel: Some(pb_blob(k)),
            initrd: Some(pb_blob(i)),
            modules: Some(pb_blob(m)),
            kernel_version: v.into(),
            cmdline: "console=ttyS0".into(),
            ..Default::default()
        };
        let mut state = pb::RackState {
            revision: 3,
            meta: [("SITE".to_string(), "lab".to_string())].into(),
            nodes: vec![pb::Node {
                number: 1,
                name: "n1".into(),
                macs: vec!["52:54:00:00:00:01".into()],
                address: "10.0.0.2".into(),
                assigned_image: "b".into(),
                ..Default::default()
            }],
            images: vec![
                image("a", b"ka", b"ia", &ma, "6.1.0-a"),
                image("b", b"kb", b"ib", &mb, "6.1.0-b"),
            ],
            ..Default::default()
        };
        let view = Arc::new(RackView::from_pb(state.clone()).unwrap());
        let site = Site {
            rack: "r1".into(),
            server: "10.0.0.1".parse().unwrap(),
            subnet: "10.0.0.0/24".parse().unwrap(),
            gateway: None,
            blob_base: "http://10.0.0.1".into(),
        };
        let (tx, _rx) = tokio::sync::mpsc::channel(16);
        let (_view_tx, view_rx) = tokio::sync::watch::channel(view.clone());
        let (sessions, _owner) =
            crate::timeline::spawn(view_rx, tx, tokio_util::sync::CancellationToken::new());
        let t = FileTable::build(
            &view,
            &cache,
            &HashMap::new(),
            &site,
            Some(sessions.clone()),
            None,
        );
        // Module bundles and tables at a path derived from the release.
        assert_eq!(
            t.get("modules/6.1.0-a/modules.dep")
                .unwrap()
                .read_all()
                .unwrap()
                .as_ref(),
            b"dep 6.1.0-a\n"
        );
        assert_eq!(
            t.get("modules/6.1.0-b/modules.tar")
                .unwrap()
                .read_all()
                .unwrap()
                .as_ref(),
            &mb[..]
        );
        // Per-node configs for iPXE, pxelinux and grub, all naming B.
        let kb = Blake3Digest::of(b"kb").to_string();
        for path in [
            "ipxe/52-54-00-00-00-01.ipxe",
            "pxelinux.cfg/01-52-54-00-00-00-01",
            "grub.cfg-01-52-54-00-00-00-01",
            "grub/grub.cfg-01-52-54-00-00-00-01",
        ] {
            let text =
                String::from_utf8(t.get(path).unwrap().read_all().unwrap().to_vec()).unwrap();
            assert!(text.contains(&kb), "{path}: {text}");
        }
        // Before any kernel is served: the assigned image. Boot-info is
        // the node's own: another address gets nothing.
        let node_ip = IpAddr::from([10, 0, 0, 2]);
        let stranger = IpAddr::from([10, 0, 0, 77]);
        assert!(
            t.get_for("boot-info/52-54-00-00-00-01.env", stranger)
                .is_none()
        );
        assert!(t.get("boot-info/52-54-00-00-00-01.env").is_none());
        let env = String::from_utf8(
            t.get_for("boot-info/52-54-00-00-00-01.env", node_ip)
                .unwrap()
                .read_all()
                .unwrap()
                .to_vec(),
        )
        .unwrap();
        assert!(
            env.contains("RACKBOOT_MODULES_PATH='modules/6.1.0-b'"),
            "{env}"
        );
        assert!(env.contains("RACKBOOT_META_SITE='lab'"), "{env}");
        // Served A's kernel (it asked for it before the reassignment reached
        // it): boot-info names A, its modules, the session, and B as assigned.
        let ip: Ipv4Addr = "10.0.0.2".parse().unwrap();
        let ka = Blake3Digest::of(b"ka").to_string();
        let session = served(&sessions, ip, &ka, Transport::Tftp).await;
        let info = t.boot_info(1).unwrap();
        assert_eq!(info.kernel_blake3.as_deref(), Some(ka.as_str()));
        assert_eq!(info.kernel_version.as_deref(), Some("6.1.0-a"));
        assert_eq!(info.modules_path.as_deref(), Some("modules/6.1.0-a"));
        assert_eq!(
            info.modules_url.as_deref(),
            Some("http://10.0.0.1/modules/6.1.0-a/modules.tar")
        );
        assert_eq!(info.session.as_deref(), Some(session.id.as_str()));
        assert_eq!(info.assigned_image.as_deref(), Some("b"));
        let json = String::from_utf8(
            t.get_for("boot-info/52-54-00-00-00-01.json", node_ip)
                .unwrap()
                .read_all()
                .unwrap()
                .to_vec(),
        )
        .unwrap();
        assert!(
            json.contains("6.1.0-a") && json.contains(&session.id),
            "{json}"
        );
        // Served B's: B everywhere.
        served(&sessions, ip, &kb, Transport::Http).await;
        let info = t.boot_info(1).unwrap();
        assert_eq!(info.modules_path.as_deref(), Some("modules/6.1.0-b"));
        assert_eq!(info.assigned_image, None);
        // A MAC without a node: the discovery image, with the token of
        // that MAC at the address asking.
        state.discovery_image = "a".into();
        let view = Arc::new(RackView::from_pb(state.clone()).unwrap());
        let key = ProbeKey::new([6; 32]);
        let t = FileTable::build(
            &view,
            &cache,
            &HashMap::new(),
            &site,
            Some(sessions.clone()),
            Some(&key),
        );
        let stranger_mac = Mac([0x52, 0x54, 0, 0, 0, 0x77]);
        let at = Ipv4Addr::new(10, 0, 0, 200);
        let script = String::from_utf8(
            t.get_for("ipxe/52-54-00-00-00-77.ipxe", IpAddr::V4(at))
                .unwrap()
                .read_all()
                .unwrap()
                .to_vec(),
        )
        .unwrap();
        let token = key.token(stranger_mac, at);
        assert!(
            script.contains(&format!("rackboot.token={token}")) && script.contains(&ka),
            "{script}"
        );
        let elsewhere = t
            .get_for("ipxe/52-54-00-00-00-77.ipxe", IpAddr::from([10, 0, 0, 201]))
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&elsewhere.read_all().unwrap()).contains(&token.to_string())
        );
        // A bundle whose blob is missing keeps its image from being offered.
        state.images[1].modules = Some(pb_blob(b"not cached"));
        let view = Arc::new(RackView::from_pb(state).unwrap());
        let t = FileTable::build(&view, &cache, &HashMap::new(), &site, Some(sessions), None);
        let script = String::from_utf8(
            t.get("ipxe/52-54-00-00-00-01.ipxe")
                .unwrap()
                .read_all()
                .unwrap()
                .to_vec(),
        )
        .unwrap();
        assert!(script.contains("no image assigned yet"), "{script}");
        assert!(
            t.get_for("boot-info/52-54-00-00-00-01.json", node_ip)
                .is_some()
        );
        assert!(
            t.get_for("boot-info/52-54-00-00-00-09.json", node_ip)
                .is_none()
        );
        assert!(
            t.get_for("boot-info/52-54-00-00-00-01.xml", node_ip)
                .is_none()
        );
    }

    #[test]
    fn releases_usable_as_paths_only() {
        assert!(safe_release("6.1.0-27-amd64"));
        assert!(safe_release("5.14.0-362.8.1.el9_3.x86_64+debug"));
        for bad in ["", ".", "..", "a/b", "6.1 x", "x\0"] {
            assert!(!safe_release(bad), "{bad:?}");
        }
    }

    #[test]
    fn static_root_given_relative_or_through_a_symlink_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a"), b"a").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        let files = load_static_root(&link).unwrap();
        assert_eq!(
            Body::Static(files.get("sub/a").unwrap().clone())
                .read_all()
                .unwrap()
                .as_ref(),
            b"a"
        );
        let dotted = dir.path().join("root/./sub/..");
        assert_eq!(load_static_root(&dotted).unwrap().len(), 1);
    }

    #[test]
    fn static_root_loads_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("grub")).unwrap();
        std::fs::write(dir.path().join("undionly.kpxe"), b"rom").unwrap();
        std::fs::write(dir.path().join("grub/grub.cfg"), b"cfg").unwrap();
        let files = load_static_root(dir.path()).unwrap();
        assert_eq!(
            Body::Static(files.get("undionly.kpxe").unwrap().clone())
                .read_all()
                .unwrap()
                .as_ref(),
            b"rom"
        );
        assert_eq!(
            Body::Static(files.get("grub/grub.cfg").unwrap().clone())
                .read_all()
                .unwrap()
                .as_ref(),
            b"cfg"
        );
    }

    #[test]
    fn loops_fifos_and_links_out_of_the_root_are_skipped_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("pxelinux.cfg")).unwrap();
        std::fs::write(root.join("pxelinux.cfg/default"), b"menu").unwrap();
        std::fs::write(dir.path().join("secret"), b"not served").unwrap();
        // The TFTP-root trick: a link to the root itself, and a loop deeper.
        std::os::unix::fs::symlink(".", root.join("loop")).unwrap();
        std::os::unix::fs::symlink("..", root.join("pxelinux.cfg/up")).unwrap();
        // Out of the root, by a file link and by a directory link.
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("secret")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("outside")).unwrap();
        // A dangling link.
        std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
        // A FIFO: reading it would block for ever.
        let fifo = root.join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let started = std::time::Instant::now();
        let files = load_static_root(&root).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let mut names: Vec<&str> = files.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["pxelinux.cfg/default"], "{names:?}");
    }

    #[test]
    fn deep_trees_are_cut_at_the_depth_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut deep = dir.path().to_path_buf();
        for _ in 0..(MAX_STATIC_DEPTH + 5) {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), b"too deep").unwrap();
        std::fs::write(dir.path().join("top"), b"top").unwrap();
        let files = load_static_root(dir.path()).unwrap();
        assert_eq!(files.len(), 1);
        assert!(files.contains_key("top"));
    }
}
