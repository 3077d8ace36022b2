//! Administrative services: nodes, racks, images, assignments, cluster.

use std::pin::Pin;

use rackboot_proto::v1::{self as pb, assign_request::Target};
use rackboot_state::{
    AssignTarget, BlobRef, Command, Envelope, Image, ImageName, Mac, NodeNumber, Outcome,
};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{
    blob_from_pb, blob_to_pb, field, image_to_pb, node_to_pb, pending_to_pb, rack_from_pb,
    rack_to_pb,
};
use super::{Ctx, key, unix_now};

/// `NodeService`.
pub struct NodeApi(pub Ctx);
/// `RackService`.
pub struct RackApi(pub Ctx);
/// `ImageService`.
pub struct ImageApi(pub Ctx);
/// `AssignmentService`.
pub struct AssignmentApi(pub Ctx);
/// `MetaService`.
pub struct MetaApi(pub Ctx);

impl ImageApi {
    /// The image's kernel release: read from the kernel's boot header when it
    /// has one (a given `--kernel-version` must then agree), else the one
    /// given. A module bundle must be for exactly that release.
    async fn checked_kernel_version(
        &self,
        kernel: &BlobRef,
        modules: Option<&BlobRef>,
        given: String,
    ) -> Result<String, Status> {
        let blob_error = |what: &str, e: crate::blobs::BlobError| {
            Status::failed_precondition(format!("{what}: {e}"))
        };
        // The boot header sits in the first 64.5 KiB: read (and verify)
        // only the kernel's first 1 MiB group.
        let kernel_bytes = self
            .0
            .blobs
            .read_head_verified(&kernel.digest)
            .await
            .map_err(|e| blob_error("kernel", e))?;
        let version = match rackboot_image::kernel_release(&kernel_bytes) {
            Ok(header) => {
                if !given.is_empty() && given != header {
                    return Err(Status::invalid_argument(format!(
                        "kernel version {given} was given, but the kernel image header says {header}"
                    )));
                }
                header
            }
            Err(_) => given,
        };
        drop(kernel_bytes);
        let Some(modules) = modules else {
            return Ok(version);
        };
        let bytes = self
            .0
            .blobs
            .read_verified(&modules.digest)
            .await
            .map_err(|e| blob_error("modules", e))?;
        let bundle = rackboot_image::bundle::inspect(&bytes)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if version.is_empty() {
            return Err(Status::invalid_argument(format!(
                "the kernel has no readable boot header and no kernel version was given, so the module bundle (for {}) cannot be checked; give --kernel-version",
                bundle.release
            )));
        }
        rackboot_image::check_modules_match(&version, &bundle.release)
            .map_err(Status::invalid_argument)?;
        Ok(version)
    }
}

#[tonic::async_trait]
impl pb::node_service_server::NodeService for NodeApi {
    async fn list_nodes(
        &self,
        req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let rack = req.into_inner().rack;
        self.0.read().await?;
        let state = self.0.replica.state();
        let nodes = state
            .nodes()
            .filter(|n| rack.is_empty() || n.rack.as_str() == rack)
            .map(|n| node_to_pb(&state, n))
            .collect();
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    async fn get_node(
        &self,
        req: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        let n = NodeNumber(req.into_inner().number);
        self.0.read().await?;
        let state = self.0.replica.state();
        let node = state
            .node(n)
            .ok_or_else(|| Status::not_found(format!("node {n} not found")))?;
        Ok(Response::new(node_to_pb(&state, node)))
    }

    async fn list_boot_sessions(
        &self,
        req: Request<pb::ListBootSessionsRequest>,
    ) -> Result<Response<pb::ListBootSessionsResponse>, Status> {
        let n = NodeNumber(req.into_inner().number);
        self.0.read().await?;
        let state = self.0.replica.state();
        if state.node(n).is_none() {
            return Err(Status::not_found(format!("node {n} not found")));
        }
        let sessions = state
            .boot_sessions(n)
            .into_iter()
            .map(|s| pb::BootSession {
                id: s.id,
                node: s.node.0,
                mac: s.mac,
                image: s.image,
                kernel_blake3: s.kernel_blake3,
                kernel_version: s.kernel_version,
                transport: s.transport,
                unix_millis: s.unix_millis,
                rack: s.rack,
                phases: s.phases.into_iter().collect(),
            })
            .collect();
        Ok(Response::new(pb::ListBootSessionsResponse { sessions }))
    }

    async fn get_logs(
        &self,
        req: Request<pb::GetLogsRequest>,
    ) -> Result<Response<pb::GetLogsResponse>, Status> {
        let r = req.into_inner();
        let n = NodeNumber(r.number);
        self.0.read().await?;
        let state = self.0.replica.state();
        if state.node(n).is_none() {
            return Err(Status::not_found(format!("node {n} not found")));
        }
        let session = match r.boot.as_str() {
            "" => None,
            "last" => match state.boot_sessions(n).last() {
                Some(s) => Some(s.id.clone()),
                None => {
                    return Err(Status::not_found(format!(
                        "node {n} has no boot session yet"
                    )));
                }
            },
            id => {
                if !state.boot_sessions(n).iter().any(|s| s.id == id) {
                    return Err(Status::not_found(format!(
                        "boot: node {n} has no kept session '{id}'"
                    )));
                }
                Some(id.to_string())
            }
        };
        let lines = state
            .log_lines(n, session.as_deref())
            .into_iter()
            .filter(|l| l.unix_millis > r.after_unix_millis)
            .map(|l| pb::NodeLogLine {
                session: l.session,
                unix_millis: l.unix_millis,
                text: l.text,
            })
            .collect();
        Ok(Response::new(pb::GetLogsResponse {
            session: session.unwrap_or_default(),
            lines,
        }))
    }

    async fn replace_node(
        &self,
        req: Request<pb::ReplaceNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        let metadata = req.metadata().clone();
        let r = req.into_inner();
        let mut macs: Vec<Mac> = Vec::new();
        for (i, m) in r.macs.iter().enumerate() {
            macs.push(field(&format!("macs[{i}]"), m)?);
        }
        let command = Command::ReplaceNode {
            number: NodeNumber(r.number),
            macs,
        };
        self.node_command(key(&r.idempotency_key, &metadata), command)
            .await
    }

    async fn retire_node(
        &self,
        req: Request<pb::RetireNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        let metadata = req.metadata().clone();
        let r = req.into_inner();
        let command = Command::RetireNode {
            number: NodeNumber(r.number),
        };
        self.node_command(key(&r.idempotency_key, &metadata), command)
            .await
    }

    async fn list_pending(
        &self,
        _req: Request<pb::ListPendingRequest>,
    ) -> Result<Response<pb::ListPendingResponse>, Status> {
        self.0.read().await?;
        let state = self.0.replica.state();
        let machines = state.pending().map(|p| pending_to_pb(&state, p)).collect();
        Ok(Response::new(pb::ListPendingResponse { machines }))
    }

    async fn add_nodes(
        &self,
        req: Request<pb::AddNodesRequest>,
    ) -> Result<Response<pb::AddNodesResponse>, Status> {
        let r = req.into_inner();
        let rack: rackboot_state::RackName = field("rack", &r.rack)?;
        if r.machines.len() > Self::MAX_ADD {
            return Err(Status::invalid_argument(format!(
                "machines: {} given, at most {} per request",
                r.machines.len(),
                Self::MAX_ADD
            )));
        }
        let mut commands = Vec::with_capacity(r.machines.len());
        for (i, m) in r.machines.iter().enumerate() {
            let mut macs: Vec<Mac> = Vec::new();
            for (j, mac) in m.macs.iter().enumerate() {
                macs.push(field(&format!("machines[{i}].macs[{j}]"), mac)?);
            }
            commands.push(Command::DiscoverNode {
                rack: rack.clone(),
                macs,
                uuid: None,
                inventory: Default::default(),
                hold: false,
                seen_at: unix_now(),
            });
        }
        let mut nodes = Vec::with_capacity(commands.len());
        // A MAC names its machine: adding again is naturally idempotent.
        for command in commands {
            nodes.push(self.node_command(None, command).await?.into_inner());
        }
        Ok(Response::new(pb::AddNodesResponse { nodes }))
    }

    async fn accept_machine(
        &self,
        req: Request<pb::AcceptMachineRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        let metadata = req.metadata().clone();
        let r = req.into_inner();
        let command = Command::AcceptMachine {
            mac: field("mac", &r.mac)?,
        };
        self.node_command(key(&r.idempotency_key, &metadata), command)
            .await
    }

    async fn reject_machine(
        &self,
        req: Request<pb::RejectMachineRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        let metadata = req.metadata().clone();
        let r = req.into_inner();
        let command = Command::RejectMachine {
            mac: field("mac", &r.mac)?,
        };
        match self
            .0
            .propose(Envelope {
                idempotency_key: key(&r.idempotency_key, &metadata),
                command,
            })
            .await?
        {
            Outcome::Pending(p) => Ok(Response::new(pending_to_pb(&self.0.replica.state(), &p))),
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }
}

impl NodeApi {
    /// Most machines per `AddNodes` request.
    const MAX_ADD: usize = 10_000;

    /// Propose a command whose outcome is a node.
    async fn node_command(
        &self,
        idempotency_key: Option<String>,
        command: Command,
    ) -> Result<Response<pb::Node>, Status> {
        match self
            .0
            .propose(Envelope {
                idempotency_key,
                command,
            })
            .await?
        {
            Outcome::Node(n) => Ok(Response::new(node_to_pb(&self.0.replica.state(), &n))),
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }
}

#[tonic::async_trait]
impl pb::rack_service_server::RackService for RackApi {
    async fn list_racks(
        &self,
        _req: Request<pb::ListRacksRequest>,
    ) -> Result<Response<pb::ListRacksResponse>, Status> {
        self.0.read().await?;
        let racks = self.0.replica.state().racks().map(rack_to_pb).collect();
        Ok(Response::new(pb::ListRacksResponse { racks }))
    }

    async fn move_rack(
        &self,
        req: Request<pb::MoveRackRequest>,
    ) -> Result<Response<pb::MoveRackResponse>, Status> {
        let metadata = req.metadata().clone();
        let r = req.into_inner();
        let rack = rack_from_pb(r.rack.as_ref())?;
        self.0.read().await?;
        let before: Vec<(rackboot_state::NodeNumber, Option<std::net::Ipv4Addr>)> = {
            let state = self.0.replica.state();
            let old = state
                .rack(&rack.name)
                .ok_or_else(|| Status::not_found(format!("rack {} not found", rack.name)))?
                .clone();
            state
                .nodes()
                .filter(|n| n.rack == rack.name)
                .map(|n| (n.number, old.slot_address(n.slot)))
                .collect()
        };
        match self
            .0
            .propose(Envelope {
                idempotency_key: key(&r.idempotency_key, &metadata),
                command: Command::MoveRack { rack },
            })
            .await?
        {
            Outcome::Rack(rack) => {
                let state = self.0.replica.state();
                let moved = before
                    .iter()
                    .filter(|(n, from)| {
                        state
                            .node(*n)
                            .and_then(|node| rack.slot_address(node.slot))
                            .as_ref()
                            != from.as_ref()
                    })
                    .count();
                tracing::warn!(rack = %rack.name, nodes_moved = moved, "rack moved by an administrator");
                Ok(Response::new(pb::MoveRackResponse {
                    rack: Some(rack_to_pb(&rack)),
                    nodes_moved: u32::try_from(moved).unwrap_or(u32::MAX),
                }))
            }
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }

    async fn get_rack_cache(
        &self,
        req: Request<pb::GetRackCacheRequest>,
    ) -> Result<Response<pb::RackCache>, Status> {
        let rack: rackboot_state::RackName = field("rack", &req.into_inner().rack)?;
        self.0.read().await?;
        let state = self.0.replica.state();
        let view = state
            .rack_view(&rack)
            .ok_or_else(|| Status::not_found(format!("rack {rack} not found")))?;
        let report = state.rack_cache(&rack).cloned().unwrap_or_default();
        // Needed: every part of every image the rack's view carries.
        let mut blobs: std::collections::BTreeMap<String, pb::CachedBlob> =
            std::collections::BTreeMap::new();
        for image in &view.images {
            let parts = [
                ("kernel", Some(image.kernel)),
                ("initrd", Some(image.initrd)),
                ("modules", image.modules),
                ("dtb", image.dtb),
            ];
            for (part, blob) in parts {
                let Some(b) = blob else { continue };
                let e = blobs
                    .entry(b.digest.to_string())
                    .or_insert_with(|| pb::CachedBlob {
                        blob: Some(blob_to_pb(&b)),
                        ..Default::default()
                    });
                e.needed = true;
                e.used_by.push(format!("{} {part}", image.name));
            }
        }
        for b in &report.held {
            blobs
                .entry(b.digest.to_string())
                .or_insert_with(|| pb::CachedBlob {
                    blob: Some(blob_to_pb(b)),
                    ..Default::default()
                })
                .held = true;
        }
        Ok(Response::new(pb::RackCache {
            rack: rack.to_string(),
            agent_id: report.agent_id,
            reported_unix_millis: report.unix_millis,
            bytes: report.bytes,
            max_bytes: report.max_bytes,
            evicted: report.evicted,
            repaired_groups: report.repaired_groups,
            blobs: blobs.into_values().collect(),
            problems: report.problems,
        }))
    }
}

/// Longest a push may go without sending its next message.
pub const UPLOAD_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// The next message of an upload; a client silent for [`UPLOAD_IDLE`] is
/// dropped (its partial upload stays, resumable).
async fn next_chunk(
    stream: &mut Streaming<pb::PutBlobChunk>,
) -> Result<Option<pb::PutBlobChunk>, Status> {
    match tokio::time::timeout(UPLOAD_IDLE, stream.next()).await {
        Ok(Some(m)) => m.map(Some),
        Ok(None) => Ok(None),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no upload data for {UPLOAD_IDLE:?}"
        ))),
    }
}

#[tonic::async_trait]
impl pb::image_service_server::ImageService for ImageApi {
    async fn missing_blobs(
        &self,
        req: Request<pb::MissingBlobsRequest>,
    ) -> Result<Response<pb::MissingBlobsResponse>, Status> {
        let mut missing = Vec::new();
        let mut partial = Vec::new();
        for (i, b) in req.into_inner().blobs.iter().enumerate() {
            let blob = blob_from_pb(&format!("blobs[{i}]"), Some(b))?;
            if self.0.blobs.size(&blob.digest).await != Some(blob.size) {
                missing.push(blob_to_pb(&blob));
                if let Some(p) = self.0.blobs.partial_status(blob).await {
                    let mut bitmap = vec![0u8; p.held.len().div_ceil(8)];
                    for (g, held) in p.held.iter().enumerate() {
                        if *held && let Some(byte) = bitmap.get_mut(g / 8) {
                            *byte |= 1 << (g % 8);
                        }
                    }
                    partial.push(pb::PartialBlob {
                        blob: Some(blob_to_pb(&blob)),
                        groups_held: bitmap,
                        bytes_held: p.bytes,
                    });
                }
            }
        }
        Ok(Response::new(pb::MissingBlobsResponse { missing, partial }))
    }

    async fn put_blob(
        &self,
        req: Request<Streaming<pb::PutBlobChunk>>,
    ) -> Result<Response<pb::PutBlobResponse>, Status> {
        let mut stream = req.into_inner();
        let first = next_chunk(&mut stream).await?.ok_or_else(|| {
            Status::invalid_argument("empty upload: the first message must carry a header")
        })?;
        let blob = blob_from_pb("header", first.header.as_ref())?;
        if self.0.blobs.size(&blob.digest).await == Some(blob.size) {
            // Already stored here: nothing new is written, but it is
            // acknowledged only on a quorum (a push retried after a failed
            // replication completes it).
            self.0.repl.replicate_to_quorum(blob).await?;
            return Ok(Response::new(pb::PutBlobResponse {
                blob: Some(blob_to_pb(&blob)),
                stored: false,
            }));
        }
        let bad = |e: crate::blobs::BlobError| match e {
            crate::blobs::BlobError::Io { .. } => Status::internal(e.to_string()),
            crate::blobs::BlobError::Busy(_) => Status::aborted(e.to_string()),
            _ => Status::invalid_argument(e.to_string()),
        };
        let blob = if first.outboard.is_empty() {
            // In order from offset 0, verified as a whole at the end.
            if first.offset != 0 {
                return Err(Status::invalid_argument(
                    "offset: a push without an outboard must start at offset 0",
                ));
            }
            let mut upload = self.0.blobs.begin(blob).await.map_err(bad)?;
            upload.write(&first.data).await.map_err(bad)?;
            while let Some(chunk) = next_chunk(&mut stream).await? {
                if chunk.header.is_some() {
                    return Err(Status::invalid_argument(
                        "header: only the first message may carry one",
                    ));
                }
                if chunk.offset != 0 && chunk.offset != upload.written() {
                    return Err(Status::invalid_argument(format!(
                        "offset {} out of order (expected {}): a push without an outboard is sent in order",
                        chunk.offset,
                        upload.written()
                    )));
                }
                upload.write(&chunk.data).await.map_err(bad)?;
            }
            upload.finish().await.map_err(bad)?
        } else {
            // Resumable: whole groups at any offset, each verified before it
            // is written; what arrived intact stays when the stream breaks.
            let mut up = self
                .0
                .blobs
                .resume(blob, &first.outboard)
                .await
                .map_err(bad)?;
            if !first.data.is_empty() || blob.size == 0 {
                up.write(first.offset, &first.data).await.map_err(bad)?;
            }
            while let Some(chunk) = next_chunk(&mut stream).await? {
                if chunk.header.is_some() {
                    return Err(Status::invalid_argument(
                        "header: only the first message may carry one",
                    ));
                }
                up.write(chunk.offset, &chunk.data).await.map_err(bad)?;
            }
            if !up.complete() {
                let held = up.status().map(|s| s.bytes).unwrap_or_default();
                return Err(Status::failed_precondition(format!(
                    "blob {} incomplete: {held} of {} bytes held; send the missing groups (MissingBlobs lists what is held)",
                    blob.digest, blob.size
                )));
            }
            up.finish().await.map_err(bad)?
        };
        tracing::info!(blob = %blob.digest, size = blob.size, "blob stored");
        // Acknowledged only once durable on a majority of the voters.
        self.0.repl.replicate_to_quorum(blob).await?;
        Ok(Response::new(pb::PutBlobResponse {
            blob: Some(blob_to_pb(&blob)),
            stored: true,
        }))
    }

    async fn commit_image(
        &self,
        req: Request<pb::CommitImageRequest>,
    ) -> Result<Response<pb::ImageManifest>, Status> {
        let metadata = req.metadata().clone();
        let r = req.into_inner();
        let name: ImageName = field("name", &r.name)?;
        let kernel = blob_from_pb("kernel", r.kernel.as_ref())?;
        let initrd = blob_from_pb("initrd", r.initrd.as_ref())?;
        let modules = match r.modules.as_ref() {
            Some(m) => Some(blob_from_pb("modules", Some(m))?),
            None => None,
        };
        let dtb = match r.dtb.as_ref() {
            Some(d) => Some(blob_from_pb("dtb", Some(d))?),
            None => None,
        };
        for (what, b) in [("kernel", Some(&kernel)), ("initrd", Some(&initrd))]
            .into_iter()
            .chain([("modules", modules.as_ref()), ("dtb", dtb.as_ref())])
        {
            let Some(b) = b else { continue };
            // Named by a manifest now: the collector's grace starts again.
            self.0.blobs.touch(&b.digest).await;
            // Stored on another replica only (the push went there): pull it,
            // since the kernel and modules are inspected here.
            if let Err(e) = self.0.repl.ensure_local_detached(*b, Vec::new()).await {
                return Err(Status::failed_precondition(format!(
                    "{what}: blob {} ({} bytes) is not stored on any reachable replica; upload it first ({e})",
                    b.digest, b.size
                )));
            }
            // Never commit a manifest whose bytes could be lost with one
            // replica (normally a no-op: the push already made it durable).
            self.0.repl.replicate_to_quorum(*b).await?;
        }
        let kernel_version = self
            .checked_kernel_version(&kernel, modules.as_ref(), r.kernel_version)
            .await?;
        let image = Image {
            name,
            kernel,
            initrd,
            cmdline: r.cmdline,
            kernel_version,
            modules,
            dtb,
            committed_at: unix_now(),
        };
        let out = self
            .0
            .propose(Envelope {
                idempotency_key: key(&r.idempotency_key, &metadata),
                command: Command::CommitImage { image },
            })
            .await?;
        match out {
            Outcome::Image(i) => Ok(Response::new(image_to_pb(&i))),
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }

    async fn list_images(
        &self,
        _req: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        self.0.read().await?;
        let state = self.0.replica.state();
        let images = state.images().map(image_to_pb).collect();
        let tags = state
            .tags()
            .iter()
            .map(|(t, i)| pb::ImageTag {
                tag: t.to_string(),
                image: i.to_string(),
            })
            .collect();
        Ok(Response::new(pb::ListImagesResponse { images, tags }))
    }

    async fn tag_image(
        &self,
        req: Request<pb::TagImageRequest>,
    ) -> Result<Response<pb::TagImageResponse>, Status> {
        let metadata = req.metadata().clone();
        let r = req.into_inner();
        let tag: ImageName = field("tag", &r.tag)?;
        let image: ImageName = field("image", &r.image)?;
        match self
            .0
            .propose(Envelope {
                idempotency_key: key("", &metadata),
                command: Command::TagImage { tag, image },
            })
            .await?
        {
            Outcome::Tagged { previous, revision } => Ok(Response::new(pb::TagImageResponse {
                previous: previous.map(|p| p.to_string()).unwrap_or_default(),
                revision,
            })),
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }

    async fn get_image(
        &self,
        req: Request<pb::GetImageRequest>,
    ) -> Result<Response<pb::ImageManifest>, Status> {
        let name: ImageName = field("name", &req.into_inner().name)?;
        self.0.read().await?;
        let state = self.0.replica.state();
        let image = state
            .image(&name)
            .ok_or_else(|| Status::not_found(format!("image '{name}' not found")))?;
        Ok(Response::new(image_to_pb(image)))
    }
}

#[tonic::async_trait]
impl pb::assignment_service_server::AssignmentService for AssignmentApi {
    async fn assign(
        &self,
        req: Request<pb::AssignRequest>,
    ) -> Result<Response<pb::AssignResponse>, Status> {
        let metadata = req.metadata().clone();
        let r = req.into_inner();
        let target = match r.target {
            Some(Target::ClusterDefault(_)) => AssignTarget::Default,
            Some(Target::Rack(rack)) => AssignTarget::Rack(field("rack", &rack)?),
            Some(Target::Node(n)) => AssignTarget::Node(NodeNumber(n)),
            Some(Target::Discovery(_)) => AssignTarget::Discovery,
            None => {
                return Err(Status::invalid_argument(
                    "target: missing (cluster_default, rack, node or discovery)",
                ));
            }
        };
        let image: ImageName = field("image", &r.image)?;
        match self
            .0
            .propose(Envelope {
                idempotency_key: key(&r.idempotency_key, &metadata),
                command: Command::Assign { target, image },
            })
            .await?
        {
            Outcome::Assigned { revision } => Ok(Response::new(pb::AssignResponse { revision })),
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }

    async fn list_assignments(
        &self,
        _req: Request<pb::ListAssignmentsRequest>,
    ) -> Result<Response<pb::ListAssignmentsResponse>, Status> {
        self.0.read().await?;
        let assignments = self
            .0
            .replica
            .state()
            .assignments()
            .into_iter()
            .map(|(t, i)| pb::Assignment {
                target: t.to_string(),
                image: i.to_string(),
            })
            .collect();
        Ok(Response::new(pb::ListAssignmentsResponse { assignments }))
    }
}

#[tonic::async_trait]
impl pb::meta_service_server::MetaService for MetaApi {
    async fn set_meta(
        &self,
        req: Request<pb::SetMetaRequest>,
    ) -> Result<Response<pb::SetMetaResponse>, Status> {
        let metadata = req.metadata().clone();
        let r = req.into_inner();
        let value = (!r.unset).then_some(r.value);
        rackboot_state::validate_meta(&r.key, value.as_deref()).map_err(|reason| {
            Status::invalid_argument(format!("meta key '{}': {reason}", r.key))
        })?;
        match self
            .0
            .propose(Envelope {
                idempotency_key: key(&r.idempotency_key, &metadata),
                command: Command::SetMeta { key: r.key, value },
            })
            .await?
        {
            Outcome::Meta { revision } => Ok(Response::new(pb::SetMetaResponse { revision })),
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }

    async fn list_meta(
        &self,
        _req: Request<pb::ListMetaRequest>,
    ) -> Result<Response<pb::ListMetaResponse>, Status> {
        self.0.read().await?;
        let meta = self.0.replica.state().meta().clone().into_iter().collect();
        Ok(Response::new(pb::ListMetaResponse { meta }))
    }
}

/// A boxed server stream.
pub type BoxStream<T> =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send + 'static>>;
