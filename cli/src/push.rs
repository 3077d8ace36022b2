//! `rackboot image push`: hash locally, upload only missing blobs in chunks,
//! commit the manifest.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use rackboot_proto::v1 as pb;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::Conn;

/// Upload chunk size.
pub const CHUNK: usize = 1 << 20;

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

async fn hash_file(what: &str, path: &Path) -> anyhow::Result<pb::BlobRef> {
    let mut f = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("{what} file {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .await
            .with_context(|| format!("reading {what} file {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
        size += n as u64;
    }
    Ok(pb::BlobRef {
        blake3: hasher.finalize().to_hex().to_string(),
        size,
    })
}

async fn upload(conn: &Conn, what: &str, path: &Path, blob: &pb::BlobRef) -> anyhow::Result<bool> {
    let (tx, rx) = mpsc::channel::<pb::PutBlobChunk>(4);
    let mut f = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("{what} file {}", path.display()))?;
    let header = blob.clone();
    let reader = tokio::spawn(async move {
        let mut first = Some(header);
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = f.read(&mut buf).await?;
            buf.truncate(n);
            let last = n == 0;
            if !(last && first.is_none()) {
                let msg = pb::PutBlobChunk {
                    header: first.take(),
                    data: buf,
                };
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
            if last {
                break;
            }
        }
        Ok::<(), std::io::Error>(())
    });
    let resp = conn
        .images()
        .put_blob(ReceiverStream::new(rx))
        .await
        .map_err(|s| conn.err(&format!("uploading {what}"), s))?;
    reader
        .await
        .map_err(|e| anyhow!("reader task: {e}"))?
        .with_context(|| format!("reading {what} file {}", path.display()))?;
    Ok(resp.into_inner().stored)
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
    let mut files = vec![
        ("kernel", &args.kernel, &kernel),
        ("initrd", &args.initrd, &initrd),
    ];
    if let (Some(p), Some(m)) = (&args.modules, &modules) {
        files.push(("modules", p, m));
    }
    let missing = conn
        .images()
        .missing_blobs(pb::MissingBlobsRequest {
            blobs: files.iter().map(|(_, _, b)| (*b).clone()).collect(),
        })
        .await
        .map_err(|s| conn.err("checking stored blobs", s))?
        .into_inner()
        .missing;
    for (what, path, blob) in files {
        let needed = missing.iter().any(|m| m.blake3 == blob.blake3);
        if needed {
            let stored = upload(conn, what, path, blob).await?;
            let verb = if stored { "uploaded" } else { "already stored" };
            say!("{what}: {} bytes, blake3 {} {verb}", blob.size, blob.blake3);
        } else {
            say!(
                "{what}: {} bytes, blake3 {} already stored",
                blob.size,
                blob.blake3
            );
        }
    }
    let image = conn
        .images()
        .commit_image(pb::CommitImageRequest {
            name: args.name.clone(),
            kernel: Some(kernel),
            initrd: Some(initrd),
            cmdline: args.cmdline,
            kernel_version: version,
            modules: modules.clone(),
            idempotency_key: String::new(),
        })
        .await
        .map_err(|s| conn.err(&format!("committing image '{}'", args.name), s))?
        .into_inner();
    say!("image {} committed; manifest blake3:", image.name);
    say!("{}", image.manifest_hash);
    Ok(())
}
