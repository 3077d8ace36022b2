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
    /// Kernel version (informational for now).
    #[arg(long, default_value = "")]
    pub kernel_version: String,
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
    let kernel = hash_file("kernel", &args.kernel).await?;
    let initrd = hash_file("initrd", &args.initrd).await?;
    let missing = conn
        .images()
        .missing_blobs(pb::MissingBlobsRequest {
            blobs: vec![kernel.clone(), initrd.clone()],
        })
        .await
        .map_err(|s| conn.err("checking stored blobs", s))?
        .into_inner()
        .missing;
    for (what, path, blob) in [
        ("kernel", &args.kernel, &kernel),
        ("initrd", &args.initrd, &initrd),
    ] {
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
            kernel_version: args.kernel_version,
            idempotency_key: String::new(),
        })
        .await
        .map_err(|s| conn.err(&format!("committing image '{}'", args.name), s))?
        .into_inner();
    say!("image {} committed; manifest blake3:", image.name);
    say!("{}", image.manifest_hash);
    Ok(())
}
