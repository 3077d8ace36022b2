//! Read-only questions asked of the [`State`]: racks, nodes, images,
//! assignments, boot records and the view one rack is served.

use super::*;

impl State {
    /// A rack agent's last cache report.
    pub fn rack_cache(&self, rack: &RackName) -> Option<&RackCacheReport> {
        self.rack_caches.get(rack)
    }

    /// A node's boot sessions, oldest first.
    pub fn boot_sessions(&self, node: NodeNumber) -> Vec<BootSession> {
        self.boot.sessions(node)
    }

    /// A node's log lines, optionally of one session.
    pub fn log_lines(&self, node: NodeNumber, session: Option<&str>) -> Vec<LogLine> {
        self.boot.lines(node, session)
    }

    /// Log lines agents reported dropped.
    pub fn dropped_log_lines(&self) -> u64 {
        self.boot.dropped_lines
    }

    /// All racks.
    pub fn racks(&self) -> impl Iterator<Item = &Rack> {
        self.racks.values()
    }

    /// One rack.
    pub fn rack(&self, name: &RackName) -> Option<&Rack> {
        self.racks.get(name)
    }

    /// All nodes, by number.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// One node.
    pub fn node(&self, n: NodeNumber) -> Option<&Node> {
        self.nodes.get(&n)
    }

    /// The node owning a MAC.
    pub fn node_by_mac(&self, mac: &Mac) -> Option<&Node> {
        self.macs.get(mac).and_then(|n| self.nodes.get(n))
    }

    /// All images, by name.
    pub fn images(&self) -> impl Iterator<Item = &Image> {
        self.images.values()
    }

    /// One image.
    pub fn image(&self, name: &ImageName) -> Option<&Image> {
        self.images.get(name)
    }

    /// Every assignment as (target, image).
    pub fn assignments(&self) -> Vec<(AssignTarget, ImageName)> {
        let mut out = Vec::new();
        if let Some(d) = &self.default_image {
            out.push((AssignTarget::Default, d.clone()));
        }
        for (r, i) in &self.rack_images {
            out.push((AssignTarget::Rack(r.clone()), i.clone()));
        }
        for (n, i) in &self.node_images {
            out.push((AssignTarget::Node(*n), i.clone()));
        }
        if let Some(d) = &self.discovery_image {
            out.push((AssignTarget::Discovery, d.clone()));
        }
        out
    }

    /// The image a node boots and where the assignment comes from
    /// (`"node"`, `"rack"` or `"default"`).
    pub fn resolved_image(&self, node: &Node) -> Option<(ImageName, &'static str)> {
        if let Some(i) = self.node_images.get(&node.number) {
            return Some((self.resolve(i), "node"));
        }
        if let Some(i) = self.rack_images.get(&node.rack) {
            return Some((self.resolve(i), "rack"));
        }
        self.default_image
            .as_ref()
            .map(|i| (self.resolve(i), "default"))
    }

    /// The view one rack's agent needs.
    pub fn rack_view(&self, name: &RackName) -> Option<RackView> {
        let rack = self.racks.get(name)?.clone();
        let nodes: Vec<_> = self
            .nodes
            .values()
            .filter(|n| &n.rack == name)
            .map(|n| (n.clone(), self.resolved_image(n)))
            .collect();
        let discovery = self.discovery_image().cloned();
        let names: BTreeSet<&ImageName> = nodes
            .iter()
            .filter_map(|(_, i)| i.as_ref().map(|(n, _)| n))
            .chain(discovery.as_ref())
            .collect();
        let images = names
            .into_iter()
            .filter_map(|n| self.images.get(n).cloned())
            .collect();
        Some(RackView {
            revision: self.revision,
            rack,
            nodes,
            images,
            discovery_image: discovery.clone(),
            meta: self.meta.clone(),
        })
    }
}
