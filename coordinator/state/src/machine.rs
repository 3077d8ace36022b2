//! The state and how commands change it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::boot::{BootRecords, BootSession, LogLine, RackCacheReport};
use crate::command::{AssignTarget, Command, Envelope, Outcome};
use crate::error::StateError;
use crate::types::{Image, ImageName, Mac, Node, NodeNumber, PendingMachine, Rack, RackName};

/// How many idempotency keys are remembered (oldest forgotten first).
const IDEMPOTENCY_WINDOW: usize = 100_000;

/// The replicated state of the cluster.
///
/// Serialized (snapshots, digests) without its derived index, which is
/// rebuilt on first use after deserialization.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    revision: u64,
    racks: BTreeMap<RackName, Rack>,
    nodes: BTreeMap<NodeNumber, Node>,
    macs: BTreeMap<Mac, NodeNumber>,
    images: BTreeMap<ImageName, Image>,
    default_image: Option<ImageName>,
    rack_images: BTreeMap<RackName, ImageName>,
    node_images: BTreeMap<NodeNumber, ImageName>,
    idempotency: BTreeMap<String, Result<Outcome, StateError>>,
    idempotency_order: VecDeque<String>,
    /// Site key-values, served in every node's boot-info.
    #[serde(default)]
    meta: BTreeMap<String, String>,
    /// Image for machines not numbered yet (the probe's discovery image).
    #[serde(default)]
    discovery_image: Option<ImageName>,
    /// Machines held for manual acceptance, by first MAC.
    #[serde(default)]
    pending: BTreeMap<Mac, PendingMachine>,
    /// Boot sessions and node logs (bounded; not revisioned).
    #[serde(default)]
    boot: BootRecords,
    /// Tags: movable names pointing at images.
    #[serde(default)]
    tags: BTreeMap<ImageName, ImageName>,
    /// Each rack agent's last cache report (not revisioned).
    #[serde(default)]
    rack_caches: BTreeMap<RackName, RackCacheReport>,
    /// Derived: used slots per rack, so a discovery costs O(log n), not O(n).
    #[serde(skip)]
    rack_slots: SlotIndex,
}

/// Used slots per rack, derived from the nodes (`None` until built). Never
/// serialized, and equal to any other index: it is a cache, not state.
#[derive(Clone, Default)]
struct SlotIndex(Option<BTreeMap<RackName, BTreeSet<u32>>>);

impl PartialEq for SlotIndex {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for SlotIndex {}

impl std::fmt::Debug for SlotIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlotIndex")
    }
}

impl SlotIndex {
    fn get(
        &mut self,
        nodes: &BTreeMap<NodeNumber, Node>,
    ) -> &mut BTreeMap<RackName, BTreeSet<u32>> {
        self.0.get_or_insert_with(|| {
            let mut index: BTreeMap<RackName, BTreeSet<u32>> = BTreeMap::new();
            for n in nodes.values() {
                index.entry(n.rack.clone()).or_default().insert(n.slot);
            }
            index
        })
    }
}

/// Lowest value not in `used` (a set of `0..`-based or `1..`-based values
/// starting at `start`): O(log n) when `used` is contiguous, a scan otherwise.
/// `node` may be changed for a report from `rack` only if it is that rack's;
/// else the refusal names the reported MAC it owns.
fn own_rack(node: &Node, rack: &RackName, macs: &[Mac]) -> Result<(), StateError> {
    if &node.rack == rack {
        return Ok(());
    }
    let mac = macs
        .iter()
        .find(|m| node.macs.contains(m))
        .copied()
        .unwrap_or(macs[0]);
    Err(StateError::OtherRack {
        mac,
        node: node.number,
        rack: node.rack.clone(),
    })
}

fn lowest_free(used: &BTreeSet<u32>, start: u32) -> u32 {
    match used.last() {
        None => start,
        Some(&last)
            if (last - start) as usize + 1 == used.len() && used.first() == Some(&start) =>
        {
            last + 1
        }
        Some(_) => {
            let mut expected = start;
            for &v in used {
                if v != expected {
                    break;
                }
                expected += 1;
            }
            expected
        }
    }
}

/// What a report says about a machine besides its MACs (recorded only).
struct Seen {
    uuid: Option<String>,
    inventory: BTreeMap<String, String>,
    seen_at: u64,
}

/// Everything an agent needs to serve one rack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RackView {
    /// State revision the view was taken at.
    pub revision: u64,
    /// The rack.
    pub rack: Rack,
    /// Its nodes with their resolved image and where that came from.
    pub nodes: Vec<(Node, Option<(ImageName, &'static str)>)>,
    /// Every image assigned to one of its nodes, and the discovery image.
    pub images: Vec<Image>,
    /// The image machines without a number boot (`rackboot probe`).
    pub discovery_image: Option<ImageName>,
    /// Site key-values.
    pub meta: BTreeMap<String, String>,
}

impl State {
    /// Revision: bumped by one by every command that changes racks, nodes,
    /// held machines, images, tags, assignments or site key-values. Boot
    /// sessions, node logs and rack cache reports
    /// ([`Command::RecordBootSessions`], [`Command::AppendLogs`],
    /// [`Command::RecordRackCache`]) are replicated but leave it unchanged.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Apply a committed command. Deterministic; on error the state is unchanged.
    pub fn apply(&mut self, envelope: Envelope) -> Result<Outcome, StateError> {
        if let Some(key) = &envelope.idempotency_key
            && let Some(first) = self.idempotency.get(key)
        {
            return first.clone();
        }
        let result = self.apply_command(envelope.command);
        if let Some(key) = envelope.idempotency_key {
            self.remember(key, result.clone());
        }
        result
    }

    fn remember(&mut self, key: String, result: Result<Outcome, StateError>) {
        self.idempotency.insert(key.clone(), result);
        self.idempotency_order.push_back(key);
        while self.idempotency_order.len() > IDEMPOTENCY_WINDOW {
            if let Some(old) = self.idempotency_order.pop_front() {
                self.idempotency.remove(&old);
            }
        }
    }

    fn apply_command(&mut self, command: Command) -> Result<Outcome, StateError> {
        match command {
            Command::RegisterRack { rack } => self.register_rack(rack, false),
            Command::MoveRack { rack } => {
                if !self.racks.contains_key(&rack.name) {
                    return Err(StateError::RackNotFound(rack.name));
                }
                self.register_rack(rack, true)
            }
            Command::DiscoverNode {
                rack,
                macs,
                uuid,
                inventory,
                hold,
                seen_at,
            } => {
                let seen = Seen {
                    uuid,
                    inventory,
                    seen_at,
                };
                self.discover_node(rack, macs, seen, hold)
            }
            Command::AcceptMachine { mac } => self.accept_machine(mac),
            Command::RejectMachine { mac } => self.reject_machine(mac),
            Command::ReplaceNode { number, macs } => self.replace_node(number, macs),
            Command::RetireNode { number } => self.retire_node(number),
            Command::CommitImage { image } => self.commit_image(image),
            Command::Assign { target, image } => self.assign(target, image),
            Command::SetMeta { key, value } => self.set_meta(key, value),
            Command::RecordBootSessions { rack, sessions } => {
                Ok(self.record_sessions(&rack, sessions))
            }
            Command::RecordRackCache { rack, report } => self.record_rack_cache(rack, report),
            Command::TagImage { tag, image } => self.tag_image(tag, image),
            Command::AppendLogs {
                rack,
                lines,
                dropped,
            } => Ok(self.append_logs(&rack, lines, dropped)),
        }
    }

    /// Create or change a rack; only with `may_move` (an administrator's
    /// `MoveRack`) may a node's address change.
    fn register_rack(&mut self, rack: Rack, may_move: bool) -> Result<Outcome, StateError> {
        rack.validate().map_err(|reason| StateError::InvalidRack {
            rack: rack.name.clone(),
            reason,
        })?;
        if let Some(existing) = self.racks.get(&rack.name) {
            if existing == &rack {
                return Ok(Outcome::Rack(rack));
            }
            // Existing nodes must keep their addresses: refuse a change that would
            // move a used slot out of range.
            let max_slot = self
                .nodes
                .values()
                .filter(|n| n.rack == rack.name)
                .map(|n| n.slot)
                .max();
            if let Some(slot) = max_slot
                && rack.slot_address(slot).is_none()
            {
                return Err(StateError::InvalidRack {
                    rack: rack.name.clone(),
                    reason: format!("slot {slot} is in use and would fall outside the new range"),
                });
            }
            // Nor move a node's address: two machines would hold one until
            // leases run out. The first node (by number) that would move is
            // named.
            let moved = self
                .nodes
                .values()
                .filter(|n| n.rack == rack.name)
                .find_map(|n| {
                    let from = existing.slot_address(n.slot)?;
                    let to = rack.slot_address(n.slot)?;
                    (from != to).then_some((n.number, from, to))
                });
            if let Some((node, from, to)) = moved.filter(|_| !may_move) {
                return Err(StateError::RackWouldMoveNodes {
                    rack: rack.name.clone(),
                    node,
                    from,
                    to,
                });
            }
        }
        self.racks.insert(rack.name.clone(), rack.clone());
        self.revision += 1;
        Ok(Outcome::Rack(rack))
    }

    fn discover_node(
        &mut self,
        rack_name: RackName,
        macs: Vec<Mac>,
        seen: Seen,
        hold: bool,
    ) -> Result<Outcome, StateError> {
        if !self.racks.contains_key(&rack_name) {
            return Err(StateError::RackNotFound(rack_name));
        }
        if macs.is_empty() || macs.len() > crate::MAX_MACS_PER_NODE {
            return Err(StateError::BadMacCount {
                got: macs.len(),
                max: crate::MAX_MACS_PER_NODE,
            });
        }
        if let Some(bad) = macs.iter().find(|m| !m.is_unicast()) {
            return Err(StateError::NotUnicast(*bad));
        }
        // Known machine: any of its MACs identifies it.
        let known: BTreeSet<NodeNumber> = macs
            .iter()
            .filter_map(|m| self.macs.get(m))
            .copied()
            .collect();
        if let Some(&number) = known.iter().next() {
            if known.len() > 1 {
                // MACs of two different nodes reported together: never merge
                // silently. Name the node that owns the conflicting MAC.
                let other = macs
                    .iter()
                    .find_map(|m| self.macs.get(m).filter(|n| **n != number).map(|n| (*m, *n)));
                if let Some((mac, node)) = other {
                    return Err(StateError::MacTaken { mac, node });
                }
            }
            let node = self
                .nodes
                .get(&number)
                .ok_or(StateError::NodeNotFound(number))?;
            // One rack's agent never changes another rack's node.
            own_rack(node, &rack_name, &macs)?;
            // A report never changes a known node: only its own MACs is
            // the machine seen again; new MACs beside one of its MACs are
            // held for an administrator (`node accept` joins them to it).
            if macs.iter().all(|m| node.macs.contains(m)) {
                return Ok(Outcome::Node(node.clone()));
            }
            return self.hold_machine(rack_name, macs, seen);
        }
        if hold {
            return self.hold_machine(rack_name, macs, seen);
        }
        self.number_machine(rack_name, macs, seen)
    }

    /// Record an unknown machine for manual acceptance (merging reports
    /// that share a MAC).
    fn hold_machine(
        &mut self,
        rack: RackName,
        macs: Vec<Mac>,
        seen: Seen,
    ) -> Result<Outcome, StateError> {
        // Machines held longer than the TTL no longer count, and are
        // forgotten if this report is taken (time travels in the command:
        // `seen_at` is stamped by the proposer; a refusal changes nothing).
        let now = seen.seen_at;
        let live = |p: &PendingMachine| p.seen_at.saturating_add(crate::PENDING_TTL_SECS) > now;
        let expired: Vec<Mac> = self
            .pending
            .iter()
            .filter(|(_, p)| !live(p))
            .map(|(k, _)| *k)
            .collect();
        // Every held machine sharing a MAC with the report is the same
        // machine: they become one (under the first one's key).
        let sharing: Vec<Mac> = self
            .pending
            .iter()
            .filter(|(_, p)| live(p) && p.macs.iter().any(|m| macs.contains(m)))
            .map(|(k, _)| *k)
            .collect();
        if let Some(p) = sharing
            .iter()
            .filter_map(|k| self.pending.get(k))
            .find(|p| p.rack != rack)
        {
            // One rack's agent never moves another rack's held machine.
            let mac = p
                .macs
                .iter()
                .find(|m| macs.contains(m))
                .copied()
                .unwrap_or(macs[0]);
            return Err(StateError::HeldByOtherRack {
                mac,
                rack: p.rack.clone(),
            });
        }
        let existing = sharing.first().copied();
        let held = self.pending.len() - expired.len();
        if existing.is_none() && held >= crate::MAX_PENDING {
            return Err(StateError::PendingFull(held));
        }
        let key = existing.unwrap_or(macs[0]);
        let previous = existing.and_then(|k| self.pending.get(&k));
        let mut all = previous.map(|p| p.macs.clone()).unwrap_or_default();
        let others: Vec<Mac> = sharing
            .iter()
            .skip(1)
            .filter_map(|k| self.pending.get(k))
            .flat_map(|p| p.macs.iter().copied())
            .collect();
        for m in others.into_iter().chain(macs) {
            if !all.contains(&m) && all.len() < crate::MAX_MACS_PER_NODE {
                all.push(m);
            }
        }
        let machine = PendingMachine {
            rack,
            macs: all,
            uuid: seen.uuid,
            inventory: seen.inventory,
            // First seen: a machine reporting again changes nothing.
            seen_at: previous.map_or(seen.seen_at, |p| p.seen_at),
        };
        if expired.is_empty() && sharing.len() <= 1 && previous == Some(&machine) {
            return Ok(Outcome::Pending(machine));
        }
        for k in expired.iter().chain(sharing.iter().skip(1)) {
            self.pending.remove(k);
        }
        self.pending.insert(key, machine.clone());
        self.revision += 1;
        Ok(Outcome::Pending(machine))
    }

    /// Give a new machine the next free number and its rack's lowest free slot.
    fn number_machine(
        &mut self,
        rack_name: RackName,
        macs: Vec<Mac>,
        seen: Seen,
    ) -> Result<Outcome, StateError> {
        let rack = self
            .racks
            .get(&rack_name)
            .ok_or_else(|| StateError::RackNotFound(rack_name.clone()))?;
        let slot = self
            .rack_slots
            .get(&self.nodes)
            .get(&rack_name)
            .map_or(0, |used| lowest_free(used, 0));
        if slot >= rack.slot_count() {
            return Err(StateError::RackFull {
                rack: rack_name.clone(),
                subnet: rack.subnet.to_string(),
            });
        }
        let number = self.lowest_free_number();
        let mut unique = Vec::new();
        for m in macs {
            if !unique.contains(&m) {
                unique.push(m);
            }
        }
        self.pending
            .retain(|_, p| !p.macs.iter().any(|m| unique.contains(m)));
        let node = Node {
            number,
            macs: unique,
            rack: rack_name,
            slot,
            uuid: seen.uuid,
            retired: false,
            inventory: seen.inventory,
        };
        for m in &node.macs {
            self.macs.insert(*m, number);
        }
        self.rack_slots
            .get(&self.nodes)
            .entry(node.rack.clone())
            .or_default()
            .insert(slot);
        self.nodes.insert(number, node.clone());
        self.revision += 1;
        Ok(Outcome::Node(node))
    }

    /// The key of the pending machine that has `mac`.
    fn pending_key(&self, mac: &Mac) -> Result<Mac, StateError> {
        self.pending
            .iter()
            .find(|(_, p)| p.macs.contains(mac))
            .map(|(k, _)| *k)
            .ok_or(StateError::NotPending(*mac))
    }

    fn reject_machine(&mut self, mac: Mac) -> Result<Outcome, StateError> {
        let key = self.pending_key(&mac)?;
        let machine = self
            .pending
            .remove(&key)
            .ok_or(StateError::NotPending(mac))?;
        self.revision += 1;
        Ok(Outcome::Pending(machine))
    }

    fn accept_machine(&mut self, mac: Mac) -> Result<Outcome, StateError> {
        let key = match self.pending_key(&mac) {
            Ok(k) => k,
            Err(e) => {
                return match self.node_by_mac(&mac) {
                    Some(node) => Ok(Outcome::Node(node.clone())),
                    None => Err(e),
                };
            }
        };
        let machine = self
            .pending
            .get(&key)
            .cloned()
            .ok_or(StateError::NotPending(mac))?;
        let seen = Seen {
            uuid: machine.uuid,
            inventory: machine.inventory,
            seen_at: machine.seen_at,
        };
        match self.claimed_node(&machine.macs)? {
            Some(number) => self.join_node(number, &machine.rack, &machine.macs, seen),
            None => self.number_machine(machine.rack, machine.macs, seen),
        }
    }

    /// The node owning any of `macs`: none, or exactly one (MACs of two
    /// nodes together are refused, naming the second).
    fn claimed_node(&self, macs: &[Mac]) -> Result<Option<NodeNumber>, StateError> {
        let mut owner = None;
        for m in macs {
            if let Some(&n) = self.macs.get(m) {
                match owner {
                    None => owner = Some(n),
                    Some(o) if o != n => return Err(StateError::MacTaken { mac: *m, node: n }),
                    Some(_) => {}
                }
            }
        }
        Ok(owner)
    }

    /// An administrator accepted a held report naming node `number`'s MAC:
    /// its other MACs (and inventory) join that node.
    fn join_node(
        &mut self,
        number: NodeNumber,
        rack: &RackName,
        macs: &[Mac],
        seen: Seen,
    ) -> Result<Outcome, StateError> {
        let node = self
            .nodes
            .get_mut(&number)
            .ok_or(StateError::NodeNotFound(number))?;
        own_rack(node, rack, macs)?;
        for mac in macs {
            if !node.macs.contains(mac) && node.macs.len() < crate::MAX_MACS_PER_NODE {
                node.macs.push(*mac);
                self.macs.insert(*mac, number);
            }
        }
        if seen.uuid.is_some() {
            node.uuid = seen.uuid;
        }
        if !seen.inventory.is_empty() {
            node.inventory = seen.inventory;
        }
        let node = node.clone();
        self.pending
            .retain(|_, p| !p.macs.iter().any(|m| macs.contains(m)));
        self.revision += 1;
        Ok(Outcome::Node(node))
    }

    fn replace_node(&mut self, number: NodeNumber, macs: Vec<Mac>) -> Result<Outcome, StateError> {
        if macs.is_empty() || macs.len() > crate::MAX_MACS_PER_NODE {
            return Err(StateError::BadMacCount {
                got: macs.len(),
                max: crate::MAX_MACS_PER_NODE,
            });
        }
        if let Some(bad) = macs.iter().find(|m| !m.is_unicast()) {
            return Err(StateError::NotUnicast(*bad));
        }
        if !self.nodes.contains_key(&number) {
            return Err(StateError::NodeNotFound(number));
        }
        for m in &macs {
            if let Some(owner) = self.macs.get(m)
                && *owner != number
            {
                return Err(StateError::MacTaken {
                    mac: *m,
                    node: *owner,
                });
            }
        }
        let node = self
            .nodes
            .get_mut(&number)
            .ok_or(StateError::NodeNotFound(number))?;
        for m in &node.macs {
            self.macs.remove(m);
        }
        let mut unique = Vec::new();
        for m in macs {
            if !unique.contains(&m) {
                unique.push(m);
            }
        }
        for m in &unique {
            self.macs.insert(*m, number);
        }
        node.macs = unique;
        node.uuid = None;
        node.inventory.clear();
        node.retired = false;
        let node = node.clone();
        self.pending
            .retain(|_, p| !p.macs.iter().any(|m| node.macs.contains(m)));
        self.revision += 1;
        Ok(Outcome::Node(node))
    }

    fn retire_node(&mut self, number: NodeNumber) -> Result<Outcome, StateError> {
        let node = self
            .nodes
            .get_mut(&number)
            .ok_or(StateError::NodeNotFound(number))?;
        if node.retired {
            return Ok(Outcome::Node(node.clone()));
        }
        for m in &node.macs {
            self.macs.remove(m);
        }
        node.macs.clear();
        node.retired = true;
        let node = node.clone();
        self.revision += 1;
        Ok(Outcome::Node(node))
    }

    /// Machines held for manual acceptance.
    pub fn pending(&self) -> impl Iterator<Item = &PendingMachine> {
        self.pending.values()
    }

    /// The image machines without a number boot.
    pub fn discovery_image(&self) -> Option<&ImageName> {
        self.discovery_image
            .as_ref()
            .map(|d| self.tags.get(d).unwrap_or(d))
    }

    /// Lowest number not in use, starting at 1.
    fn lowest_free_number(&self) -> NodeNumber {
        let contiguous = self
            .nodes
            .keys()
            .next_back()
            .is_none_or(|last| last.0 as usize == self.nodes.len());
        if contiguous {
            return NodeNumber(self.nodes.len() as u32 + 1);
        }
        let mut expected = 1u32;
        for n in self.nodes.keys() {
            if n.0 != expected {
                break;
            }
            expected += 1;
        }
        NodeNumber(expected)
    }

    fn tag_image(&mut self, tag: ImageName, image: ImageName) -> Result<Outcome, StateError> {
        if self.images.contains_key(&tag) {
            return Err(StateError::InvalidTag {
                tag,
                reason: "an image has this name (images are immutable; a tag must be a new name)"
                    .into(),
            });
        }
        if self.tags.contains_key(&image) {
            return Err(StateError::InvalidTag {
                tag,
                reason: format!("'{image}' is itself a tag; point at an image"),
            });
        }
        if !self.images.contains_key(&image) {
            return Err(StateError::ImageNotFound(image));
        }
        let previous = self.tags.insert(tag, image);
        self.revision += 1;
        Ok(Outcome::Tagged {
            previous,
            revision: self.revision,
        })
    }

    /// Every tag and the image it points at.
    pub fn tags(&self) -> &BTreeMap<ImageName, ImageName> {
        &self.tags
    }

    /// An image name with a tag followed.
    fn resolve(&self, name: &ImageName) -> ImageName {
        self.tags.get(name).unwrap_or(name).clone()
    }

    fn commit_image(&mut self, image: Image) -> Result<Outcome, StateError> {
        if self.tags.contains_key(&image.name) {
            return Err(StateError::InvalidTag {
                tag: image.name.clone(),
                reason: "this name is a tag; push the image under its own name and move the tag (rackboot image tag)".into(),
            });
        }
        if let Some(existing) = self.images.get(&image.name) {
            if existing.same_content(&image) {
                return Ok(Outcome::Image(Box::new(existing.clone())));
            }
            return Err(StateError::ImageExists {
                name: image.name.clone(),
                existing: existing.manifest_hash().to_string(),
            });
        }
        self.images.insert(image.name.clone(), image.clone());
        self.revision += 1;
        Ok(Outcome::Image(Box::new(image)))
    }

    fn assign(&mut self, target: AssignTarget, image: ImageName) -> Result<Outcome, StateError> {
        if !self.images.contains_key(&image) && !self.tags.contains_key(&image) {
            return Err(StateError::ImageNotFound(image));
        }
        match target {
            AssignTarget::Default => self.default_image = Some(image),
            AssignTarget::Rack(rack) => {
                if !self.racks.contains_key(&rack) {
                    return Err(StateError::RackNotFound(rack));
                }
                self.rack_images.insert(rack, image);
            }
            AssignTarget::Node(n) => {
                if !self.nodes.contains_key(&n) {
                    return Err(StateError::NodeNotFound(n));
                }
                self.node_images.insert(n, image);
            }
            AssignTarget::Discovery => self.discovery_image = Some(image),
        }
        self.revision += 1;
        Ok(Outcome::Assigned {
            revision: self.revision,
        })
    }

    fn set_meta(&mut self, key: String, value: Option<String>) -> Result<Outcome, StateError> {
        crate::validate_meta(&key, value.as_deref()).map_err(|reason| StateError::InvalidMeta {
            key: key.clone(),
            reason,
        })?;
        let changed = match value {
            Some(v) => {
                if self.meta.len() >= crate::MAX_META_KEYS && !self.meta.contains_key(&key) {
                    return Err(StateError::InvalidMeta {
                        key,
                        reason: format!("at most {} keys", crate::MAX_META_KEYS),
                    });
                }
                self.meta.insert(key, v.clone()) != Some(v)
            }
            None => self.meta.remove(&key).is_some(),
        };
        if changed {
            self.revision += 1;
        }
        Ok(Outcome::Meta {
            revision: self.revision,
        })
    }

    /// Site key-values.
    pub fn meta(&self) -> &BTreeMap<String, String> {
        &self.meta
    }

    /// Is `node` a node of `rack`? (Agents only report for their own rack.)
    fn in_rack(&self, node: NodeNumber, rack: &RackName) -> bool {
        self.nodes.get(&node).is_some_and(|n| &n.rack == rack)
    }

    fn record_sessions(&mut self, rack: &RackName, sessions: Vec<BootSession>) -> Outcome {
        let mut kept = 0;
        for s in sessions {
            if self.in_rack(s.node, rack) {
                self.boot.record_session(s);
                kept += 1;
            }
        }
        Outcome::Recorded { kept }
    }

    fn append_logs(
        &mut self,
        rack: &RackName,
        lines: Vec<(NodeNumber, LogLine)>,
        dropped: u64,
    ) -> Outcome {
        self.boot.dropped_lines = self.boot.dropped_lines.saturating_add(dropped);
        let mut kept = 0;
        for (node, line) in lines {
            if self.in_rack(node, rack) {
                self.boot.append(node, line);
                kept += 1;
            }
        }
        Outcome::Recorded { kept }
    }

    fn record_rack_cache(
        &mut self,
        rack: RackName,
        mut report: RackCacheReport,
    ) -> Result<Outcome, StateError> {
        if !self.racks.contains_key(&rack) {
            return Err(StateError::RackNotFound(rack));
        }
        // Validated before proposing; bounded here too so a log written by
        // another version never grows the state without limit.
        report.bound();
        let kept = report.held.len() as u64;
        self.rack_caches.insert(rack, report);
        Ok(Outcome::Recorded { kept })
    }
}

mod queries;

#[cfg(test)]
mod tests;
