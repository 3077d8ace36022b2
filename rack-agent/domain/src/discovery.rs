//! Machines the agent asks the coordinator to number: one it saw but does
//! not know (first-seen policy), or a probe report of all its MACs.

use rackboot_dhcp_core::Mac;

/// A machine to report to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    /// Its MAC (the one that asked).
    pub mac: Mac,
    /// Every MAC it reported (probe), the asking one first; empty otherwise.
    pub macs: Vec<Mac>,
    /// Reported UUID (hex), recorded only.
    pub uuid: Option<String>,
    /// Probe inventory, recorded only.
    pub inventory: Vec<(String, String)>,
    /// Hold for manual acceptance instead of numbering.
    pub hold: bool,
}

impl From<rackboot_dhcp_core::Report> for Unknown {
    fn from(r: rackboot_dhcp_core::Report) -> Self {
        Unknown {
            mac: r.mac,
            macs: r.macs,
            uuid: r
                .uuid
                .map(|u| u.iter().map(|b| format!("{b:02x}")).collect()),
            inventory: r.inventory,
            hold: r.hold,
        }
    }
}
