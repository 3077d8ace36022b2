//! Fail points around every persistence step, for crash tests.
//!
//! [`Core`](super::Core) calls [`Faults::hit`] at each [`Site`]. In a normal
//! build the process uses [`NoFaults`]. Built with the `failpoints` feature,
//! [`from_env`] reads:
//!
//! - `RACKBOOT_FAILPOINT=<site>`: abort the process (as a crash would: no
//!   destructors, no flush) when the site is reached;
//! - `RACKBOOT_FAILPOINT_ARM=<file>` (optional): only once that file exists;
//! - `RACKBOOT_FAILPOINT_SKIP=<n>` (optional): let `n` armed hits pass first;
//! - `RACKBOOT_FAILPOINT_DELAY_MS=<ms>` (optional): stall this long before
//!   aborting (a slow disk, then power loss), so that whatever the replica
//!   already handed to its peer senders does get out.
//!
//! The simulation test implements [`Faults`] itself and "crashes" a replica by
//! returning `true`, which makes the `Core` stop with
//! [`ReplicaFatal::Crashed`](super::ReplicaFatal::Crashed) mid-`Ready`.

use std::fmt;

/// A point in the persistence path where a crash can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Site {
    /// Before new log entries are written (with or without a HardState).
    Append,
    /// After entries are durable, before the messages that waited for them go.
    AppendDone,
    /// Before a HardState-only change (term, vote, commit) is written.
    HardState,
    /// Before a snapshot of the applied state is saved (and the log compacted).
    SnapshotSave,
    /// After a snapshot was saved.
    SnapshotSaved,
    /// Before a snapshot received from the leader is installed.
    SnapshotInstall,
    /// Before a committed entry is applied to the state machine.
    Apply,
    /// After a committed entry was applied.
    ApplyDone,
}

impl Site {
    /// Every site.
    pub const ALL: [Site; 8] = [
        Site::Append,
        Site::AppendDone,
        Site::HardState,
        Site::SnapshotSave,
        Site::SnapshotSaved,
        Site::SnapshotInstall,
        Site::Apply,
        Site::ApplyDone,
    ];

    /// The site's name as used in `RACKBOOT_FAILPOINT`.
    pub fn name(self) -> &'static str {
        match self {
            Site::Append => "append",
            Site::AppendDone => "append-done",
            Site::HardState => "hard-state",
            Site::SnapshotSave => "snapshot-save",
            Site::SnapshotSaved => "snapshot-saved",
            Site::SnapshotInstall => "snapshot-install",
            Site::Apply => "apply",
            Site::ApplyDone => "apply-done",
        }
    }

    /// Parse a site name.
    pub fn parse(name: &str) -> Option<Site> {
        Site::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Decides whether to crash at a site.
pub trait Faults: Send {
    /// Called at `site`; `true` means "crash here".
    fn hit(&mut self, site: Site) -> bool;
}

/// Never crashes.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFaults;

impl Faults for NoFaults {
    fn hit(&mut self, _site: Site) -> bool {
        false
    }
}

/// The fail points configured by the environment (see the module docs).
/// Without the `failpoints` feature this is always [`NoFaults`].
pub fn from_env() -> Box<dyn Faults> {
    #[cfg(feature = "failpoints")]
    {
        if let Some(f) = env::EnvFaults::from_env() {
            return Box::new(f);
        }
    }
    #[cfg(not(feature = "failpoints"))]
    {
        if std::env::var_os("RACKBOOT_FAILPOINT").is_some() {
            tracing::warn!("RACKBOOT_FAILPOINT ignored: built without the `failpoints` feature");
        }
    }
    Box::new(NoFaults)
}

#[cfg(feature = "failpoints")]
mod env {
    use std::path::PathBuf;

    use super::{Faults, Site};

    pub struct EnvFaults {
        site: Site,
        arm: Option<PathBuf>,
        skip: u64,
        delay_ms: u64,
    }

    impl EnvFaults {
        pub fn from_env() -> Option<Self> {
            let name = std::env::var("RACKBOOT_FAILPOINT").ok()?;
            let Some(site) = Site::parse(&name) else {
                tracing::error!(site = %name, "unknown RACKBOOT_FAILPOINT site; ignored");
                return None;
            };
            let arm = std::env::var_os("RACKBOOT_FAILPOINT_ARM").map(PathBuf::from);
            let skip = std::env::var("RACKBOOT_FAILPOINT_SKIP")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let delay_ms = std::env::var("RACKBOOT_FAILPOINT_DELAY_MS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            tracing::warn!(%site, ?arm, skip, delay_ms, "fail point configured");
            Some(EnvFaults {
                site,
                arm,
                skip,
                delay_ms,
            })
        }
    }

    impl Faults for EnvFaults {
        fn hit(&mut self, site: Site) -> bool {
            if site != self.site {
                return false;
            }
            if let Some(arm) = &self.arm
                && !arm.exists()
            {
                return false;
            }
            if self.skip > 0 {
                self.skip -= 1;
                return false;
            }
            eprintln!("rackboot-coordinator: fail point {site} reached; aborting");
            // The replica stalls here while the runtime's other threads still
            // run the peer senders (`block_in_place` hands this worker's queued
            // tasks to another thread first).
            let stall = || std::thread::sleep(std::time::Duration::from_millis(self.delay_ms));
            match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                    tokio::task::block_in_place(stall)
                }
                _ => stall(),
            }
            std::process::abort();
        }
    }
}
