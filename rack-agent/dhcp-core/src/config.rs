//! Runtime configuration of the decision core, and the node directory it
//! reads bindings from. These are validated runtime types; the shell owns the
//! serde wire layer and converts into them.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use crate::mac::Mac;

/// What the server hands out on its rack subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// This server's address: option 54, `siaddr` (next-server) and the text
    /// of option 66.
    pub server_ip: Ipv4Addr,
    /// Option 1.
    pub subnet_mask: Ipv4Addr,
    /// Option 3, if the subnet has a router.
    pub router: Option<Ipv4Addr>,
    /// Option 6; empty means none.
    pub dns: Vec<Ipv4Addr>,
    /// Option 15.
    pub domain: Option<String>,
    /// Option 7: where nodes send syslog.
    pub log_server: Option<Ipv4Addr>,
    /// Option 51. `u32::MAX` means infinite (then no T1/T2 are sent).
    pub lease_secs: u32,
    /// Boot file policy inputs.
    pub boot: BootFiles,
}

/// Boot file names per client kind. Templates may contain `{mac}`, replaced
/// by the client's hyphenated lowercase MAC (`aa-bb-cc-dd-ee-ff`). An empty
/// string means "not offered".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    /// PXE arch 0 (x86 BIOS), e.g. `undionly.kpxe`.
    pub bios: String,
    /// PXE arch 7 and 9 (x64 UEFI), e.g. `ipxe.efi`.
    pub uefi_x64: String,
    /// PXE arch 11 (arm64 UEFI), e.g. `ipxe-arm64.efi`.
    pub uefi_arm64: String,
    /// Template for clients whose user class is `iPXE`, e.g.
    /// `ipxe/{mac}.ipxe` (fetched over TFTP from next-server) or
    /// `http://10.0.0.1:8080/ipxe/{mac}.ipxe`.
    pub ipxe_script: String,
    /// Template of the boot URI for vendor class `HTTPClient` (UEFI HTTP
    /// Boot). `None`: such clients get an address but no boot file.
    pub http_boot_uri: Option<String>,
    /// Boot file offered to U-Boot (vendor class `U-Boot…`), e.g.
    /// `boot.scr.uimg`: the script image U-Boot's distro network boot asks
    /// for by that name, served per node by the agent.
    pub uboot_script: String,
}

/// What the directory knows about one accepted node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBinding {
    /// Persistent node number.
    pub number: u32,
    /// The node's fixed address (follows from the number).
    pub addr: Ipv4Addr,
    /// The node's name, sent as option 12 (omitted when empty).
    pub hostname: String,
}

/// The agent's in-memory view of its rack's nodes, keyed by MAC. Must answer
/// from memory: it is called on the packet path.
pub trait NodeDirectory {
    /// The binding for `mac`, if the node is known.
    fn lookup(&self, mac: &Mac) -> Option<NodeBinding>;
}

impl NodeDirectory for HashMap<Mac, NodeBinding> {
    fn lookup(&self, mac: &Mac) -> Option<NodeBinding> {
        self.get(mac).cloned()
    }
}

impl NodeDirectory for BTreeMap<Mac, NodeBinding> {
    fn lookup(&self, mac: &Mac) -> Option<NodeBinding> {
        self.get(mac).cloned()
    }
}
