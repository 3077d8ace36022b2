//! `rackboot image push`: hash locally, upload only what the coordinator
//! lacks, commit the manifest.
//!
//! Each blob goes with its outboard (the chaining values of its 1 MiB
//! groups, `rackboot_image::outboard`), so the coordinator verifies every
//! group as it arrives and keeps the intact ones when the connection breaks.
//! A push that fails asks again what is missing (`MissingBlobs` reports the
//! groups an interrupted upload left) and sends only the rest, up to
//! `--retries` times.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use rackboot_image::outboard::{self, GROUP, OutboardBuilder};
use rackboot_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::Conn;

/// Upload chunk size: one verified group.
pub const CHUNK: usize = GROUP as usize;

/// Arguments of `image push`.
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// Image name, e.g. compute:2026-11 (immutable once committed).
    pub name: String,
    /// Kernel image file.
    #[arg(long)]
    pub kernel: PathBuf,
    /// Initrd / initramfs file.
    #[arg(long)]
    pub initrd: PathBuf,
    /// Default kernel command line.
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Kernel release (`uname -r`). Read from the kernel's boot header when
    /// it has one (x86 bzImage); given as well, the two must agree. Needed
    /// for kernels without such a header when --modules is given.
    #[arg(long, default_value = "")]
    pub kernel_version: String,
    /// Kernel-module bundle: an uncompressed tar of `lib/modules/<release>/`
    /// (with modules.dep; e.g. `tar -cf modules.tar lib/modules/$(uname -r)`)
    /// plus optional etc/modprobe.d/*.conf. Refused unless its release is
    /// the kernel's. Nodes get it at `modules/<release>/modules.tar`, its
    /// tables beside it, both named in their boot-info.
    #[arg(long)]
    pub modules: Option<PathBuf>,
    /// Device tree blob (`.dtb`, e.g. from Debian's `linux-image-arm64`
    /// under `/usr/lib/linux-image-<release>/`) for boards whose firmware
    /// does not provide the one the kernel needs. U-Boot boot scripts load
    /// it and pass it to the kernel; without it U-Boot's own tree is used.
    #[arg(long, value_name = "FILE")]
    pub dtb: Option<PathBuf>,
    /// Times a broken upload is resumed (only the missing 1 MiB groups are
    /// sent again), waiting 1, 2, 4… s (at most 10 s) between attempts.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub retries: u32,
}

/// The release the image will carry, checked as the coordinator will check
/// it (so a mismatch is refused before anything is uploaded).
async fn local_kernel_version(args: &PushArgs) -> anyhow::Result<String> {
    // The setup header and its version string sit in the first 64.5 KiB.
    let mut head = vec![0u8; 0x10200];
    let mut f = tokio::fs::File::open(&args.kernel)
        .await
        .with_context(|| format!("kernel file {}", args.kernel.display()))?;
    let mut n = 0;
    while n < head.len() {
        let got = f.read(&mut head[n..]).await?;
        if got == 0 {
            break;
        }
        n += got;
    }
    head.truncate(n);
    let version = match rackboot_image::kernel_release(&head) {
        Ok(header) => {
            anyhow::ensure!(
                args.kernel_version.is_empty() || args.kernel_version == header,
                "kernel version {} was given, but the kernel image header says {header}",
                args.kernel_version
            );
            header
        }
        Err(_) => args.kernel_version.clone(),
    };
    if let Some(path) = &args.modules {
        let bytes = tokio::fs::read(path)
            .await
            .with_context(|| format!("modules file {}", path.display()))?;
        let bundle = rackboot_image::bundle::inspect(&bytes)
            .map_err(|e| anyhow!("modules file {}: {e}", path.display()))?;
        anyhow::ensure!(
            !version.is_empty(),
            "the kernel has no readable boot header, so the module bundle (for {}) cannot be checked; give --kernel-version",
            bundle.release
        );
        rackboot_image::check_modules_match(&version, &bundle.release).map_err(|e| anyhow!(e))?;
        say!(
            "modules: {} modules for kernel {}, tables: {}",
            bundle.modules,
            bundle.release,
            bundle.tables.keys().cloned().collect::<Vec<_>>().join(" ")
        );
    }
    Ok(version)
}

/// A file's blob reference and outboard.
struct Hashed {
    blob: pb::BlobRef,
    outboard: Vec<u8>,
}

async fn hash_file(what: &str, path: &Path) -> anyhow::Result<Hashed> {
    let mut f = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("{what} file {}", path.display()))?;
    let size = f
        .metadata()
        .await
        .with_context(|| format!("{what} file {}", path.display()))?
        .len();
    let mut ob = OutboardBuilder::new(size);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f
            .read(&mut buf)
            .await
            .with_context(|| format!("reading {what} file {}", path.display()))?;
        if n == 0 {
            break;
        }
        ob.update(buf.get(..n).unwrap_or_default());
    }
    let ob = ob.finish().map_err(|e| {
        anyhow!(
            "{what} file {} changed while it was read: {e}",
            path.display()
        )
    })?;
    Ok(Hashed {
        blob: pb::BlobRef {
            blake3: blake3::Hash::from(ob.root()).to_hex().to_string(),
            size,
        },
        outboard: ob.to_bytes(),
    })
}

/// Which groups the coordinator holds of a partial upload (none when absent).
fn held_groups(partial: Option<&pb::PartialBlob>, groups: u64) -> Vec<bool> {
    (0..groups)
        .map(|g| {
            partial
                .and_then(|p| {
                    p.groups_held
                        .get(usize::try_from(g / 8).unwrap_or(usize::MAX))
                })
                .is_some_and(|b| b & (1 << (g % 8)) != 0)
        })
        .collect()
}

/// Send the groups of `path` not in `held`, the first message carrying the
/// header and outboard. Returns whether the coordinator stored the blob
/// (false: it already had it).
async fn upload(
    conn: &Conn,
    what: &str,
    path: &Path,
    h: &Hashed,
    held: Vec<bool>,
) -> Result<bool, tonic::Status> {
    let (tx, rx) = mpsc::channel::<pb::PutBlobChunk>(4);
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| tonic::Status::cancelled(format!("{what} file {}: {e}", path.display())))?;
    let header = h.blob.clone();
    let outboard = h.outboard.clone();
    let size = h.blob.size;
    let reader = tokio::spawn(async move {
        let mut first = Some((header, outboard));
        for (g, done) in held.iter().enumerate() {
            if *done {
                continue;
            }
            let Some((offset, len)) = outboard::group_range(size, g as u64) else {
                break;
            };
            f.seek(std::io::SeekFrom::Start(offset)).await?;
            let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
            f.read_exact(&mut buf).await?;
            let (header, outboard) = first.take().unzip();
            let msg = pb::PutBlobChunk {
                header,
                data: buf,
                offset,
                outboard: outboard.unwrap_or_default(),
            };
            if tx.send(msg).await.is_err() {
                break;
            }
        }
        if let Some((header, outboard)) = first.take() {
            // Every group already held: the header alone completes it.
            let _ = tx
                .send(pb::PutBlobChunk {
                    header: Some(header),
                    data: Vec::new(),
                    offset: 0,
                    outboard,
                })
                .await;
        }
        Ok::<(), std::io::Error>(())
    });
    let resp = conn.images().put_blob(ReceiverStream::new(rx)).await;
    let read = reader
        .await
        .map_err(|e| tonic::Status::cancelled(format!("reader task: {e}")))?;
    let resp = resp?;
    read.map_err(|e| {
        tonic::Status::cancelled(format!("reading {what} file {}: {e}", path.display()))
    })?;
    Ok(resp.into_inner().stored)
}

/// Statuses after which a push is resumed rather than given up.
fn retryable(s: &tonic::Status) -> bool {
    use tonic::Code::*;
    matches!(
        s.code(),
        Unavailable | Aborted | DeadlineExceeded | Unknown | Internal | FailedPrecondition
    )
}

/// Upload every blob the coordinator lacks, resuming partial uploads.
async fn push_missing(
    conn: &Conn,
    files: &[(&str, &PathBuf, &Hashed)],
) -> Result<(), tonic::Status> {
    let answer = conn
        .images()
        .missing_blobs(pb::MissingBlobsRequest {
            blobs: files.iter().map(|(_, _, h)| h.blob.clone()).collect(),
        })
        .await?
        .into_inner();
    for (what, path, h) in files {
        let b = &h.blob;
        if !answer.missing.iter().any(|m| m.blake3 == b.blake3) {
            say!(
                "{what}: {} bytes, blake3 {} already stored",
                b.size,
                b.blake3
            );
            continue;
        }
        let partial = answer
            .partial
            .iter()
            .find(|p| p.blob.as_ref().is_some_and(|pb| pb.blake3 == b.blake3));
        let held = held_groups(partial, outboard::groups(b.size));
        let resumed = partial.map(|p| p.bytes_held).unwrap_or_default();
        let stored = upload(conn, what, path, h, held).await?;
        let verb = match (stored, resumed) {
            (false, _) => "already stored".to_string(),
            (true, 0) => "uploaded".to_string(),
            (true, r) => format!("uploaded (resumed: {r} bytes were already there)"),
        };
        say!("{what}: {} bytes, blake3 {} {verb}", b.size, b.blake3);
    }
    Ok(())
}

/// A flattened device tree starts with this magic (big-endian).
const FDT_MAGIC: [u8; 4] = [0xd0, 0x0d, 0xfe, 0xed];

/// Refuse a `--dtb` that is not a flattened device tree before uploading.
async fn check_dtb(path: &Path) -> anyhow::Result<()> {
    let mut head = [0u8; 4];
    let mut f = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("dtb file {}", path.display()))?;
    let n = f
        .read(&mut head)
        .await
        .with_context(|| format!("dtb file {}", path.display()))?;
    anyhow::ensure!(
        n == 4 && head == FDT_MAGIC,
        "dtb file {} is not a flattened device tree (no d00dfeed magic): give the compiled .dtb, not the .dts source",
        path.display()
    );
    Ok(())
}

/// Run `image push`.
pub async fn run(conn: &Conn, args: PushArgs) -> anyhow::Result<()> {
    let version = local_kernel_version(&args).await?;
    let kernel = hash_file("kernel", &args.kernel).await?;
    let initrd = hash_file("initrd", &args.initrd).await?;
    let modules = match &args.modules {
        Some(p) => Some(hash_file("modules", p).await?),
        None => None,
    };
    let dtb = match &args.dtb {
        Some(p) => {
            check_dtb(p).await?;
            Some(hash_file("dtb", p).await?)
        }
        None => None,
    };
    let mut files = vec![
        ("kernel", &args.kernel, &kernel),
        ("initrd", &args.initrd, &initrd),
    ];
    if let (Some(p), Some(m)) = (&args.modules, &modules) {
        files.push(("modules", p, m));
    }
    if let (Some(p), Some(d)) = (&args.dtb, &dtb) {
        files.push(("dtb", p, d));
    }
    let mut attempt = 0u32;
    loop {
        match push_missing(conn, &files).await {
            Ok(()) => break,
            Err(s) if retryable(&s) && attempt < args.retries => {
                attempt += 1;
                let wait = Duration::from_secs((1u64 << (attempt - 1).min(4)).min(10));
                say!(
                    "upload interrupted ({}); resuming in {}s (attempt {attempt} of {})",
                    s.message(),
                    wait.as_secs(),
                    args.retries
                );
                tokio::time::sleep(wait).await;
            }
            Err(s) => return Err(conn.err("uploading", s)),
        }
    }
    let image = conn
        .images()
        .commit_image(pb::CommitImageRequest {
            name: args.name.clone(),
            kernel: Some(kernel.blob),
            initrd: Some(initrd.blob),
            cmdline: args.cmdline,
            kernel_version: version,
            modules: modules.map(|m| m.blob),
            dtb: dtb.map(|d| d.blob),
            idempotency_key: String::new(),
        })
        .await
        .map_err(|s| conn.err(&format!("committing image '{}'", args.name), s))?
        .into_inner();
    say!("image {} committed; manifest blake3:", image.name);
    say!("{}", image.manifest_hash);
    Ok(())
}
